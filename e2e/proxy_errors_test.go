package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const errorsConfig = `
http_server:
  forwards:
    - name: errors
      address: 127.0.0.1
      port: {{.Port}}
      default_group: ok
      max_body_bytes: 1024
      routing:
        - {path: "/unreachable/*", target_group: unreachable}
        - {path: "/timeout/*", target_group: timeout}
        - {path: "/down/*", target_group: down}
    - name: limited
      address: 127.0.0.1
      port: {{.LimitedPort}}
      default_group: ok
      ratelimit: {enabled: true, per_second: 1, burst: 1}
upstreams:
  - {name: up, url: "{{.URL}}"}
  - {name: closed, url: "http://{{.Closed}}"}
  - name: tripping
    url: "http://{{.Closed}}"
    breaker: {threshold: 0.5, min_requests: 1, cooldown: 60}
upstream_groups:
  - name: ok
    upstreams: [{name: up}]
  - name: unreachable
    upstreams: [{name: closed}]
  - name: timeout
    upstreams: [{name: up}]
    http_client:
      stream: false
      timeout: {request: 1}
  - name: down
    upstreams: [{name: tripping}]
`

// TestProxyErrors checks every error the proxy makes itself: status and OpenAI-style body.
func TestProxyErrors(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "errs")["errs"]
	addr, limited := harness.FreeAddr(t), harness.FreeAddr(t)
	startProxy(t, renderConfig(t, errorsConfig, map[string]any{
		"Port": harness.Port(t, addr), "LimitedPort": harness.Port(t, limited),
		"URL": m.URL, "Closed": harness.FreeAddr(t),
	}))
	base := "http://" + addr
	body := chat("gpt-4o")

	t.Run("502 unreachable upstream", func(t *testing.T) {
		a := mustSend(t, "POST", base+"/unreachable/v1/chat/completions", body)
		if a.Status != http.StatusBadGateway {
			t.Fatalf("status %d %s; want 502", a.Status, a.Body)
		}
		a.proxyError(t)
	})

	t.Run("504 upstream timeout", func(t *testing.T) {
		start := time.Now()
		a := mustSend(t, "POST", base+"/timeout/v1/chat/completions", body, "X-Mock-Latency", "3s")
		if a.Status != http.StatusGatewayTimeout {
			t.Fatalf("status %d %s; want 504", a.Status, a.Body)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("504 after %s; want about the 1 s request timeout", d)
		}
		a.proxyError(t)
	})

	t.Run("503 no healthy upstream", func(t *testing.T) {
		// The first failure opens the breaker (min_requests 1); the next request finds no
		// healthy member.
		first := mustSend(t, "POST", base+"/down/v1/chat/completions", body)
		if first.Status != http.StatusBadGateway {
			t.Errorf("first request: status %d; want 502", first.Status)
		}
		start := time.Now()
		a := mustSend(t, "POST", base+"/down/v1/chat/completions", body)
		if a.Status != http.StatusServiceUnavailable {
			t.Fatalf("status %d %s; want 503", a.Status, a.Body)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("503 took %s; want it at once", d)
		}
		a.proxyError(t)
	})

	t.Run("413 body too large", func(t *testing.T) {
		big := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("x", 4096) + `"}]}`
		before := m.stats(t).Requests
		a := mustSend(t, "POST", base+"/v1/chat/completions", big)
		if a.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d %s; want 413", a.Status, a.Body)
		}
		a.proxyError(t)
		if got := m.stats(t).Requests; got != before {
			t.Errorf("the upstream received the oversized request")
		}
		if ok := mustSend(t, "POST", base+"/v1/chat/completions", body); ok.Status != http.StatusOK {
			t.Errorf("small body after 413: status %d", ok.Status)
		}
	})

	t.Run("429 rate limited", func(t *testing.T) {
		var got []answer
		for range 3 {
			got = append(got, mustSend(t, "POST", "http://"+limited+"/v1/chat/completions", body))
		}
		if got[0].Status != http.StatusOK {
			t.Fatalf("first request: status %d", got[0].Status)
		}
		a := got[len(got)-1]
		if a.Status != http.StatusTooManyRequests {
			t.Fatalf("third request at once with burst 1: status %d; want 429", a.Status)
		}
		if s, err := strconv.Atoi(a.Header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("Retry-After = %q; want whole seconds ≥ 1", a.Header.Get("Retry-After"))
		}
		a.proxyError(t)
	})
}
