package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// An upstream that answers 429 is not a fast, healthy one: response_aware and least_busy
// count a 429 as a failure when they score members, and skip an upstream for as long as
// its Retry-After says, so a throttling upstream does not attract the traffic it refuses.
func TestProxyThrottlingUpstreamDoesNotAttractTraffic(t *testing.T) {
	t.Parallel()
	limited := resStartMock(t, "limited") // 429 with Retry-After: 30
	limited.behave(`{"status":429,"retry_after":"30"}`)
	bare := resStartMock(t, "bare") // 429 without Retry-After
	bare.behave(`{"status":429}`)
	fine := resStartMock(t, "fine")
	// A little slower than a 429: scoring that took a 429 for a success would prefer the
	// throttling upstream.
	fine.behave(`{"latency":"3ms"}`)
	port := harness.FreePort(t)
	resStartProxy(t, `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: aware
      routing:
        - {path: "/busy/*", target_group: busy}
        - {path: "/bare/*", target_group: bare}
upstreams:
  - {name: limited-a, url: "{{.Limited}}"}
  - {name: limited-b, url: "{{.Limited}}"}
  - {name: bare, url: "{{.Bare}}"}
  - {name: fine-a, url: "{{.Fine}}"}
  - {name: fine-b, url: "{{.Fine}}"}
  - {name: fine-c, url: "{{.Fine}}"}
upstream_groups:
  - name: aware
    balance: {strategy: response_aware}
    upstreams: [{name: limited-a}, {name: fine-a}]
  - name: busy
    balance: {strategy: least_busy}
    upstreams: [{name: limited-b}, {name: fine-b}]
  - name: bare
    balance: {strategy: response_aware}
    upstreams: [{name: bare}, {name: fine-c}]
`, map[string]any{"Port": port, "Limited": limited.url, "Bare": bare.url, "Fine": fine.url})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx := context.Background()
	for _, tc := range []struct {
		prefix, marker string
		throttler      *resMock
		n, most        int
	}{
		// After its first 429 the upstream is skipped for 30 s: at most one request.
		{"", "aware", limited, 20, 1},
		{"/busy", "busy", limited, 20, 1},
		// No Retry-After: scoring alone moves traffic away once a few 429s have brought
		// its success rate down; then only response_aware's occasional re-measuring (one
		// pick in 16) reaches it.
		{"/bare", "bare", bare, 40, 16},
	} {
		statuses := map[int]int{}
		for i := range tc.n {
			a := resSend(ctx, resClient, base+tc.prefix+resChatPath, resChat(fmt.Sprintf("%s %d", tc.marker, i), false))
			statuses[a.Status]++
		}
		got := tc.throttler.countBodies(tc.marker)
		if got > tc.most {
			t.Errorf("group %s: the throttling upstream received %d of %d requests; want at most %d (answers by status: %v)", tc.marker, got, tc.n, tc.most, statuses)
		}
		if statuses[http.StatusOK] < tc.n-tc.most {
			t.Errorf("group %s: %v; want at least %d answered 200 by the healthy member", tc.marker, statuses, tc.n-tc.most)
		}
	}
}
