package e2e

import (
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const requestConfig = `
http_server:
  forwards:
    - name: shape
      address: 127.0.0.1
      port: {{.Port}}
      default_group: bearer
      routing:
        - {path: "/basic/*", target_group: basic}
        - {path: "/plain/*", target_group: plain}
upstreams:
  - name: up-bearer
    url: "{{.URL}}/base/prefix"
    auth: {type: bearer, token: sk-upstream-secret}
    headers:
      - {op: insert, key: X-Inserted, value: from-proxy}
      - {op: insert, key: X-Kept, value: from-proxy}
      - {op: replace, key: X-Replaced, value: from-proxy}
      - {op: remove, key: X-Removed}
  - name: up-basic
    url: "{{.URL}}/"
    auth: {type: basic, username: alice, password: s3cret}
  - name: up-plain
    url: "{{.URL}}"
upstream_groups:
  - name: bearer
    upstreams: [{name: up-bearer}]
    http_client: {agent: test-agent/1.0}
  - name: basic
    upstreams: [{name: up-basic}]
  - name: plain
    upstreams: [{name: up-plain}]
`

// TestProxyUpstreamRequest checks what the upstream receives: URL joining, auth injection,
// header operations, forwarded headers, hop-by-hop stripping, request id, user agent; and
// the admin endpoints of the same proxy (/config redacts the bearer token, /metrics counts).
func TestProxyUpstreamRequest(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "shape")["shape"]
	addr := harness.FreeAddr(t)
	p := startProxy(t, renderConfig(t, requestConfig, map[string]any{"Port": harness.Port(t, addr), "URL": m.URL}))
	base := "http://" + addr
	body := chat("gpt-4o")

	// last sends a request and returns the one record it produced at the mock.
	last := func(t *testing.T, method, path string, headers ...string) (answer, http.Header, string, string) {
		t.Helper()
		before := m.stats(t).LastSeq
		a := mustSend(t, method, base+path, body, headers...)
		recs, err := m.Requests(t.Context(), before)
		if err != nil || len(recs) != 1 {
			t.Fatalf("%s %s: upstream recorded %d requests (%v); want 1", method, path, len(recs), err)
		}
		return a, recs[0].Header, recs[0].Path, recs[0].RawQuery
	}

	t.Run("bearer, header ops, forwarded headers, agent", func(t *testing.T) {
		a, h, path, query := last(t, "POST", "/v1/chat/completions?api-version=2024-06-01&x=a%2Fb",
			"Authorization", "Bearer client-key",
			"X-Kept", "from-client",
			"X-Replaced", "from-client",
			"X-Removed", "from-client",
			"Connection", "X-Hop",
			"X-Hop", "must-not-pass",
			"X-Request-Id", "req-from-client-1",
		)
		if a.Status != http.StatusOK {
			t.Fatalf("status %d: %s", a.Status, a.Body)
		}
		checks := []struct{ what, got, want string }{
			{"path", path, "/base/prefix/v1/chat/completions"},
			{"query", query, "api-version=2024-06-01&x=a%2Fb"},
			{"Authorization", h.Get("Authorization"), "Bearer sk-upstream-secret"},
			{"X-Inserted (insert when absent)", h.Get("X-Inserted"), "from-proxy"},
			{"X-Kept (insert keeps the client's)", h.Get("X-Kept"), "from-client"},
			{"X-Replaced", h.Get("X-Replaced"), "from-proxy"},
			{"X-Removed", h.Get("X-Removed"), ""},
			{"X-Hop (named by Connection)", h.Get("X-Hop"), ""},
			{"X-Forwarded-For", h.Get("X-Forwarded-For"), "127.0.0.1"},
			{"X-Forwarded-Proto", h.Get("X-Forwarded-Proto"), "http"},
			{"X-Request-Id upstream", h.Get("X-Request-Id"), "req-from-client-1"},
			{"X-Request-Id back", a.Header.Get("X-Request-Id"), "req-from-client-1"},
			{"User-Agent", h.Get("User-Agent"), "test-agent/1.0"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %q; want %q", c.what, c.got, c.want)
			}
		}
	})

	t.Run("request id generated", func(t *testing.T) {
		a, h, _, _ := last(t, "POST", "/v1/chat/completions")
		sent, back := h.Get("X-Request-Id"), a.Header.Get("X-Request-Id")
		if sent == "" || sent != back {
			t.Errorf("generated X-Request-Id: upstream got %q, client got %q; want the same non-empty id", sent, back)
		}
		a2, h2, _, _ := last(t, "POST", "/v1/chat/completions")
		if h2.Get("X-Request-Id") == sent || a2.Header.Get("X-Request-Id") == back {
			t.Errorf("two requests got the same generated id %q", sent)
		}
	})

	t.Run("basic auth and a base URL with a trailing slash", func(t *testing.T) {
		_, h, path, query := last(t, "POST", "/basic/v1/embeddings?q=1", "Authorization", "Bearer client-key")
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
		if got := h.Get("Authorization"); got != want {
			t.Errorf("Authorization = %q; want %q", got, want)
		}
		if path != "/basic/v1/embeddings" || query != "q=1" {
			t.Errorf("path, query = %q, %q; want /basic/v1/embeddings, q=1", path, query)
		}
		if ua := h.Get("User-Agent"); ua != "LLMProxy/1.0" {
			t.Errorf("default User-Agent = %q; want LLMProxy/1.0", ua)
		}
	})

	t.Run("auth none passes the client's credential", func(t *testing.T) {
		_, h, _, _ := last(t, "POST", "/plain/v1/chat/completions", "Authorization", "Bearer client-key")
		if got := h.Get("Authorization"); got != "Bearer client-key" {
			t.Errorf("Authorization = %q; want the client's", got)
		}
	})

	t.Run("admin /config redacts secrets", func(t *testing.T) {
		resp, err := http.Get(p.Admin + "/config")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		s := string(b)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/config: %s %s", resp.Status, b)
		}
		for _, secret := range []string{"sk-upstream-secret", "s3cret"} {
			if strings.Contains(s, secret) {
				t.Errorf("/config shows secret %q: %s", secret, b)
			}
		}
		for _, want := range []string{`"revision":"file:`, `"<redacted>"`, `"default_group":"bearer"`, `"up-bearer"`} {
			if !strings.Contains(s, want) {
				t.Errorf("/config lacks %s: %s", want, b)
			}
		}
	})

	t.Run("admin /health /ready /metrics", func(t *testing.T) {
		for _, path := range []string{"/health", "/ready"} {
			a := mustSend(t, "GET", p.Admin+path, "")
			if a.Status != http.StatusOK {
				t.Errorf("%s = %d", path, a.Status)
			}
		}
		a := mustSend(t, "GET", p.Admin+"/metrics", "")
		if a.Status != http.StatusOK || !strings.Contains(string(a.Body), "llmproxy_http_requests_total") {
			t.Errorf("/metrics = %d without llmproxy_http_requests_total", a.Status)
		}
	})
}

// llmproxyStyleConfig is written the way LLMProxy's README writes its files: its keys, its
// quoting and indentation, an upstream url ending in /v1 (its examples) or in the full
// endpoint (its reference), here pointing at a mockllm.
const llmproxyStyleConfig = `
http_server:
    forwards:
        - name: "llm_openai_service"      # Forward service name
          port: {{.Port}}                 # Port LLMProxy listens on
          address: "127.0.0.1"
          default_group: "openai_main_group" # Link to the upstream group defined below
    admin:
        port: {{.AdminPort}}            # Admin port for monitoring
        address: "127.0.0.1"            # Recommended local-only access for security

upstreams:
    - name: "openai_chat_api"           # Upstream service name, e.g., OpenAI
      url: "{{.URL}}"
      auth:
          type: "bearer"                # Authentication type is Bearer Token
          token: "YOUR_OPENAI_API_KEY_HERE"
      headers:
          - op: "insert"
            key: "X-Custom-Proxy-Header"
            value: "LLMProxy-OpenAI-GPT4"
      breaker:
          threshold: 0.5
          cooldown: 30

upstream_groups:
    - name: "openai_main_group"         # Upstream group name
      upstreams:
          - name: "openai_chat_api"       # Reference to the openai_chat_api upstream defined above
            weight: 8
      balance:
          strategy: "weighted_roundrobin"
      http_client:
          agent: "LLMProxy/1.0 (OpenAI-Group)"
          keepalive: 90
          stream: true
          timeout:
              connect: 15
              request: 360
              idle: 90
          retry:
              attempts: 3
              initial: 1000
`

// TestRequestLLMProxyURLSpellings runs the proxy on an LLMProxy-style file with its two
// spellings of the upstream url, base .../v1 and full endpoint: requests reach the
// upstream at the path the client called, never with /v1 twice.
func TestRequestLLMProxyURLSpellings(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "openai")["openai"]
	type call struct{ method, path, body string }
	chatCall := call{"POST", "/v1/chat/completions", chat("gpt-4o")}
	tests := []struct {
		name, url string
		calls     []call // each made on the proxy; the mock must see the same path
	}{
		{"base url ending in /v1", m.URL + "/v1", []call{
			chatCall,
			{"POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`},
			{"GET", "/v1/models", ""},
		}},
		{"full endpoint url", m.URL + "/v1/chat/completions", []call{chatCall}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, admin := harness.FreeAddr(t), harness.FreeAddr(t)
			startProxyAdmin(t, renderConfig(t, llmproxyStyleConfig, map[string]any{
				"Port": harness.Port(t, addr), "AdminPort": harness.Port(t, admin), "URL": tt.url,
			}), admin)
			for _, c := range tt.calls {
				before := m.stats(t).LastSeq
				a := mustSend(t, c.method, "http://"+addr+c.path+"?trace=1", c.body, "Authorization", "Bearer client-key")
				if a.Status != http.StatusOK {
					t.Fatalf("%s %s: status %d: %s", c.method, c.path, a.Status, a.Body)
				}
				recs, err := m.Requests(t.Context(), before)
				if err != nil || len(recs) != 1 {
					t.Fatalf("%s %s: upstream recorded %d requests (%v); want 1", c.method, c.path, len(recs), err)
				}
				rec := recs[0]
				if rec.Path != c.path || rec.RawQuery != "trace=1" {
					t.Errorf("url %s, client calls %s?trace=1: upstream got %s?%s", tt.url, c.path, rec.Path, rec.RawQuery)
				}
				if got := rec.Header.Get("Authorization"); got != "Bearer YOUR_OPENAI_API_KEY_HERE" {
					t.Errorf("Authorization = %q; want the upstream's bearer token", got)
				}
				if got := rec.Header.Get("X-Custom-Proxy-Header"); got != "LLMProxy-OpenAI-GPT4" {
					t.Errorf("X-Custom-Proxy-Header = %q; want the inserted value", got)
				}
			}
		})
	}
}

// The proxy keeps its connections to an upstream alive: one after another, plain answers and
// event streams read to their end all go over the one connection the first request opened.
func TestProxyKeepsUpstreamConnectionsAlive(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "keepalive")["keepalive"]
	addr := harness.FreeAddr(t)
	startProxy(t, renderConfig(t, requestConfig, map[string]any{"Port": harness.Port(t, addr), "URL": m.URL}))
	url := "http://" + addr + "/v1/chat/completions"
	before := m.stats(t).Connections
	for i := range 20 {
		if a := mustSend(t, "POST", url, chat("gpt-4o")); a.Status != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, a.Status, a.Body)
		}
	}
	stream := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	for i := range 5 {
		a := mustSend(t, "POST", url, stream)
		if a.Status != http.StatusOK || !strings.Contains(string(a.Body), "data: [DONE]") {
			t.Fatalf("stream %d: status %d: %s", i, a.Status, a.Body)
		}
	}
	if opened := m.stats(t).Connections - before; opened != 1 {
		t.Fatalf("25 requests one after another opened %d connections to the upstream; want 1", opened)
	}
}
