package e2e

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const rateLimitConfig = `
http_server:
  forwards:
    - name: limited
      address: 127.0.0.1
      port: {{.Port}}
      default_group: main
      ratelimit: {enabled: true, per_second: 5, burst: 2}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - name: main
    upstreams: [{name: up}]
`

// TestProxyRateLimit checks the token bucket per client IP: with per_second 5 and burst 2,
// a burst of 10 gets exactly 2 through, then about 5 a second pass.
func TestProxyRateLimit(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "rl")["rl"]
	addr := harness.FreeAddr(t)
	startProxy(t, renderConfig(t, rateLimitConfig, map[string]any{"Port": harness.Port(t, addr), "URL": m.URL}))
	url := "http://" + addr + "/v1/chat/completions"
	body := chat("gpt-4o")

	statuses := make([]int, 10)
	retryAfter := make([]string, 10)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", url, stringsReader(body))
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i], retryAfter[i] = resp.StatusCode, resp.Header.Get("Retry-After")
		}()
	}
	close(start)
	wg.Wait()
	ok, limited := 0, 0
	for i, s := range statuses {
		switch s {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
			if n, err := strconv.Atoi(retryAfter[i]); err != nil || n < 1 {
				t.Errorf("429 with Retry-After %q; want whole seconds ≥ 1", retryAfter[i])
			}
		}
	}
	if ok != 2 || limited != 8 {
		t.Fatalf("burst of 10: %d OK, %d limited (%v); want exactly 2 and 8", ok, limited, statuses)
	}

	// Then a steady stream for 2 s, one request every 20 ms: about 5 a second pass.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	passed, sent := 0, 0
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			a, err := send(ctx, "POST", url, body)
			if err != nil {
				continue // the deadline ended the last request
			}
			sent++
			if a.Status == http.StatusOK {
				passed++
			} else if a.Status != http.StatusTooManyRequests {
				t.Fatalf("status %d: %s", a.Status, a.Body)
			}
		}
	}
	if sent < 40 {
		t.Fatalf("only %d requests sent in 2 s", sent)
	}
	if passed < 7 || passed > 13 {
		t.Errorf("over 2 s at 50 requests a second, %d of %d passed; want about 10 (5 a second)", passed, sent)
	}
}
