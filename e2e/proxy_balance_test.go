package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const balanceConfig = `
http_server:
  forwards:
    - name: balance
      address: 127.0.0.1
      port: {{.Port}}
      default_group: rr
      routing:
        - {path: "/rr/*", target_group: rr}
        - {path: "/wrr/*", target_group: wrr}
        - {path: "/random/*", target_group: random}
        - {path: "/failover/*", target_group: failover}
        - {path: "/failover-dead/*", target_group: failover-dead}
        - {path: "/aware/*", target_group: aware}
        - {path: "/busy/*", target_group: busy}
upstreams:
  - {name: b1, url: "{{.B1}}"}
  - {name: b2, url: "{{.B2}}"}
  - {name: b3, url: "{{.B3}}"}
  - {name: fast, url: "{{.Fast}}"}
  - {name: slow, url: "{{.Slow}}"}
  - {name: hold, url: "{{.Hold}}"}
  - name: dead
    url: "{{.Dead}}"
    breaker: {threshold: 0.5, min_requests: 1, cooldown: 60}
upstream_groups:
  - name: rr
    balance: {strategy: roundrobin}
    upstreams: [{name: b1}, {name: b2}, {name: b3}]
  - name: wrr
    balance: {strategy: weighted_roundrobin}
    upstreams: [{name: b1, weight: 1}, {name: b2, weight: 2}, {name: b3, weight: 3}]
  - name: random
    balance: {strategy: random}
    upstreams: [{name: b1}, {name: b2}, {name: b3}]
  - name: failover
    balance: {strategy: failover}
    upstreams: [{name: b2}, {name: b1}, {name: b3}]
  - name: failover-dead
    balance: {strategy: failover}
    upstreams: [{name: dead}, {name: b3}, {name: b1}]
    http_client:
      retry: {attempts: 1, initial: 100, retry_on: [connect_error]}
  - name: aware
    balance: {strategy: response_aware}
    upstreams: [{name: slow}, {name: fast}]
  - name: busy
    balance: {strategy: least_busy}
    upstreams: [{name: hold}, {name: fast}]
`

// TestProxyBalancing checks every strategy's distribution through the proxy, counted by the
// X-Mock-Upstream header of the answers.
func TestProxyBalancing(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, map[string][]string{
		"slow": {"--latency", "40ms"},
		"hold": {"--latency", "3s"},
	}, "b1", "b2", "b3", "fast", "slow", "hold")
	addr := harness.FreeAddr(t)
	startProxy(t, renderConfig(t, balanceConfig, map[string]any{
		"Port": harness.Port(t, addr),
		"B1":   mocks["b1"].URL, "B2": mocks["b2"].URL, "B3": mocks["b3"].URL,
		"Fast": mocks["fast"].URL, "Slow": mocks["slow"].URL, "Hold": mocks["hold"].URL,
		"Dead": "http://" + harness.FreeAddr(t), // nothing listens there
	}))
	base := "http://" + addr
	body := chat("gpt-4o")

	t.Run("roundrobin", func(t *testing.T) {
		var order []string
		for range 12 {
			order = append(order, mustSend(t, "POST", base+"/rr/v1/chat/completions", body).Upstream())
		}
		for i := 3; i < len(order); i++ {
			if order[i] != order[i-3] {
				t.Fatalf("roundrobin order %v does not cycle through the three members", order)
			}
		}
		if order[0] == order[1] || order[1] == order[2] || order[0] == order[2] {
			t.Fatalf("roundrobin order %v: the first three are not three members", order)
		}
	})

	t.Run("weighted_roundrobin", func(t *testing.T) {
		got := countUpstreams(t, 12, 1, "POST", base+"/wrr/v1/chat/completions", body)
		if got["b1"] != 2 || got["b2"] != 4 || got["b3"] != 6 || len(got) != 3 {
			t.Fatalf("weights 1:2:3 over 12 requests gave %v; want b1:2 b2:4 b3:6", got)
		}
	})

	t.Run("random", func(t *testing.T) {
		got := countUpstreams(t, 300, 4, "POST", base+"/random/v1/chat/completions", body)
		for _, n := range []string{"b1", "b2", "b3"} {
			if got[n] < 50 || got[n] > 150 {
				t.Errorf("random over 300 requests gave %v; want each member near 100", got)
				break
			}
		}
		if len(got) != 3 {
			t.Errorf("random: unexpected answers %v", got)
		}
	})

	t.Run("failover", func(t *testing.T) {
		got := countUpstreams(t, 10, 2, "POST", base+"/failover/v1/chat/completions", body)
		if got["b2"] != 10 {
			t.Fatalf("failover [b2 b1 b3] gave %v; want all 10 on b2, the first member", got)
		}
	})

	t.Run("failover skips a dead first member", func(t *testing.T) {
		got := countUpstreams(t, 10, 1, "POST", base+"/failover-dead/v1/chat/completions", body)
		if got["b3"] != 10 {
			t.Fatalf("failover [dead b3 b1] gave %v; want all 10 on b3, the first healthy member", got)
		}
	})

	t.Run("response_aware", func(t *testing.T) {
		got := countUpstreams(t, 40, 1, "POST", base+"/aware/v1/chat/completions", body)
		if got["fast"] < 30 || got["fast"]+got["slow"] != 40 {
			t.Fatalf("response_aware over fast and slow (40ms) gave %v; want at least 30 of 40 on fast", got)
		}
	})

	t.Run("least_busy", func(t *testing.T) {
		// Park requests on "hold" (3 s latency) until one is in flight there: from then on
		// every request must go to the idle member. Bursts of four make sure one lands on
		// hold whatever the tie-break.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		hold, fast := mocks["hold"], mocks["fast"]
		deadline := time.Now().Add(5 * time.Second)
		for hold.stats(t).InFlight == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no request reached the hold member")
			}
			fast.ResetStats(ctx)
			for range 4 {
				go send(ctx, "POST", base+"/busy/v1/chat/completions", body)
			}
			harness.Eventually(t, 2*time.Second, func() bool {
				return hold.stats(t).InFlight > 0 || fast.stats(t).Requests >= 4
			}, "requests did not reach an upstream")
		}
		got := countUpstreams(t, 20, 1, "POST", base+"/busy/v1/chat/completions", body)
		if got["fast"] != 20 {
			t.Fatalf("least_busy with a request in flight on hold gave %v; want all 20 on fast", got)
		}
		cancel()
		harness.Eventually(t, 5*time.Second, func() bool { return hold.stats(t).InFlight == 0 }, "held requests not cancelled")
	})
}
