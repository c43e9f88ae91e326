package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// ownRedis is a redis-server started by one test on a free port, so the test may stop,
// freeze and inspect it without touching the shared Redis on 6379.
type ownRedis struct {
	Addr   string
	URL    string
	proc   *harness.Process
	client *redis.Client
}

// startRedis runs redis-server (no persistence) on a free loopback port and waits until
// it answers PING. It is stopped, and continued first if the test froze it, when the test
// ends.
func startRedis(t *testing.T) *ownRedis {
	t.Helper()
	addr := harness.FreeAddr(t)
	port := strconv.Itoa(harness.Port(t, addr))
	r := &ownRedis{Addr: addr, URL: "redis://" + addr + "/0"}
	r.proc = harness.Start(t, "redis-server", []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"})
	// Cleanups run last-registered first: a frozen server is continued before the
	// harness's SIGTERM, which it could not act on while stopped.
	t.Cleanup(func() { _ = r.proc.Signal(syscall.SIGCONT) })
	r.client = redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { r.client.Close() })
	harness.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return r.client.Ping(ctx).Err() == nil
	}, "redis-server on %s did not answer PING:\n%s", addr, r.proc.Output())
	return r
}

// keys returns every key of the server.
func (r *ownRedis) keys(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	iter := r.client.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan redis %s: %v", r.Addr, err)
	}
	return out
}

// redisRateConfig is a proxy with a global rate limit in front of one upstream.
const redisRateConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
      ratelimit: {enabled: true, per_second: {{.PerSecond}}, burst: {{.Burst}}, key: "{{.Key}}", scope: global}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - {name: g, upstreams: [{name: up}]}
`

// A frozen Redis (SIGSTOP: connections stay open, nothing answers) must cost requests
// almost nothing: each Redis call has a hard deadline, and once one has failed the proxy
// stops asking Redis for a cooldown instead of making every request wait. It says so in
// its JSON log and its metrics, and goes back to Redis once it answers again.
func TestProxyHungRedisCostsNothing(t *testing.T) {
	t.Parallel()
	rd := startRedis(t)
	up := resStartMock(t, "up")
	port := harness.FreePort(t)
	p := resStartProxy(t, redisRateConfig, map[string]any{
		"Port": port, "URL": up.url, "PerSecond": 10000, "Burst": 20000, "Key": "ip",
	}, "LLMPROXY_REDIS_URL="+rd.URL)
	url := fmt.Sprintf("http://127.0.0.1:%d%s", port, resChatPath)
	ctx := context.Background()

	for i := range 3 {
		if a := resSend(ctx, resClient, url, resChat("warm", false)); a.Status != http.StatusOK {
			t.Fatalf("request %d with Redis up: %s", i, a)
		}
	}
	if len(rd.keys(t)) == 0 {
		t.Fatal("no rate-limit bucket in Redis after three requests: the limit is not global")
	}

	if err := rd.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Four clients for two and a half seconds: with Redis frozen, no request may wait
	// for it longer than a call's deadline (old behaviour: 5 s each in the first second).
	start := time.Now()
	var mu sync.Mutex
	var slowest time.Duration
	var failures []string
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Since(start) < 2500*time.Millisecond; n++ {
				a := resSend(ctx, resClient, url, resChat(fmt.Sprintf("frozen %d/%d", c, n), false))
				mu.Lock()
				slowest = max(slowest, a.Elapsed)
				if a.Status != http.StatusOK {
					failures = append(failures, a.String())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(failures) > 0 {
		t.Errorf("%d requests failed while Redis was frozen (the local fallback should decide), first: %s", len(failures), failures[0])
	}
	if slowest > time.Second {
		t.Errorf("slowest request with Redis frozen took %s; want each Redis call cut at its deadline (50 ms)", slowest.Round(time.Millisecond))
	}

	ms := p.metrics()
	skipped, _ := ms.sum("llmproxy_redis_fallbacks_total", "reason", "skipped")
	waited := 0.0
	for _, reason := range []string{"timeout", "error"} {
		n, _ := ms.sum("llmproxy_redis_fallbacks_total", "reason", reason)
		waited += n
	}
	if skipped == 0 || waited == 0 {
		t.Errorf("llmproxy_redis_fallbacks_total: skipped %v, timeout+error %v; want both counted\n%s", skipped, waited, ms.dump("llmproxy_redis_fallbacks_total"))
	}
	// Once a call failed, Redis is asked again only once per cooldown (1 s): the calls
	// that waited for it are bounded by the time, not by the number of requests.
	if limit := elapsed.Seconds()/1 + 5; waited > limit {
		t.Errorf("%v requests waited for the frozen Redis in %s; want at most %v (one probe a second, plus the requests in flight when it froze)", waited, elapsed.Round(time.Millisecond), limit)
	}
	if up, ok := ms.sum("llmproxy_redis_up"); !ok || up != 0 {
		t.Errorf("llmproxy_redis_up = %v (found %v) while Redis is frozen; want 0", up, ok)
	}
	out := p.proc.Output()
	if !strings.Contains(out, `"msg":"redis unavailable`) {
		t.Errorf("no JSON log record saying Redis is unavailable; output:\n%s", out)
	}
	checkJSONLines(t, out)

	if err := rd.proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !resWait(10*time.Second, func() bool {
		resSend(ctx, resClient, url, resChat("thawed", false))
		v, _ := p.metrics().sum("llmproxy_redis_up")
		return v == 1
	}) {
		t.Fatalf("llmproxy_redis_up did not return to 1 after Redis was continued\n%s", p.metrics().dump("llmproxy_redis_up"))
	}
	if out := p.proc.Output(); !strings.Contains(out, `"msg":"redis available again`) {
		t.Errorf("no JSON log record saying Redis is back; output:\n%s", out)
	}
}

// checkJSONLines fails when a line of a proxy's output is not a JSON object: every record,
// go-redis's own included, goes through slog.
func checkJSONLines(t *testing.T, out string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v map[string]any
		if line != "" && json.Unmarshal([]byte(line), &v) != nil {
			t.Errorf("output line is not a JSON record: %q", line)
		}
	}
}

// A limit keyed by a credential header keeps one shared budget per credential across
// proxies, but never writes the credential into Redis: bucket keys are keyed hashes.
func TestProxyRateLimitKeysInRedisAreHashed(t *testing.T) {
	t.Parallel()
	rd := startRedis(t)
	up := resStartMock(t, "up")
	var urls []string
	for range 2 {
		port := harness.FreePort(t)
		resStartProxy(t, redisRateConfig, map[string]any{
			"Port": port, "URL": up.url, "PerSecond": 1, "Burst": 3, "Key": "header:Authorization",
		}, "LLMPROXY_REDIS_URL="+rd.URL)
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d%s", port, resChatPath))
	}
	const token = "sk-live-0123456789abcdefSECRET"
	ctx := context.Background()
	passed := 0
	for i := range 8 {
		a := resSend(ctx, resClient, urls[i%2], resChat("k", false), "Authorization", "Bearer "+token)
		switch a.Status {
		case http.StatusOK:
			passed++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("request %d: %s", i, a)
		}
	}
	if passed != 3 {
		t.Errorf("one credential through two proxies with a global burst of 3: %d passed; want 3 (the hashed key must be the same on every proxy)", passed)
	}
	if a := resSend(ctx, resClient, urls[0], resChat("k", false), "Authorization", "Bearer another-credential"); a.Status != http.StatusOK {
		t.Errorf("another credential shares the first one's bucket: %s", a)
	}
	keys := rd.keys(t)
	if len(keys) == 0 {
		t.Fatal("no rate-limit bucket in Redis")
	}
	for _, k := range keys {
		for _, secret := range []string{"SECRET", "sk-live", "another-credential", hex.EncodeToString([]byte(token))[:16]} {
			if strings.Contains(k, secret) {
				t.Errorf("Redis key %q carries the client's credential", k)
			}
		}
		if !strings.HasPrefix(k, "llmproxy:ratelimit:main:") {
			t.Errorf("Redis key %q is not under llmproxy:ratelimit:main:", k)
		}
	}
}
