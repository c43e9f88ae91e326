package e2e

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// A ratelimit block limits by being there, as LLMProxy's reference says; only an explicit
// enabled: false turns it off.
func TestProxyRateLimitBlockEnablesIt(t *testing.T) {
	t.Parallel()
	up := startMocks(t, nil, "up")["up"]
	on, off := harness.FreeAddr(t), harness.FreeAddr(t)
	startProxy(t, renderConfig(t, `
http_server:
  forwards:
    - name: on
      address: 127.0.0.1
      port: {{.On}}
      default_group: g
      ratelimit: {per_second: 1, burst: 2}
    - name: off
      address: 127.0.0.1
      port: {{.Off}}
      default_group: g
      ratelimit: {enabled: false, per_second: 1, burst: 2}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - {name: g, upstreams: [{name: up}]}
`, map[string]any{"On": harness.Port(t, on), "Off": harness.Port(t, off), "URL": up.URL}))
	for _, tc := range []struct {
		addr    string
		passed  int
		comment string
	}{
		{on, 2, "a block without enabled limits"},
		{off, 5, "enabled: false turns the limit off"},
	} {
		passed := 0
		for range 5 {
			a := mustSend(t, http.MethodPost, "http://"+tc.addr+"/v1/chat/completions", chat("m"))
			if a.Status == http.StatusOK {
				passed++
			} else if a.Status != http.StatusTooManyRequests {
				t.Fatalf("%s: status %d %s", tc.addr, a.Status, a.Body)
			}
		}
		if passed != tc.passed {
			t.Errorf("%s: %d of 5 passed with per_second 1, burst 2; want %d", tc.comment, passed, tc.passed)
		}
	}
}

// http_server.admin.timeout.connect is the admin listener's time to receive a request's
// headers, as it is for forwards: a client that stalls in its headers is cut off then.
func TestProxyAdminHeaderTimeout(t *testing.T) {
	t.Parallel()
	up := startMocks(t, nil, "up")["up"]
	admin := harness.FreeAddr(t)
	startProxyAdmin(t, renderConfig(t, `
http_server:
  admin: {address: 127.0.0.1, port: {{.Admin}}, timeout: {connect: 1}}
  forwards:
    - {name: f, address: 127.0.0.1, port: {{.Port}}, default_group: g}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - {name: g, upstreams: [{name: up}]}
`, map[string]any{"Admin": harness.Port(t, admin), "Port": harness.FreePort(t), "URL": up.URL}), admin)

	c, err := net.Dial("tcp", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n"); err != nil { // and no end of headers
		t.Fatal(err)
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(6 * time.Second)) // the default would be 10 s
	_, err = io.ReadAll(c)
	took := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the admin listener still held a connection stalled in its headers after %s; want it closed after timeout.connect (1s)", took.Round(time.Millisecond))
	}
	if took > 4*time.Second {
		t.Errorf("connection stalled in its headers closed after %s; want about 1s", took.Round(time.Millisecond))
	}
}
