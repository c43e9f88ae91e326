package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// resLoadConfig is two upstreams in a round-robin group with retries; the breakers never open
// so that the load keeps exercising the upstreams instead of failing fast.
const resLoadConfig = `
http_server:
  forwards:
    - {name: main, address: 127.0.0.1, port: {{.Port}}, default_group: g}
upstreams:
  - {name: m1, url: "{{.M1}}", breaker: {threshold: 1.0, min_requests: 10000}}
  - {name: m2, url: "{{.M2}}", breaker: {threshold: 1.0, min_requests: 10000}}
upstream_groups:
  - name: g
    upstreams: [{name: m1}, {name: m2}]
    http_client:
      timeout: {connect: 2, idle: 5}
      retry: {attempts: 2, initial: 100, max_backoff: "500ms", retry_on: [429, 502, 503, 504, connect_error, timeout]}
`

// resLoadKind is one sort of request of the mixed load.
type resLoadKind struct {
	name string
	// run sends one request and returns "" when the outcome is as expected, else why not.
	run func(ctx context.Context, c *http.Client, url, id string) string
}

// resLoadKinds is the mix: normal, retried, slow and streamed requests that must succeed, and
// faults (upstream errors, broken streams, clients that leave early or mid-stream).
var resLoadKinds = []resLoadKind{
	{"normal", func(ctx context.Context, c *http.Client, url, id string) string {
		return resWant200(resSend(ctx, c, url, resChat("normal", false), "X-Test-Kind", "normal"))
	}},
	{"fail-once", func(ctx context.Context, c *http.Client, url, id string) string {
		return resWant200(resSend(ctx, c, url, resChat("fail once", false),
			"X-Mock-Fail-Times", "1", "X-Mock-Fail-Key", id, "X-Test-Kind", "fail-once"))
	}},
	{"slow", func(ctx context.Context, c *http.Client, url, id string) string {
		return resWant200(resSend(ctx, c, url, resChat("slow", false), "X-Mock-Latency", "150ms", "X-Test-Kind", "slow"))
	}},
	{"stream", func(ctx context.Context, c *http.Client, url, id string) string {
		a := resSend(ctx, c, url, resChat("stream", true), "X-Mock-Chunk-Gap", "5ms", "X-Test-Kind", "stream")
		if why := resWant200(a); why != "" {
			return why
		}
		if !strings.Contains(string(a.Body), "data: [DONE]") {
			return "stream without [DONE]: " + string(a.Body)
		}
		return ""
	}},
	{"always-502", func(ctx context.Context, c *http.Client, url, id string) string {
		resSend(ctx, c, url, resChat("502", false), "X-Mock-Status", "502", "X-Test-Kind", "always-502")
		return ""
	}},
	{"stream-break", func(ctx context.Context, c *http.Client, url, id string) string {
		resSend(ctx, c, url, resChat("break", true), "X-Mock-Break-After", "2", "X-Mock-Chunk-Gap", "5ms", "X-Test-Kind", "stream-break")
		return ""
	}},
	{"cancel-early", func(ctx context.Context, c *http.Client, url, id string) string {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		resSend(ctx, c, url, resChat("leave early", false), "X-Mock-Latency", "2s", "X-Test-Kind", "cancel-early")
		return ""
	}},
	{"cancel-mid-stream", func(ctx context.Context, c *http.Client, url, id string) string {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(resChat("leave mid-stream", true)))
		if err != nil {
			return err.Error()
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Mock-Chunks", "50")
		req.Header.Set("X-Mock-Chunk-Gap", "50ms")
		req.Header.Set("X-Test-Kind", "cancel-mid-stream")
		resp, err := c.Do(req)
		if err != nil {
			return "" // the run may be ending
		}
		defer resp.Body.Close()
		_, _ = bufio.NewReader(resp.Body).ReadString('\n') // first event, then leave
		cancel()
		return ""
	}},
}

func resWant200(a resAnswer) string {
	if a.Status != 200 || a.Err != nil {
		return a.String()
	}
	return ""
}

// goroutinesAndHeap reads go_goroutines and go_memstats_heap_inuse_bytes from the proxy.
func (p *resProxy) goroutinesAndHeap() (goroutines, heap float64) {
	p.t.Helper()
	ms := p.metrics()
	g, okG := ms.sum("go_goroutines")
	h, okH := ms.sum("go_memstats_heap_inuse_bytes")
	if !okG || !okH {
		p.t.Fatalf("proxy /metrics lacks go_goroutines (%v) or go_memstats_heap_inuse_bytes (%v): its registry should include the Go collector", okG, okH)
	}
	return g, h
}

// testResMixedLoad runs 8 workers for about 4 s of mixed faults and checks that the proxy's
// goroutines and heap come back to their baseline, that the wanted requests succeeded and
// that clients who left cancelled their upstream requests.
func testResMixedLoad(t *testing.T) {
	t.Parallel()
	m1, m2 := resStartMock(t, "m1"), resStartMock(t, "m2")
	addr := harness.FreeAddr(t)
	p := resStartProxy(t, resLoadConfig, map[string]any{"Port": harness.Port(t, addr), "M1": m1.url, "M2": m2.url})
	url := "http://" + addr + resChatPath

	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	const workers = 8

	// Baseline: the idle proxy before any client traffic, once its goroutine count is steady.
	var baseG, baseH float64
	prev := -1.0
	if !resWait(5*time.Second, func() bool {
		baseG, baseH = p.goroutinesAndHeap()
		steady := baseG == prev
		prev = baseG
		return steady
	}) {
		t.Logf("goroutine count not steady before the load; baseline %v", baseG)
	}

	// Warm up with the load's concurrency; every request here must succeed.
	var wg sync.WaitGroup
	var warmFailed atomic.Int64
	var warmFirst atomic.Value
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				if why := resLoadKinds[i%4].run(context.Background(), c, url, fmt.Sprint("warm-", w, "-", i)); why != "" {
					warmFailed.Add(1)
					warmFirst.CompareAndSwap(nil, resLoadKinds[i%4].name+": "+why)
				}
			}
		}()
	}
	wg.Wait()
	if n := warmFailed.Load(); n > 0 {
		t.Fatalf("warm-up: %d of %d plain requests failed; first: %v", n, workers*10, warmFirst.Load())
	}
	warmG, _ := p.goroutinesAndHeap()

	// The load: each worker cycles through the kinds until the run ends.
	ctx, stop := context.WithTimeout(context.Background(), 4*time.Second)
	defer stop()
	sent := make([]atomic.Int64, len(resLoadKinds))
	var mu sync.Mutex
	failures := map[string][]string{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i++ {
				k := i % len(resLoadKinds)
				why := resLoadKinds[k].run(ctx, c, url, fmt.Sprint("load-", w, "-", i))
				sent[k].Add(1)
				if why != "" && ctx.Err() == nil {
					mu.Lock()
					failures[resLoadKinds[k].name] = append(failures[resLoadKinds[k].name], why)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	var counts []string
	for k, kind := range resLoadKinds {
		counts = append(counts, fmt.Sprintf("%s=%d", kind.name, sent[k].Load()))
	}
	t.Logf("mixed load sent: %s", strings.Join(counts, " "))
	for kind, fs := range failures {
		t.Errorf("mixed load: %d %s requests failed; first: %s", len(fs), kind, fs[0])
	}
	tr.CloseIdleConnections()

	// Nothing left in flight upstream, and clients who left cancelled their upstream request.
	for _, m := range []*resMock{m1, m2} {
		if !resWait(10*time.Second, func() bool { return m.stats().InFlight == 0 }) {
			t.Errorf("%s still has %d requests in flight 10s after the load", m.name, m.stats().InFlight)
		}
		for _, kind := range []string{"cancel-early", "cancel-mid-stream"} {
			recs := m.recordsWith("X-Test-Kind", kind)
			var notCancelled int
			for _, r := range recs {
				if r.Done && !r.Cancelled {
					notCancelled++
				}
			}
			if notCancelled > 0 {
				t.Errorf("%s: %d of %d %s requests ran to completion; want the proxy to cancel them when the client leaves",
					m.name, notCancelled, len(recs), kind)
			}
		}
	}

	// Goroutines back to the baseline. Pooled upstream connections close after the idle
	// timeout (5s); a few goroutines of slack for the runtime and the scrape itself.
	const slack = 2
	endG, endH := p.goroutinesAndHeap()
	start := time.Now()
	var g, h float64
	if !resWait(20*time.Second, func() bool {
		g, h = p.goroutinesAndHeap()
		return g <= baseG+slack
	}) {
		t.Errorf("proxy goroutines %v 20s after the load; want ≤ idle baseline %v + %d (leak)", g, baseG, slack)
	}
	t.Logf("goroutines: idle %v, after warm-up %v, at the end of the load %v, %v after %s; heap in use at the end %.1f MiB",
		baseG, warmG, endG, g, time.Since(start).Round(time.Millisecond), endH/(1<<20))
	// Heap: in use may include garbage not yet collected; a leak of the load's requests
	// (thousands of bodies and buffers) would stay above this bound.
	heapBound := baseH + 8<<20
	if !resWait(10*time.Second, func() bool {
		_, h = p.goroutinesAndHeap()
		return h <= heapBound
	}) {
		t.Errorf("proxy heap in use %.1f MiB after the load; want ≤ %.1f MiB (baseline %.1f MiB)", h/(1<<20), heapBound/(1<<20), baseH/(1<<20))
	}
	t.Logf("heap in use: baseline %.1f MiB, after %.1f MiB", baseH/(1<<20), h/(1<<20))

	// The load retried: retries by reason are counted.
	ms := p.metrics()
	if n, _ := ms.sum("llmproxy_retries_total", "reason", "502"); n < 1 {
		t.Errorf("llmproxy_retries_total{reason=\"502\"} = %v after a load with 502s; want ≥ 1:\n%s", n, ms.dump("llmproxy_retries_total"))
	}
}
