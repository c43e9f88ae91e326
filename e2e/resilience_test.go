package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// TestResilience shows, with the real llmproxy and mockllm binaries, that the request path
// holds what issue 5 promises: circuit breakers that eject and readmit upstreams, retries
// with failover and exact body replay, the failover strategy returning to its first member,
// per-group concurrency limits with queues, and no goroutine or heap left behind by a mixed
// fault load. Every case runs its own proxy and mocks on free loopback ports, in parallel.
func TestResilience(t *testing.T) {
	t.Parallel()
	harness.Binaries(t) // build once before the parallel cases start
	t.Run("breaker/503", func(t *testing.T) { t.Parallel(); testResBreaker(t, false) })
	t.Run("breaker/refused", func(t *testing.T) { t.Parallel(); testResBreaker(t, true) })
	t.Run("breaker/all-down", testResAllDown)
	t.Run("retry", testResRetry)
	t.Run("failover", testResFailover)
	t.Run("queue", testResQueue)
	t.Run("mixed-load", testResMixedLoad)
}

// resBreakerConfig is two upstreams with fast-cooling breakers in a round-robin group with
// retries. retry_on lists reset: an upstream process that stops closes its pooled
// connections, and a request written on one as it closes is lost after the write (reset),
// which only an operator who accepts a possible duplicate retries.
const resBreakerConfig = `
http_server:
  forwards:
    - {name: main, address: 127.0.0.1, port: {{.Port}}, default_group: g}
upstreams:
{{- range .Mocks}}
  - name: {{.}}
    url: "{{index $.URLs .}}"
    breaker: {threshold: 0.5, cooldown: {{$.Cooldown}}, window: "10s", min_requests: 3, half_open_probes: 1}
{{- end}}
upstream_groups:
  - name: g
    upstreams: [{{range $i, $m := .Mocks}}{{if $i}}, {{end}}{name: {{$m}}}{{end}}]
    balance: {strategy: {{.Strategy}}}
    http_client:
      timeout: {connect: 10}
      retry: {attempts: 2, initial: 100, max_backoff: "1s", retry_on: [429, 502, 503, 504, connect_error, reset, timeout]}
`

// resBreakerData fills resBreakerConfig.
func resBreakerData(t *testing.T, port int, strategy string, cooldown int, mocks ...*resMock) map[string]any {
	t.Helper()
	names := make([]string, len(mocks))
	urls := map[string]string{}
	for i, m := range mocks {
		names[i] = m.name
		urls[m.name] = m.url
	}
	return map[string]any{"Port": port, "Mocks": names, "URLs": urls, "Strategy": strategy, "Cooldown": cooldown}
}

// resBreakerTransitions counts upstream's breaker transitions to state to.
func resBreakerTransitions(ms resMetrics, upstream, to string) float64 {
	n, _ := ms.sum("llmproxy_circuitbreaker_state_changes_total", "upstream", upstream, "to", to)
	return n
}

// testResBreaker: upstream a of {a, b} starts failing (503 answers, or its
// process stops so connections are refused); with retries on, clients see no error and a
// stops getting traffic once its breaker opens; the breaker half-opens by itself after the
// cooldown, with no traffic; once a heals, a probe succeeds and a takes traffic again.
func testResBreaker(t *testing.T, refuse bool) {
	a, b := resStartMock(t, "a"), resStartMock(t, "b")
	addr := harness.FreeAddr(t)
	p := resStartProxy(t, resBreakerConfig, resBreakerData(t, harness.Port(t, addr), "roundrobin", 1, a, b))
	url := "http://" + addr + resChatPath
	ctx := context.Background()

	// Healthy: both take traffic.
	for i := range 4 {
		if r := resSend(ctx, resClient, url, resChat(fmt.Sprint("warm ", i), false)); r.Status != 200 {
			t.Fatalf("warm-up request %d: got %s; want 200", i, r)
		}
	}
	if a.count() == 0 || b.count() == 0 {
		t.Fatalf("round robin warm-up: a saw %d, b saw %d requests; want both > 0", a.count(), b.count())
	}

	// a starts refusing.
	attemptsBefore, _ := p.metrics().sum("llmproxy_upstream_requests_total", "upstream", "a")
	aBefore := a.count()
	if refuse {
		a.stop()
	} else {
		a.behave(`{"status":503}`)
	}
	const burst = 60
	var clientErrors []string
	for i := range burst {
		r := resSend(ctx, resClient, url, resChat(fmt.Sprint("burst ", i), false))
		if r.Status != 200 || r.Upstream() != "b" {
			clientErrors = append(clientErrors, fmt.Sprintf("request %d: %s", i, r))
		}
	}
	if len(clientErrors) > 0 {
		t.Errorf("a failing, retries on: %d of %d client requests did not get 200 from b; want none:\n%s",
			len(clientErrors), burst, strings.Join(clientErrors, "\n"))
	}
	ms := p.metrics()
	if resBreakerTransitions(ms, "a", "open") < 1 {
		t.Errorf("no breaker transition of a to open after %d requests while it failed:\n%s", burst, ms.dump("llmproxy_circuitbreaker_state_changes_total"))
	}
	if resBreakerTransitions(ms, "b", "open") != 0 {
		t.Errorf("breaker of healthy b opened:\n%s", ms.dump("llmproxy_circuitbreaker_state_changes_total"))
	}
	// Round robin without a breaker sends every other request (burst/2 = 30) to a first.
	// With min_requests 3 and threshold 0.5 a is out after a handful of failures, plus one
	// probe per cooldown (1 s).
	const maxAttemptsOnA = 15
	if refuse {
		attemptsAfter, found := ms.sum("llmproxy_upstream_requests_total", "upstream", "a")
		switch {
		case !found:
			t.Errorf("no llmproxy_upstream_requests_total{upstream=\"a\"}: cannot see attempts on the refusing upstream")
		case attemptsAfter-attemptsBefore > maxAttemptsOnA:
			t.Errorf("a was tried %v times during %d requests while refusing connections; want at most %d (ejected)",
				attemptsAfter-attemptsBefore, burst, maxAttemptsOnA)
		}
	} else if n := a.count() - aBefore; n > maxAttemptsOnA {
		t.Errorf("a received %d of %d requests while answering 503; want at most %d (ejected)", n, burst, maxAttemptsOnA)
	}

	// No traffic now: the breaker must half-open by itself after the cooldown.
	var opens, halfOpens float64
	if !resWait(5*time.Second, func() bool {
		ms := p.metrics()
		opens, halfOpens = resBreakerTransitions(ms, "a", "open"), resBreakerTransitions(ms, "a", "half_open")
		return opens >= 1 && halfOpens >= opens
	}) {
		t.Errorf("breaker of a did not half-open within 5s of idleness (cooldown 1s): %v transitions to open, %v to half_open:\n%s",
			opens, halfOpens, p.metrics().dump("llmproxy_circuitbreaker_state_changes_total"))
	}

	// a heals and takes traffic again.
	if refuse {
		a.start()
	} else {
		a.behave("")
	}
	aHealed := a.count()
	var last resAnswer
	if !resWait(10*time.Second, func() bool {
		last = resSend(ctx, resClient, url, resChat("heal", false))
		if last.Status != 200 {
			t.Errorf("after a healed: got %s; want 200", last)
		}
		return last.Upstream() == "a"
	}) {
		t.Fatalf("a healed but got no traffic within 10s (last answer %s; a saw %d requests)", last, a.count()-aHealed)
	}
	if !resWait(5*time.Second, func() bool { return resBreakerTransitions(p.metrics(), "a", "closed") >= 1 }) {
		t.Errorf("a answered a probe but its breaker never closed:\n%s", p.metrics().dump("llmproxy_circuitbreaker_state_changes_total"))
	}
	got := map[string]int{}
	for i := range 20 {
		r := resSend(ctx, resClient, url, resChat(fmt.Sprint("after ", i), false))
		if r.Status != 200 {
			t.Errorf("after recovery, request %d: got %s; want 200", i, r)
		}
		got[r.Upstream()]++
	}
	if got["a"] < 5 || got["b"] < 5 {
		t.Errorf("after recovery 20 round-robin requests went %v; want both a and b to share them", got)
	}
	if a.count()-aHealed < 5 {
		t.Errorf("healed a saw %d requests; want its count to grow again", a.count()-aHealed)
	}
}

// testResAllDown: every member's process is stopped (connections refused, connect
// timeout 10 s); once the breakers are open requests fail fast with 503 and a JSON error.
func testResAllDown(t *testing.T) {
	t.Parallel()
	d1, d2 := resStartMock(t, "d1"), resStartMock(t, "d2")
	addr := harness.FreeAddr(t)
	// A long cooldown keeps the breakers open for the whole case.
	p := resStartProxy(t, resBreakerConfig, resBreakerData(t, harness.Port(t, addr), "roundrobin", 60, d1, d2))
	url := "http://" + addr + resChatPath
	ctx := context.Background()
	if r := resSend(ctx, resClient, url, resChat("up", false)); r.Status != 200 {
		t.Fatalf("before the outage: got %s; want 200", r)
	}
	d1.stop()
	d2.stop()

	// Until both breakers open a request may see 502 (unreachable) or 503; wait for a 503.
	var seen []string
	if !resWait(10*time.Second, func() bool {
		r := resSend(ctx, resClient, url, resChat("down", false))
		seen = append(seen, fmt.Sprint(r.Status))
		if r.Status != 502 && r.Status != 503 {
			t.Errorf("all members down: got %s; want 502 or 503", r)
		}
		return r.Status == 503
	}) {
		t.Fatalf("all members down for 10s, never a 503; statuses %v", seen)
	}
	for i := range 5 {
		r := resSend(ctx, resClient, url, resChat(fmt.Sprint("down ", i), false))
		resCheckProxyError(t, r, 503)
		if r.Elapsed >= time.Second {
			t.Errorf("all breakers open, request %d took %s; want a fast failure (< 1s, connect timeout is 10s)", i, r.Elapsed)
		}
	}
	ms := p.metrics()
	for _, u := range []string{"d1", "d2"} {
		if resBreakerTransitions(ms, u, "open") < 1 {
			t.Errorf("breaker of stopped %s never opened:\n%s", u, ms.dump("llmproxy_circuitbreaker_state_changes_total"))
		}
	}
}

// resRetryConfig is one upstream whose breaker never opens (so failures do not interfere)
// behind a group with retries.
const resRetryConfig = `
http_server:
  forwards:
    - {name: main, address: 127.0.0.1, port: {{.Port}}, default_group: g}
upstreams:
  - name: r
    url: "{{.URL}}"
    breaker: {threshold: 1.0, min_requests: 10000}
upstream_groups:
  - name: g
    upstreams: [{name: r}]
    http_client:
      retry: {attempts: 2, initial: 100, max_backoff: "3s", retry_on: [429, 502, 503, 504, connect_error, timeout]}
`

// testResRetry covers what is retried (502, 429 after Retry-After) and what is not (400, a
// stream that already reached the client), with the upstream's view of every attempt.
func testResRetry(t *testing.T) {
	t.Parallel()
	r := resStartMock(t, "r")
	addr := harness.FreeAddr(t)
	p := resStartProxy(t, resRetryConfig, map[string]any{"Port": harness.Port(t, addr), "URL": r.url})
	url := "http://" + addr + resChatPath

	// The cases run in parallel inside one group, so that the metrics are read after all.
	t.Run("cases", func(t *testing.T) { testResRetryCases(t, r, url) })

	// Retries by reason.
	ms := p.metrics()
	if !ms.has("llmproxy_retries_total") {
		t.Fatalf("no llmproxy_retries_total samples after retries")
	}
	for _, reason := range []string{"502", "429"} {
		if n, _ := ms.sum("llmproxy_retries_total", "reason", reason); n < 1 {
			t.Errorf("llmproxy_retries_total{reason=%q} = %v; want ≥ 1:\n%s", reason, n, ms.dump("llmproxy_retries_total"))
		}
	}
	if n, _ := ms.sum("llmproxy_retries_total", "reason", "400"); n != 0 {
		t.Errorf("llmproxy_retries_total{reason=\"400\"} = %v; want 0", n)
	}
}

// testResRetryCases are testResRetry's requests against upstream r behind the proxy's url.
func testResRetryCases(t *testing.T, r *resMock, url string) {
	ctx := context.Background()
	r = r.on(t)
	t.Run("502 then 200: replayed exactly", func(t *testing.T) {
		t.Parallel()
		r := r.on(t)
		// Odd spacing, escapes and non-ASCII: any re-encoding would show.
		body := "{\"model\": \"gpt-4o\",  \"messages\":[{\"role\":\"user\",\"content\":\"r\u00e9essayer \\u00e9 \\n ✓\"}],\n \"temperature\": 0.50}"
		a := resSend(ctx, resClient, url, body, "X-Mock-Fail-Times", "1", "X-Mock-Status", "502", "X-Mock-Fail-Key", "k502")
		if a.Status != 200 {
			t.Errorf("got %s; want 200 after one retry", a)
		}
		recs := r.recordsWith("X-Mock-Fail-Key", "k502")
		if len(recs) != 2 {
			t.Fatalf("upstream saw %d requests; want 2 (the failure and the retry)", len(recs))
		}
		if recs[0].Status != 502 || recs[1].Status != 200 {
			t.Errorf("upstream answered %d then %d; want 502 then 200", recs[0].Status, recs[1].Status)
		}
		for i, rec := range recs {
			if rec.Body != body {
				t.Errorf("attempt %d body %q; want the client's bytes %q", i+1, rec.Body, body)
			}
		}
	})

	t.Run("502 every time: passed through after the retries", func(t *testing.T) {
		t.Parallel()
		r := r.on(t)
		a := resSend(ctx, resClient, url, resChat("always 502", false), "X-Mock-Status", "502", "X-Test-Id", "always502")
		if a.Status != 502 || a.Upstream() != "r" {
			t.Errorf("got %s; want the upstream's own 502 once the retries are spent", a)
		}
		if n := len(r.recordsWith("X-Test-Id", "always502")); n != 3 {
			t.Errorf("upstream saw %d attempts; want 3 (first try + attempts: 2)", n)
		}
	})

	t.Run("429 Retry-After 1s", func(t *testing.T) {
		t.Parallel()
		r := r.on(t)
		a := resSend(ctx, resClient, url, resChat("slow down", false),
			"X-Mock-Fail-Times", "1", "X-Mock-Status", "429", "X-Mock-Retry-After", "1", "X-Mock-Fail-Key", "k429")
		if a.Status != 200 {
			t.Errorf("got %s; want 200 after waiting out Retry-After", a)
		}
		if a.Elapsed < 900*time.Millisecond || a.Elapsed > 3*time.Second {
			t.Errorf("answer took %s; want about 1s (Retry-After: 1, backoff initial 100ms)", a.Elapsed)
		}
		recs := r.recordsWith("X-Mock-Fail-Key", "k429")
		if len(recs) != 2 {
			t.Fatalf("upstream saw %d requests; want 2", len(recs))
		}
		if gap := recs[1].Time.Sub(recs[0].Time); gap < 900*time.Millisecond {
			t.Errorf("retry arrived %s after the 429; want ≥ 900ms (Retry-After: 1)", gap)
		}
	})

	t.Run("400 not retried", func(t *testing.T) {
		t.Parallel()
		r := r.on(t)
		a := resSend(ctx, resClient, url, resChat("bad", false), "X-Mock-Status", "400", "X-Test-Id", "bad400")
		if a.Status != 400 || a.Upstream() != "r" {
			t.Errorf("got %s; want the upstream's 400 passed through", a)
		}
		if n := len(r.recordsWith("X-Test-Id", "bad400")); n != 1 {
			t.Errorf("upstream saw %d requests; want exactly 1 (400 is not in retry_on)", n)
		}
	})

	t.Run("stream broken mid-way not retried", func(t *testing.T) {
		t.Parallel()
		r := r.on(t)
		a := resSend(ctx, resClient, url, resChat("stream", true),
			"X-Mock-Chunks", "6", "X-Mock-Break-After", "2", "X-Mock-Chunk-Gap", "20ms", "X-Test-Id", "break")
		if a.Status != 200 || !strings.HasPrefix(a.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("got %s (Content-Type %q); want a 200 event stream", a, a.Header.Get("Content-Type"))
		}
		if n := len(r.recordsWith("X-Test-Id", "break")); n != 1 {
			t.Errorf("upstream saw %d requests; want exactly 1 (the stream had reached the client)", n)
		}
		resCheckStreamError(t, a, 2)
	})

}

// resCheckStreamError asserts that a, an OpenAI SSE stream cut by the upstream after
// chunks content chunks, carries them and then an OpenAI-shaped error event, not [DONE].
func resCheckStreamError(t *testing.T, a resAnswer, chunks int) {
	t.Helper()
	var content, errs int
	for _, line := range strings.Split(string(a.Body), "\n") {
		data, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "data:")
		if !ok {
			continue
		}
		data = strings.TrimSpace(data)
		if data == "[DONE]" {
			t.Errorf("broken stream ended with data: [DONE]; want an error event:\n%s", a.Body)
			continue
		}
		var ev struct {
			Choices []json.RawMessage `json:"choices"`
			Error   *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Errorf("stream line %q is not JSON: %v", data, err)
			continue
		}
		switch {
		case ev.Error != nil && ev.Error.Message != "":
			errs++
		case ev.Error != nil:
			t.Errorf("error event without a message: %s", data)
		case len(ev.Choices) > 0:
			content++
		}
	}
	if content != chunks {
		t.Errorf("client got %d content chunks; want the %d sent before the break:\n%s", content, chunks, a.Body)
	}
	if errs != 1 {
		t.Errorf("client stream has %d error events (data: {\"error\":{…}}); want 1 at the end (transport error %v):\n%s", errs, a.Err, a.Body)
	}
	if i := bytes.LastIndex(a.Body, []byte(`"error"`)); i >= 0 && bytes.Contains(a.Body[i:], []byte(`"choices"`)) {
		t.Errorf("content after the error event:\n%s", a.Body)
	}
}

// testResFailover: with the failover strategy traffic goes to the first member,
// to the second while the first is broken, and back to the first once its breaker closes.
func testResFailover(t *testing.T) {
	t.Parallel()
	f1, f2 := resStartMock(t, "f1"), resStartMock(t, "f2")
	addr := harness.FreeAddr(t)
	p := resStartProxy(t, resBreakerConfig, resBreakerData(t, harness.Port(t, addr), "failover", 1, f1, f2))
	url := "http://" + addr + resChatPath
	ctx := context.Background()

	sendN := func(phase string, n int) map[string]int {
		got := map[string]int{}
		for i := range n {
			r := resSend(ctx, resClient, url, resChat(fmt.Sprint(phase, i), false))
			if r.Status != 200 {
				t.Errorf("%s, request %d: got %s; want 200", phase, i, r)
			}
			got[r.Upstream()]++
		}
		return got
	}
	if got := sendN("healthy", 8); got["f1"] != 8 {
		t.Errorf("healthy: answers came from %v; want all 8 from the first member f1", got)
	}
	if n := f2.count(); n != 0 {
		t.Errorf("healthy: second member f2 saw %d requests; want 0", n)
	}

	f1.behave(`{"status":503}`)
	if got := sendN("f1 broken", 20); got["f2"] != 20 {
		t.Errorf("f1 broken: answers came from %v; want all 20 from f2", got)
	}
	if !resWait(3*time.Second, func() bool { return resBreakerTransitions(p.metrics(), "f1", "open") >= 1 }) {
		t.Errorf("breaker of failing f1 never opened:\n%s", p.metrics().dump("llmproxy_circuitbreaker_state_changes_total"))
	}

	f1.behave("")
	healed := f1.count()
	var last resAnswer
	if !resWait(10*time.Second, func() bool {
		last = resSend(ctx, resClient, url, resChat("back?", false))
		if last.Status != 200 {
			t.Errorf("f1 healed: got %s; want 200", last)
		}
		return last.Upstream() == "f1"
	}) {
		t.Fatalf("f1 healed, cooldown 1s, but traffic did not return to it within 10s (last %s, f1 saw %d)", last, f1.count()-healed)
	}
	if got := sendN("f1 back", 10); got["f1"] != 10 {
		t.Errorf("f1 back: answers came from %v; want all 10 from f1 again", got)
	}
	if resBreakerTransitions(p.metrics(), "f1", "closed") < 1 {
		t.Errorf("traffic is back on f1 but no breaker transition to closed:\n%s", p.metrics().dump("llmproxy_circuitbreaker_state_changes_total"))
	}
}

// resQueueConfig has two forwards, each with its own group and upstream: one whose full queue
// drops requests, one whose requests wait.
const resQueueConfig = `
http_server:
  forwards:
    - {name: drop, address: 127.0.0.1, port: {{.DropPort}}, default_group: q-drop}
    - {name: wait, address: 127.0.0.1, port: {{.WaitPort}}, default_group: q-wait}
    - {name: timeout, address: 127.0.0.1, port: {{.TimeoutPort}}, default_group: q-timeout}
upstreams:
  - {name: qa, url: "{{.QA}}"}
  - {name: qb, url: "{{.QB}}"}
  - {name: qc, url: "{{.QC}}"}
upstream_groups:
  - name: q-drop
    upstreams: [{name: qa}]
    concurrency: {max: 2, queue: 2, drop_excess: true}
  - name: q-wait
    upstreams: [{name: qb}]
    concurrency: {max: 2, queue: 2, drop_excess: false, queue_timeout: "30s"}
  - name: q-timeout
    upstreams: [{name: qc}]
    concurrency: {max: 1, queue: 5, queue_timeout: "300ms"}
`

// resFire sends n requests at once (released together) and returns their answers.
func resFire(n int, url, body string, headers ...string) []resAnswer {
	out := make([]resAnswer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = resSend(context.Background(), resClient, url, body, headers...)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// testResQueue: max 2 in flight and 2 waiting; with drop_excess the rest is refused at once,
// without it everybody is served, never more than 2 at the upstream. A waiting request
// leaves the queue when queue_timeout passes (503) or when its client goes away.
func testResQueue(t *testing.T) {
	t.Parallel()
	qa, qb, qc := resStartMock(t, "qa"), resStartMock(t, "qb"), resStartMock(t, "qc")
	dropAddr, waitAddr, timeoutAddr := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	p := resStartProxy(t, resQueueConfig, map[string]any{
		"DropPort": harness.Port(t, dropAddr), "WaitPort": harness.Port(t, waitAddr), "TimeoutPort": harness.Port(t, timeoutAddr),
		"QA": qa.url, "QB": qb.url, "QC": qc.url,
	})

	t.Run("drop_excess", func(t *testing.T) {
		t.Parallel()
		p, qa := p.on(t), qa.on(t)
		// Watch the queue depth while the requests are held.
		var maxDepth float64
		var depthFound bool
		watch := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			for {
				select {
				case <-watch:
					return
				default:
				}
				if ms, err := p.tryMetrics(); err == nil {
					if d, ok := ms.sum("llmproxy_queue_depth", "group", "q-drop"); ok {
						depthFound = true
						maxDepth = max(maxDepth, d)
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		answers := resFire(10, "http://"+dropAddr+resChatPath, resChat("queue", false), "X-Mock-Latency", "1s")
		close(watch)
		<-watched

		var ok, dropped int
		for i, a := range answers {
			switch a.Status {
			case 200:
				ok++
				if a.Elapsed < 900*time.Millisecond {
					t.Errorf("request %d: 200 after %s; want ≥ 1s (X-Mock-Latency)", i, a.Elapsed)
				}
			case 503:
				dropped++
				if msg := resCheckProxyError(t, a, 503); !strings.Contains(msg, "request dropped: queue is full") {
					t.Errorf("request %d: 503 message %q; want \"request dropped: queue is full\"", i, msg)
				}
				if a.Elapsed > 500*time.Millisecond {
					t.Errorf("request %d: dropped after %s; want at once (before the 1s answers)", i, a.Elapsed)
				}
			default:
				t.Errorf("request %d: got %s; want 200 or 503", i, a)
			}
		}
		if ok != 4 || dropped != 6 {
			t.Errorf("10 concurrent requests, max 2 + queue 2, drop_excess: %d succeeded and %d were dropped; want 4 and 6", ok, dropped)
		}
		s := qa.stats()
		if s.Requests != 4 || s.MaxInFlight > 2 {
			t.Errorf("upstream saw %d requests, at most %d at once; want 4, at most 2", s.Requests, s.MaxInFlight)
		}
		switch {
		case !depthFound:
			t.Errorf("no llmproxy_queue_depth{group=\"q-drop\"} while requests waited")
		case maxDepth != 2:
			t.Errorf("llmproxy_queue_depth{group=\"q-drop\"} peaked at %v while requests waited; want 2", maxDepth)
		}
		ms := p.metrics()
		if d, _ := ms.sum("llmproxy_queue_depth", "group", "q-drop"); d != 0 {
			t.Errorf("llmproxy_queue_depth{group=\"q-drop\"} = %v after the burst; want 0", d)
		}
		if n, _ := ms.sum("llmproxy_requests_dropped_total", "group", "q-drop"); n != 6 {
			t.Errorf("llmproxy_requests_dropped_total{group=\"q-drop\"} = %v; want 6:\n%s", n, ms.dump("llmproxy_requests_dropped_total"))
		}
	})

	t.Run("wait", func(t *testing.T) {
		t.Parallel()
		p, qb := p.on(t), qb.on(t)
		const latency = 300 * time.Millisecond
		start := time.Now()
		answers := resFire(10, "http://"+waitAddr+resChatPath, resChat("queue", false), "X-Mock-Latency", latency.String())
		took := time.Since(start)
		for i, a := range answers {
			if a.Status != 200 {
				t.Errorf("request %d: got %s; want 200 (no drop_excess: wait for a slot)", i, a)
			}
		}
		s := qb.stats()
		if s.Requests != 10 || s.MaxInFlight != 2 {
			t.Errorf("upstream saw %d requests, at most %d at once; want 10, at most 2 (and 2 used)", s.Requests, s.MaxInFlight)
		}
		// Five waves of two.
		if took < 5*latency-50*time.Millisecond {
			t.Errorf("10 requests of %s through 2 slots took %s; want ≥ %s", latency, took, 5*latency)
		}
		if n, _ := p.metrics().sum("llmproxy_requests_dropped_total", "group", "q-wait"); n != 0 {
			t.Errorf("llmproxy_requests_dropped_total{group=\"q-wait\"} = %v; want 0", n)
		}
	})

	t.Run("queue_timeout and client leaving", func(t *testing.T) {
		t.Parallel()
		p, qc := p.on(t), qc.on(t)
		url := "http://" + timeoutAddr + resChatPath
		depth := func() float64 {
			d, _ := p.metrics().sum("llmproxy_queue_depth", "group", "q-timeout")
			return d
		}
		// One slow request holds the only slot.
		held := make(chan resAnswer, 1)
		go func() {
			held <- resSend(context.Background(), resClient, url, resChat("hold", false), "X-Mock-Latency", "3s", "X-Test-Id", "hold")
		}()
		harness.Eventually(t, 2*time.Second, func() bool { return qc.stats().InFlight == 1 }, "the slot holder never reached qc")

		// A queued request gives up after queue_timeout.
		a := resSend(context.Background(), resClient, url, resChat("times out", false), "X-Test-Id", "timeout")
		resCheckProxyError(t, a, 503)
		if a.Elapsed < 250*time.Millisecond || a.Elapsed > 1500*time.Millisecond {
			t.Errorf("queued request answered after %s; want about queue_timeout (300ms)", a.Elapsed)
		}

		// A queued request whose client leaves frees its place.
		ctx, cancel := context.WithCancel(context.Background())
		left := make(chan resAnswer, 1)
		go func() { left <- resSend(ctx, resClient, url, resChat("leaves", false), "X-Test-Id", "leaves") }()
		if !resWait(time.Second, func() bool { return depth() == 1 }) {
			t.Errorf("llmproxy_queue_depth{group=\"q-timeout\"} = %v with one request waiting; want 1", depth())
		}
		cancel()
		if l := <-left; l.Err == nil {
			t.Errorf("cancelled client got %s; want its own context error", l)
		}
		if !resWait(time.Second, func() bool { return depth() == 0 }) {
			t.Errorf("llmproxy_queue_depth{group=\"q-timeout\"} = %v after the waiting client left; want 0", depth())
		}

		if h := <-held; h.Status != 200 {
			t.Errorf("slot holder: got %s; want 200", h)
		}
		for _, id := range []string{"timeout", "leaves"} {
			if n := len(qc.recordsWith("X-Test-Id", id)); n != 0 {
				t.Errorf("request %q reached the upstream %d times; want 0 (it never got a slot)", id, n)
			}
		}
		if n, _ := p.metrics().sum("llmproxy_requests_dropped_total", "group", "q-timeout"); n < 1 {
			t.Errorf("llmproxy_requests_dropped_total{group=\"q-timeout\"} = %v after a queue timeout; want ≥ 1", n)
		}
	})
}
