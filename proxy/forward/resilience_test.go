package forward

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/internal/wait"
)

// scripted is an upstream answering with the next status of its script (the last one
// repeats), recording bodies.
type scripted struct {
	mu         sync.Mutex
	statuses   []int
	retryAfter string
	bodies     []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	n := len(s.bodies)
	s.bodies = append(s.bodies, string(b))
	st := s.statuses[min(n, len(s.statuses)-1)]
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if st == 429 && s.retryAfter != "" {
		w.Header().Set("Retry-After", s.retryAfter)
	}
	w.WriteHeader(st)
	io.WriteString(w, `{"status":`+strconv.Itoa(st)+`}`)
}

func (s *scripted) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

// closedURL is an address nothing listens on.
func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

const retryCfg = "    http_client:\n      retry: {attempts: 2, initial: 100, max_backoff: \"5s\", retry_on: [\"429\", \"502\", \"503\", connect_error, timeout]}\n"

func TestRetry502Then200(t *testing.T) {
	up := &scripted{statuses: []int{502, 200}}
	s := httptest.NewServer(up)
	defer s.Close()
	p := newTestProxy(t, simpleConfig(retryCfg, "a"), s.URL)
	const body = `{"model":"gpt","messages":[{"role":"user","content":"hi"}]}`
	resp := post(t, p.URL+"/v1/chat/completions", body)
	if got := readAll(t, resp); resp.StatusCode != 200 || got != `{"status":200}` {
		t.Fatalf("got %d %q; want 200", resp.StatusCode, got)
	}
	calls := up.calls()
	if len(calls) != 2 || calls[0] != body || calls[1] != body {
		t.Errorf("upstream bodies = %q; want two identical copies of the request body", calls)
	}
	if n := counterValue(p.Runtime.Groups[0].RetryCounter("502")); n != 1 {
		t.Errorf("retries{reason=502} = %v; want 1", n)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	up := &scripted{statuses: []int{429, 200}, retryAfter: "1"}
	s := httptest.NewServer(up)
	defer s.Close()
	p := newTestProxy(t, simpleConfig(retryCfg, "a"), s.URL)
	start := time.Now()
	resp := post(t, p.URL+"/v1/chat/completions", `{}`)
	readAll(t, resp)
	elapsed := time.Since(start)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d; want 200", resp.StatusCode)
	}
	if elapsed < 900*time.Millisecond || elapsed > 4*time.Second {
		t.Errorf("took %v; want about 1s (Retry-After: 1)", elapsed)
	}
}

func TestNotRetried(t *testing.T) {
	up := &scripted{statuses: []int{400, 200}}
	s := httptest.NewServer(up)
	defer s.Close()
	p := newTestProxy(t, simpleConfig(retryCfg, "a"), s.URL)
	resp := post(t, p.URL+"/v1/chat/completions", `{}`)
	if got := readAll(t, resp); resp.StatusCode != 400 || got != `{"status":400}` {
		t.Errorf("got %d %q; want the upstream's 400 unchanged", resp.StatusCode, got)
	}
	if n := len(up.calls()); n != 1 {
		t.Errorf("upstream calls = %d; want 1", n)
	}
}

func TestRetriesSpentPassThrough(t *testing.T) {
	up := &scripted{statuses: []int{503}}
	s := httptest.NewServer(up)
	defer s.Close()
	p := newTestProxy(t, simpleConfig(retryCfg, "a"), s.URL)
	resp := post(t, p.URL+"/v1/chat/completions", `{}`)
	if got := readAll(t, resp); resp.StatusCode != 503 || got != `{"status":503}` {
		t.Errorf("got %d %q; want the upstream's last 503 unchanged", resp.StatusCode, got)
	}
	if n := len(up.calls()); n != 3 {
		t.Errorf("upstream calls = %d; want 3 (first try + 2 retries)", n)
	}
}

func TestFailover(t *testing.T) {
	good := &scripted{statuses: []int{200}}
	s := httptest.NewServer(good)
	defer s.Close()
	// a refuses connections; failover strategy tries it first, then b.
	p := newTestProxy(t, simpleConfig(retryCfg+"    balance: {strategy: failover}\n", "a", "b"), closedURL(t), s.URL)
	for i := 0; i < 3; i++ {
		resp := post(t, p.URL+"/v1/chat/completions", `{"i":1}`)
		if got := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q; want 200 through b", i, resp.StatusCode, got)
		}
	}
	if n := len(good.calls()); n != 3 {
		t.Errorf("b calls = %d; want 3", n)
	}
}

func TestBreakerOpensThenFast503(t *testing.T) {
	var hits atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(500)
	}))
	defer s.Close()
	cfg := `
http_server:
  forwards: [{name: f, port: 3999, default_group: g}]
upstreams:
  - name: a
    url: "{{U0}}"
    breaker: {threshold: 0.5, cooldown: 60, min_requests: 2}
  - name: b
    url: "{{U1}}"
    breaker: {threshold: 0.5, cooldown: 60, min_requests: 2}
upstream_groups:
  - name: g
    upstreams: [{name: a}, {name: b}]
`
	p := newTestProxy(t, cfg, s.URL, closedURL(t))
	// Until both breakers open, requests reach the upstreams (500 passes through, b gives 502).
	for i := 0; i < 4; i++ {
		resp := post(t, p.URL+"/x", `{}`)
		readAll(t, resp)
		if resp.StatusCode != 500 && resp.StatusCode != 502 {
			t.Fatalf("request %d: status %d; want 500 or 502", i, resp.StatusCode)
		}
	}
	for _, m := range p.Runtime.Groups[0].Members {
		if m.Breaker.Ready() {
			t.Fatalf("breaker of %s still ready after its failures", m.Name)
		}
	}
	before := hits.Load()
	start := time.Now()
	resp := post(t, p.URL+"/x", `{}`)
	checkProxyError(t, resp, 503, "no_healthy_upstream")
	if d := time.Since(start); d > time.Second {
		t.Errorf("all-open answer took %v; want fast", d)
	}
	if hits.Load() != before {
		t.Error("a request reached an upstream whose breaker is open")
	}
}

func TestProxyErrors(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	cfg := `
http_server:
  forwards:
    - name: f
      port: 3999
      default_group: dead
      max_body_bytes: 16
      routing:
        - {path: /slow, target_group: slow}
upstreams:
  - {name: dead, url: "{{U0}}"}
  - {name: slow, url: "{{U1}}"}
upstream_groups:
  - name: dead
    upstreams: [{name: dead}]
  - name: slow
    upstreams: [{name: slow}]
    http_client: {stream: false, timeout: {request: 1}}
`
	p := newTestProxy(t, cfg, closedURL(t), slow.URL)
	t.Run("502 unreachable", func(t *testing.T) {
		checkProxyError(t, post(t, p.URL+"/x", `{}`), 502, "upstream_unreachable")
	})
	t.Run("504 timeout", func(t *testing.T) {
		start := time.Now()
		checkProxyError(t, post(t, p.URL+"/slow", `{}`), 504, "upstream_timeout")
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Errorf("timed out after %v; want about 1s", d)
		}
	})
	t.Run("413 by Content-Length", func(t *testing.T) {
		checkProxyError(t, post(t, p.URL+"/x", `{"a":"0123456789abcdef"}`), 413, "body_too_large")
	})
	t.Run("413 chunked", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte(`{"a":"0123456789abcdef"}`))
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", p.URL+"/x", pr)
		// The dead upstream is never reached: the body cap trips while streaming the body
		// to it, or before. Either way the client sees an error status.
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != 413 && resp.StatusCode != 502 {
			t.Errorf("status = %d; want 413 (or 502 when the dial failed first)", resp.StatusCode)
		}
	})
}

func TestConcurrencyDropAndQueue(t *testing.T) {
	for _, drop := range []bool{true, false} {
		t.Run("drop_excess="+strconv.FormatBool(drop), func(t *testing.T) {
			release := make(chan struct{})
			var inUp, maxUp atomic.Int64
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := inUp.Add(1)
				for {
					m := maxUp.Load()
					if n <= m || maxUp.CompareAndSwap(m, n) {
						break
					}
				}
				<-release
				inUp.Add(-1)
			}))
			defer s.Close()
			extra := "    concurrency: {max: 2, queue: 2, drop_excess: " + strconv.FormatBool(drop) + ", queue_timeout: \"30s\"}\n"
			p := newTestProxy(t, simpleConfig(extra, "a"), s.URL)
			lim := p.Runtime.Groups[0].Limiter
			statuses := make(chan int, 10)
			for i := 0; i < 10; i++ {
				go func() {
					resp, err := http.Post(p.URL+"/x", "application/json", nil)
					if err != nil {
						statuses <- -1
						return
					}
					io.ReadAll(resp.Body)
					resp.Body.Close()
					statuses <- resp.StatusCode
				}()
			}
			count := map[int]int{}
			if drop {
				// 2 in flight, 2 queued, 6 dropped at once.
				for i := 0; i < 6; i++ {
					count[<-statuses]++
				}
				if count[503] != 6 {
					t.Fatalf("first 6 answers = %v; want six 503", count)
				}
				wait.For(t, "2 in flight and 2 queued", func() bool { return inUp.Load() == 2 && lim.Waiting() == 2 })
				close(release)
				for i := 0; i < 4; i++ {
					count[<-statuses]++
				}
				if count[200] != 4 {
					t.Errorf("answers = %v; want 4×200 and 6×503", count)
				}
			} else {
				wait.For(t, "2 in flight", func() bool { return inUp.Load() == 2 })
				close(release)
				for i := 0; i < 10; i++ {
					count[<-statuses]++
				}
				if count[200] != 10 {
					t.Errorf("answers = %v; want 10×200", count)
				}
			}
			if m := maxUp.Load(); m > 2 {
				t.Errorf("at most %d at the upstream at once; want ≤ 2", m)
			}
		})
	}
}

func TestQueueFullBody(t *testing.T) {
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer s.Close()
	defer close(release)
	p := newTestProxy(t, simpleConfig("    concurrency: {max: 1, queue: 0, drop_excess: true}\n", "a"), s.URL)
	go func() {
		if resp, err := http.Post(p.URL+"/x", "application/json", nil); err == nil {
			resp.Body.Close()
		}
	}()
	wait.For(t, "one in flight", func() bool { return p.Runtime.Groups[0].Limiter.InFlight() == 1 })
	eb := checkProxyError(t, post(t, p.URL+"/x", `{}`), 503, "queue_full")
	if eb.Error.Message != "request dropped: queue is full" {
		t.Errorf("message = %q", eb.Error.Message)
	}
	if n := counterValue(p.Runtime.Groups[0].DroppedFull); n != 1 {
		t.Errorf("dropped{queue_full} = %v; want 1", n)
	}
}

func TestRateLimit(t *testing.T) {
	s := httptest.NewServer(&scripted{statuses: []int{200}})
	defer s.Close()
	cfg := `
http_server:
  forwards:
    - name: f
      port: 3999
      default_group: g
      ratelimit: {enabled: true, per_second: 1, burst: 2}
upstreams: [{name: a, url: "{{U0}}"}]
upstream_groups: [{name: g, upstreams: [{name: a}]}]
`
	p := newTestProxy(t, cfg, s.URL)
	for i := 0; i < 2; i++ {
		if resp := post(t, p.URL+"/x", `{}`); resp.StatusCode != 200 {
			t.Fatalf("request %d within burst: %d", i, resp.StatusCode)
		} else {
			readAll(t, resp)
		}
	}
	resp := post(t, p.URL+"/x", `{}`)
	ra := resp.Header.Get("Retry-After")
	checkProxyError(t, resp, 429, "rate_limited")
	if n, err := strconv.Atoi(ra); err != nil || n < 1 {
		t.Errorf("Retry-After = %q; want whole seconds ≥ 1", ra)
	}
	if n := counterValue(p.Runtime.Forwards[0].RateLimit.Rejected); n != 1 {
		t.Errorf("ratelimit_total = %v; want 1", n)
	}
}

func TestBreakerRecoversAndFailoverReturns(t *testing.T) {
	var aBroken atomic.Bool
	aBroken.Store(true)
	var aHits, bHits atomic.Int64
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		aHits.Add(1)
		if aBroken.Load() {
			w.WriteHeader(500)
			return
		}
		io.WriteString(w, "a")
	}))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bHits.Add(1)
		io.WriteString(w, "b")
	}))
	defer b.Close()
	cfg := `
http_server:
  forwards: [{name: f, port: 3999, default_group: g}]
upstreams:
  - {name: a, url: "{{U0}}", breaker: {threshold: 0.5, cooldown: 1, min_requests: 2}}
  - {name: b, url: "{{U1}}"}
upstream_groups:
  - name: g
    upstreams: [{name: a}, {name: b}]
    balance: {strategy: failover}
    http_client:
      retry: {attempts: 1, initial: 100, retry_on: ["500"]}
`
	p := newTestProxy(t, cfg, a.URL, b.URL)
	brk := p.Runtime.Groups[0].Members[0].Breaker
	// While a fails, clients see no error: the retry fails over to b.
	for i := 0; i < 4; i++ {
		resp := post(t, p.URL+"/x", `{}`)
		if got := readAll(t, resp); resp.StatusCode != 200 || got != "b" {
			t.Fatalf("request %d: %d %q; want 200 from b", i, resp.StatusCode, got)
		}
	}
	if brk.Ready() {
		t.Fatal("a's breaker did not open")
	}
	hitsWhileOpen := aHits.Load()
	readAll(t, post(t, p.URL+"/x", `{}`))
	if aHits.Load() != hitsWhileOpen {
		t.Error("an open breaker let a request through")
	}
	aBroken.Store(false)
	wait.For(t, "half-open after cooldown", brk.Ready)
	// The probe goes to a (first in failover order), closes the breaker, traffic returns.
	for i := 0; i < 3; i++ {
		resp := post(t, p.URL+"/x", `{}`)
		if got := readAll(t, resp); got != "a" {
			t.Fatalf("after recovery request %d answered by %q; want a", i, got)
		}
	}
	if st := brk.State().String(); st != "closed" {
		t.Errorf("breaker state %s; want closed", st)
	}
}

// A retry does not take the next request's round-robin turn: with one member failing (and
// its breaker not opening), first attempts still alternate between the members instead of
// all landing on the failing one.
func TestRoundRobinRetryKeepsRotation(t *testing.T) {
	var badHits atomic.Int64
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		w.WriteHeader(502)
	}))
	defer bad.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
	}))
	defer good.Close()
	cfg := `
http_server:
  forwards: [{name: f, port: 3999, default_group: g}]
upstreams:
  - name: a
    url: "{{U0}}"
    breaker: {threshold: 1.0, min_requests: 10000}
  - name: b
    url: "{{U1}}"
upstream_groups:
  - name: g
    upstreams: [{name: a}, {name: b}]
    http_client:
      retry: {attempts: 1, initial: 100, max_backoff: "100ms", retry_on: ["502"]}
`
	p := newTestProxy(t, cfg, bad.URL, good.URL)
	const n = 10
	for i := range n {
		resp := post(t, p.URL+"/v1/chat/completions", `{}`)
		if got := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q; want 200 (b, directly or on retry)", i, resp.StatusCode, got)
		}
	}
	if got := badHits.Load(); got > n/2+1 {
		t.Errorf("failing member a got %d of %d first attempts; want about half (retries must not take turns)", got, n)
	}
}
