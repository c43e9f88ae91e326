package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// rawExchange writes request, as is, on a new connection to addr and reads one answer.
func rawExchange(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	c := rawDial(t, addr, 10*time.Second)
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read answer to %q: %v", strings.SplitN(request, "\r\n", 2)[0], err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Request lines no LLM API uses are refused by the proxy and never reach an upstream: a
// path with dot segments (plain or percent-encoded, which an upstream that normalises
// would resolve out of the url's path prefix) or control characters answers 400, a method
// outside GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS answers 405 with Allow, and so do
// CONNECT and the HTTP/2 preface's PRI *.
func TestProxyRefusesPathTraversalAndForeignMethods(t *testing.T) {
	t.Parallel()
	up := resStartMock(t, "up")
	port := harness.FreePort(t)
	resStartProxy(t, `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
upstreams:
  - {name: up, url: "{{.URL}}/prefix"}
upstream_groups:
  - {name: g, upstreams: [{name: up}]}
`, map[string]any{"Port": port, "URL": up.url})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	body := resChat("x", false)
	post := func(target string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", target, addr, len(body), body)
	}
	tests := []struct {
		name, request string
		status        int
	}{
		{"dot-dot", post("/v1/../../admin/chat/completions"), http.StatusBadRequest},
		{"encoded dot-dot", post("/v1/%2e%2e/%2E%2E/admin"), http.StatusBadRequest},
		{"mixed encoding", post("/v1/.%2e/admin"), http.StatusBadRequest},
		{"encoded slash around dot-dot", post("/v1/..%2fadmin"), http.StatusBadRequest},
		{"backslash", post("/v1/..%5cadmin"), http.StatusBadRequest},
		{"dot segment", post("/v1/./chat/completions"), http.StatusBadRequest},
		{"trailing dot-dot", post("/v1/chat/.."), http.StatusBadRequest},
		{"NUL", post("/v1/chat%00/completions"), http.StatusBadRequest},
		{"control character", post("/v1/chat%0d%0a/completions"), http.StatusBadRequest},
		{"CONNECT", "CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nConnection: close\r\n\r\n", http.StatusMethodNotAllowed},
		{"PRI", "PRI * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", http.StatusMethodNotAllowed},
		{"TRACE", "TRACE /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", http.StatusMethodNotAllowed},
		{"PROPFIND", "PROPFIND /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := rawExchange(t, addr, tc.request)
			a := resAnswer{Status: resp.StatusCode, Header: resp.Header, Body: []byte(b)}
			resCheckProxyError(t, a, tc.status)
			if tc.status == http.StatusMethodNotAllowed {
				if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "POST") || strings.Contains(allow, "CONNECT") {
					t.Errorf("405 with Allow %q; want the methods the proxy forwards", allow)
				}
			}
		})
	}
	if n := up.count(); n != 0 {
		for _, r := range up.records() {
			t.Logf("upstream received %s %s", r.Method, r.Path)
		}
		t.Errorf("upstream received %d requests; want none", n)
	}
	// What LLM APIs send still passes, percent-encoded characters included.
	for _, target := range []string{"/v1/chat/completions", "/v1/chat/completions?api-version=2024-10-21", "/v1/models/org%2Fmodel..v2/chat/completions"} {
		resp, b := rawExchange(t, addr, post(target))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST %s: %d %s; want 200", target, resp.StatusCode, b)
		}
	}
}
