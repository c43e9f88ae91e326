package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// Two proxies with a global rate limit share one budget through Redis: a burst of 3 lets
// exactly 3 of 8 requests through, whichever proxy they reach.
func TestProxyGlobalRateLimitSharedThroughRedis(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	// The forward's name is the Redis key; a fresh one per run keeps runs apart.
	name := fmt.Sprintf("global-%d", rand.Uint64())
	cfg := func(addr string) string {
		return renderConfig(t, `
http_server:
  forwards:
    - name: {{.Name}}
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
      ratelimit: {enabled: true, per_second: 1, burst: 3, scope: global}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - {name: g, upstreams: [{name: up}]}
`, map[string]any{"Name": name, "Port": harness.Port(t, addr), "URL": mocks["up"].URL})
	}
	var urls []string
	for range 2 {
		addr := harness.FreeAddr(t)
		startProxy(t, cfg(addr), "LLMPROXY_REDIS_URL=redis://127.0.0.1:6379/0")
		urls = append(urls, "http://"+addr+"/v1/chat/completions")
	}
	passed, limited := 0, 0
	for i := range 8 {
		a := mustSend(t, http.MethodPost, urls[i%2], chat("gpt-4o-mini"))
		switch a.Status {
		case http.StatusOK:
			passed++
		case http.StatusTooManyRequests:
			limited++
			if a.Header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		default:
			t.Fatalf("request %d: status %d: %s", i, a.Status, a.Body)
		}
	}
	if passed != 3 || limited != 5 {
		t.Errorf("two proxies sharing a global burst of 3: %d passed, %d limited; want 3 and 5 (a per-proxy limit would pass 6)", passed, limited)
	}
}
