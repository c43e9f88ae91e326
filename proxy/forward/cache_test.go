package forward

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/llmproxy-go/llmproxy/proxy/cache"
	"github.com/llmproxy-go/llmproxy/proxy/internal/wait"
)

// cachingUpstream answers chat requests with a counter in the body, so two answers are
// told apart; "stream":true gets an event stream. Its hold channel, when not nil, holds
// every answer after its first event until closed.
type cachingUpstream struct {
	*httptest.Server
	calls atomic.Int64
	hold  chan struct{}
	// headers are added to every answer; status (0 = 200) is its status.
	headers http.Header
	status  int
}

func newCachingUpstream(t *testing.T) *cachingUpstream {
	u := &cachingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := u.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		for k, v := range u.headers {
			w.Header()[k] = v
		}
		status := u.status
		if status == 0 {
			status = 200
		}
		w.Header().Set("X-Request-Id", fmt.Sprintf("up-%d", n))
		if strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(status)
			fmt.Fprintf(w, "data: {\"n\":%d,\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n", n)
			w.(http.Flusher).Flush()
			if u.hold != nil {
				select {
				case <-u.hold:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
			fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n")
			return
		}
		if u.hold != nil {
			select {
			case <-u.hold:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"n":%d,"usage":{"prompt_tokens":7,"completion_tokens":2}}`, n)
	}))
	t.Cleanup(u.Close)
	return u
}

func cacheProxy(t *testing.T, cacheBlock string, up string) *testProxy {
	t.Helper()
	return newTestProxy(t, simpleConfig("    cache: "+cacheBlock+"\n", "a"), up)
}

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`

func TestCacheHitIsByteIdentical(t *testing.T) {
	up := newCachingUpstream(t)
	up.headers = http.Header{"Openai-Organization": {"org-1"}, "X-Ratelimit-Remaining-Requests": {"9"}}
	p := cacheProxy(t, "{enabled: true}", up.URL)
	url := p.URL + "/v1/chat/completions"

	r1 := post(t, url, chatBody)
	b1 := readAll(t, r1)
	if r1.Header.Get("X-Proxy-Cache") != "MISS" || r1.Header.Get("Cache-Status") != "llmproxy; fwd=uri-miss" {
		t.Errorf("first answer: X-PROXY-CACHE %q, Cache-Status %q; want MISS, fwd=uri-miss", r1.Header.Get("X-Proxy-Cache"), r1.Header.Get("Cache-Status"))
	}
	// Reordered keys and other whitespace: the same request.
	r2 := post(t, url, `{ "messages": [{"content":"hi","role":"user"}], "model": "m" }`)
	b2 := readAll(t, r2)
	if b2 != b1 || up.calls.Load() != 1 {
		t.Fatalf("second answer %q (upstream calls %d); want %q from the cache and 1 call", b2, up.calls.Load(), b1)
	}
	h := r2.Header
	if h.Get("X-Proxy-Cache") != "HIT" || !strings.HasPrefix(h.Get("Cache-Status"), "llmproxy; hit; ttl=") || h.Get("Age") == "" {
		t.Errorf("hit headers: X-PROXY-CACHE %q, Cache-Status %q, Age %q", h.Get("X-Proxy-Cache"), h.Get("Cache-Status"), h.Get("Age"))
	}
	if h.Get("Content-Type") != "application/json" || h.Get("Openai-Organization") != "org-1" || h.Get("X-Upstream-Request-Id") != "up-1" {
		t.Errorf("stored headers not replayed: %v", h)
	}
	if h.Get("X-Ratelimit-Remaining-Requests") != "" {
		t.Error("a rate-limit header of the original exchange was replayed")
	}
	if h.Get("X-Request-Id") == "" || h.Get("X-Request-Id") == r1.Header.Get("X-Request-Id") {
		t.Errorf("X-Request-Id %q on the hit; want this request's own", h.Get("X-Request-Id"))
	}
	// A different model, or another credential, is another key.
	readAll(t, post(t, url, strings.Replace(chatBody, `"m"`, `"m2"`, 1)))
	readAll(t, post(t, url, chatBody, "Authorization", "Bearer other"))
	if up.calls.Load() != 3 {
		t.Errorf("upstream calls %d; want 3 (a changed model and another caller miss)", up.calls.Load())
	}
	// Hits count their tokens apart from the upstream's, and no upstream attempt.
	if got := counterValue(p.Metrics.CacheTokens.WithLabelValues("g", "completion")); got != 2 {
		t.Errorf("llmproxy_cache_tokens_total{type=completion} %v; want 2", got)
	}
	if got := counterValue(p.Metrics.CacheHits.WithLabelValues("g")); got != 1 {
		t.Errorf("hits %v; want 1", got)
	}
	if got := upstreamRequests(t, p, "a"); got != 3 {
		t.Errorf("upstream attempts %v; want 3", got)
	}
}

func TestCacheStreamReplaysTheSameFrames(t *testing.T) {
	up := newCachingUpstream(t)
	p := cacheProxy(t, "{enabled: true}", up.URL)
	url := p.URL + "/v1/chat/completions"
	body := `{"model":"m","stream":true,"messages":[]}`
	b1 := readAll(t, post(t, url, body))
	r2 := post(t, url, body)
	b2 := readAll(t, r2)
	if b1 != b2 || up.calls.Load() != 1 || r2.Header.Get("X-Proxy-Cache") != "HIT" {
		t.Fatalf("replay %q (calls %d, %q); want %q, 1 call, HIT", b2, up.calls.Load(), r2.Header.Get("X-Proxy-Cache"), b1)
	}
	if r2.Header.Get("Content-Type") != "text/event-stream" || r2.ContentLength != -1 {
		t.Errorf("replayed stream: Content-Type %q, length %d", r2.Header.Get("Content-Type"), r2.ContentLength)
	}
	// The non-streaming form of the request is another key.
	readAll(t, post(t, url, `{"model":"m","stream":false,"messages":[]}`))
	if up.calls.Load() != 2 {
		t.Errorf("a non-streaming request was answered from the stream's entry")
	}
}

func TestCacheStoresOnlyWhatItShould(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		headers http.Header
		block   string
		body    string
	}{
		{"error answer", 500, nil, "{enabled: true}", chatBody},
		{"4xx answer", 400, nil, "{enabled: true}", chatBody},
		{"upstream no-store", 200, http.Header{"Cache-Control": {"no-store"}}, "{enabled: true}", chatBody},
		{"private answer in a shared cache", 200, http.Header{"Cache-Control": {"private"}}, "{enabled: true, shared: true}", chatBody},
		{"above max_object_bytes", 200, nil, "{enabled: true, max_object_bytes: 10, max_bytes: 100000}", chatBody},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newCachingUpstream(t)
			up.status, up.headers = tc.status, tc.headers
			p := cacheProxy(t, tc.block, up.URL)
			for range 2 {
				r := post(t, p.URL+"/v1/chat/completions", tc.body)
				readAll(t, r)
				if r.Header.Get("X-Proxy-Cache") != "MISS" {
					t.Errorf("X-PROXY-CACHE %q; want MISS", r.Header.Get("X-Proxy-Cache"))
				}
			}
			if up.calls.Load() != 2 {
				t.Errorf("upstream calls %d; want 2 (nothing stored)", up.calls.Load())
			}
		})
	}
}

// A stream that breaks is not stored, and the client sees it break.
func TestCacheBrokenStreamNotStored(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"x\":1}\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer up.Close()
	p := cacheProxy(t, "{enabled: true}", up.URL)
	for range 2 {
		b := readAll(t, post(t, p.URL+"/v1/chat/completions", `{"stream":true}`))
		if !strings.Contains(b, "stream_interrupted") {
			t.Errorf("broken stream relayed as %q; want the interruption event", b)
		}
	}
	if calls.Load() != 2 {
		t.Errorf("upstream calls %d; want 2", calls.Load())
	}
}

func TestCacheRequestDirectives(t *testing.T) {
	up := newCachingUpstream(t)
	p := cacheProxy(t, "{enabled: true}", up.URL)
	url := p.URL + "/v1/chat/completions"
	send := func(cc string) (*http.Response, string) {
		r := post(t, url, chatBody, "Cache-Control", cc)
		return r, readAll(t, r)
	}
	// only-if-cached on a miss: 504, upstream untouched.
	r, _ := send("only-if-cached")
	if r.StatusCode != 504 || up.calls.Load() != 0 || r.Header.Get("X-Proxy-Cache") != "MISS" {
		t.Fatalf("only-if-cached miss: %d, calls %d, %q; want 504, 0, MISS", r.StatusCode, up.calls.Load(), r.Header.Get("X-Proxy-Cache"))
	}
	// no-store: neither looked up nor stored.
	r, _ = send("no-store")
	if r.Header.Get("X-Proxy-Cache") != "BYPASS" || r.Header.Get("Cache-Status") != "llmproxy; fwd=bypass" {
		t.Errorf("no-store: %q %q; want BYPASS", r.Header.Get("X-Proxy-Cache"), r.Header.Get("Cache-Status"))
	}
	if r, _ := send("only-if-cached"); r.StatusCode != 504 {
		t.Errorf("no-store stored its answer: only-if-cached got %d", r.StatusCode)
	}
	// A plain request stores; only-if-cached then hits.
	_, first := send("")
	r, b := send("only-if-cached")
	if r.StatusCode != 200 || b != first || r.Header.Get("X-Proxy-Cache") != "HIT" {
		t.Errorf("only-if-cached after a store: %d %q %q", r.StatusCode, b, r.Header.Get("X-Proxy-Cache"))
	}
	// no-cache: goes upstream (fwd=request) and refreshes the entry.
	r, fresh := send("no-cache")
	if fresh == first || r.Header.Get("Cache-Status") != "llmproxy; fwd=request" {
		t.Errorf("no-cache: %q %q; want a fresh answer, fwd=request", fresh, r.Header.Get("Cache-Status"))
	}
	if _, b := send(""); b != fresh {
		t.Errorf("after no-cache the entry holds %q; want the refreshed %q", b, fresh)
	}
	// max-age=0 refuses any entry of age above 0 s; max-age=60 accepts it.
	calls := up.calls.Load()
	wait.For(t, "the entry to age a second", func() bool {
		r, _ := send("only-if-cached")
		return r.Header.Get("Age") != "0"
	})
	r, _ = send("max-age=0")
	if r.Header.Get("Cache-Status") != "llmproxy; fwd=stale" || up.calls.Load() != calls+1 {
		t.Errorf("max-age=0: %q, calls %d; want fwd=stale and an upstream call", r.Header.Get("Cache-Status"), up.calls.Load()-calls)
	}
	if r, _ := send("max-age=60"); r.Header.Get("X-Proxy-Cache") != "HIT" {
		t.Errorf("max-age=60: %q; want HIT", r.Header.Get("X-Proxy-Cache"))
	}
	// Other methods are not cached.
	req, _ := http.NewRequest("PUT", url, strings.NewReader(chatBody))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.Header.Get("X-Proxy-Cache") != "BYPASS" {
		t.Errorf("PUT: %q; want BYPASS", resp.Header.Get("X-Proxy-Cache"))
	}
}

func TestCacheTTL(t *testing.T) {
	up := newCachingUpstream(t)
	p := cacheProxy(t, `{enabled: true, ttl: "1s"}`, up.URL)
	url := p.URL + "/v1/chat/completions"
	readAll(t, post(t, url, chatBody))
	wait.For(t, "the entry to expire", func() bool {
		r := post(t, url, chatBody, "Cache-Control", "only-if-cached")
		readAll(t, r)
		return r.StatusCode == 504
	})
	readAll(t, post(t, url, chatBody))
	if up.calls.Load() != 2 {
		t.Errorf("upstream calls %d; want 2 (the entry expired)", up.calls.Load())
	}
}

// Identical requests in flight share one upstream request, a follower that arrives
// mid-stream included; streams and plain answers alike.
func TestCacheSingleFlight(t *testing.T) {
	for _, body := range []string{chatBody, `{"model":"m","stream":true}`} {
		t.Run(fmt.Sprintf("stream=%v", strings.Contains(body, "stream")), func(t *testing.T) {
			up := newCachingUpstream(t)
			up.hold = make(chan struct{})
			p := cacheProxy(t, "{enabled: true}", up.URL)
			url := p.URL + "/v1/chat/completions"
			const n = 20
			results := make([]string, n)
			hdrs := make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := post(t, url, body)
					hdrs[i] = r.Header.Get("X-Proxy-Cache")
					results[i] = readAll(t, r)
				}()
			}
			wait.For(t, "every request to join the flight", func() bool {
				st := flights(p)
				return st.Flights == 1 && st.Followers == n-1
			})
			close(up.hold)
			wg.Wait()
			if up.calls.Load() != 1 {
				t.Errorf("%d identical requests made %d upstream requests; want 1", n, up.calls.Load())
			}
			misses := 0
			for i := range n {
				if results[i] != results[0] || results[i] == "" {
					t.Errorf("client %d got %q; want %q", i, results[i], results[0])
				}
				if hdrs[i] == "MISS" {
					misses++
				}
			}
			if misses != 1 {
				t.Errorf("%d answers say MISS; want 1 (the others HIT)", misses)
			}
			if got := counterValue(p.Metrics.CacheCoalesced.WithLabelValues("g")); got != n-1 {
				t.Errorf("coalesced %v; want %d", got, n-1)
			}
		})
	}
}

// flights describes the flights of the proxy's group g.
func flights(p *testProxy) cache.FlightStats { return p.Runtime.Groups[0].Cache.Flights().Stats() }

// A leader whose upstream fails releases its followers: each goes upstream itself and
// nobody receives the leader's error.
func TestCacheSingleFlightLeaderFails(t *testing.T) {
	var calls atomic.Int64
	hold := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-hold
			w.WriteHeader(503)
			io.WriteString(w, `{"error":"down"}`)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	p := cacheProxy(t, "{enabled: true}", up.URL)
	url := p.URL + "/v1/chat/completions"
	leader := make(chan int, 1)
	go func() {
		r := post(t, url, chatBody)
		readAll(t, r)
		leader <- r.StatusCode
	}()
	wait.For(t, "the leader upstream", func() bool { return calls.Load() == 1 })
	const n = 5
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := post(t, url, chatBody)
			readAll(t, r)
			statuses[i] = r.StatusCode
		}()
	}
	wait.For(t, "followers to join", func() bool { return flights(p).Followers == n })
	close(hold)
	wg.Wait()
	if s := <-leader; s != 503 {
		t.Errorf("leader got %d; want the upstream's 503", s)
	}
	for i, s := range statuses {
		if s != 200 {
			t.Errorf("follower %d got %d; want 200 from its own upstream request", i, s)
		}
	}
}

// A leader whose client leaves mid-stream keeps the answer going for its follower, which
// gets all of it; the answer is stored.
func TestCacheLeaderLeavesFollowerFinishes(t *testing.T) {
	up := newCachingUpstream(t)
	up.hold = make(chan struct{})
	p := cacheProxy(t, "{enabled: true}", up.URL)
	url := p.URL + "/v1/chat/completions"
	body := `{"stream":true}`

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	lr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := bufio.NewReader(lr.Body).ReadString('\n')
	if !strings.HasPrefix(first, "data: ") {
		t.Fatalf("leader's first line %q", first)
	}
	got := make(chan string, 1)
	go func() { got <- readAll(t, post(t, url, body)) }()
	wait.For(t, "the follower to join", func() bool { return flights(p).Followers == 1 })
	cancel()
	lr.Body.Close()
	wait.For(t, "the proxy to see the leader's client leave", func() bool { return flights(p).LeadersGone == 1 })
	close(up.hold)
	b := <-got
	if !strings.HasSuffix(b, "data: [DONE]\n\n") || !strings.HasPrefix(b, "data: {\"n\":1") {
		t.Fatalf("follower got %q; want the whole stream", b)
	}
	wait.For(t, "the answer to be stored", func() bool {
		return counterValue(p.Metrics.CacheStores.WithLabelValues("g")) == 1
	})
	if r := readAll(t, post(t, url, body)); r != b || up.calls.Load() != 1 {
		t.Errorf("after the leader left: %q, calls %d; want the stored stream and 1 call", r, up.calls.Load())
	}
}

func TestCacheRedisMissingServesUncached(t *testing.T) {
	up := newCachingUpstream(t)
	p := cacheProxy(t, "{enabled: true, backend: redis}", up.URL)
	for range 2 {
		r := post(t, p.URL+"/v1/chat/completions", chatBody)
		readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("X-Proxy-Cache") != "" {
			t.Errorf("uncached group: %d, X-PROXY-CACHE %q; want 200 and no cache header", r.StatusCode, r.Header.Get("X-Proxy-Cache"))
		}
	}
	if up.calls.Load() != 2 {
		t.Errorf("upstream calls %d; want 2", up.calls.Load())
	}
}

// The server span records the cache result; a hit has no client span.
func TestCacheSpans(t *testing.T) {
	up := newCachingUpstream(t)
	url, exp := tracedProxy(t, simpleConfig("    cache: {enabled: true}\n", "a"), up.URL)
	for range 2 {
		readAll(t, post(t, url+"/v1/chat/completions", chatBody))
	}
	wait.For(t, "three spans", func() bool { return len(exp.GetSpans()) == 3 })
	var results []string
	clients := 0
	for _, sp := range exp.GetSpans() {
		if sp.SpanKind == trace.SpanKindClient {
			clients++
			continue
		}
		for _, kv := range sp.Attributes {
			if kv.Key == "llmproxy.cache" {
				results = append(results, kv.Value.Emit())
			}
		}
	}
	if clients != 1 || strings.Join(results, ",") != "miss,hit" {
		t.Errorf("%d client spans, server span cache results %v; want 1 and [miss hit]", clients, results)
	}
}

// A consumer's stream whose usage its client did not ask for is stripped of it (usage.go):
// the entry holds the stream as that client got it, and a client that asked for usage has
// another key and gets the usage. The stripped entry's hits still count its tokens.
func TestCacheConsumerStrippedStream(t *testing.T) {
	up := newRecordingUpstream(t)
	cfg := strings.Replace(consumerConfig("required", "{}"), "{name: g, upstreams: [{name: a}]}",
		"{name: g, upstreams: [{name: a}], cache: {enabled: true}}", 1)
	p := newTestProxy(t, cfg, up.url)
	url := p.URL + "/v1/chat/completions"
	calls := func() int {
		up.mu.Lock()
		defer up.mu.Unlock()
		return len(up.bodies)
	}
	plain := `{"model":"gpt-4o","stream":true}`
	asked := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`
	for i, tc := range []struct {
		body, want, cache string
		calls             int
	}{
		{plain, openAIStream(false, "\n"), "MISS", 1},
		{plain, openAIStream(false, "\n"), "HIT", 1},
		{asked, openAIStream(true, "\n"), "MISS", 2},
		{asked, openAIStream(true, "\n"), "HIT", 2},
	} {
		resp := post(t, url, tc.body, "Authorization", "Bearer llmp-team")
		if got := readAll(t, resp); got != tc.want {
			t.Fatalf("request %d (%s): got\n%s\nwant\n%s", i, tc.body, got, tc.want)
		}
		if c := resp.Header.Get("X-Proxy-Cache"); c != tc.cache || calls() != tc.calls {
			t.Errorf("request %d: X-PROXY-CACHE %q after %d upstream calls; want %s after %d", i, c, calls(), tc.cache, tc.calls)
		}
	}
	// Both hits count the entry's completion tokens (2 each), the stripped one included.
	if got := counterValue(p.Metrics.CacheTokens.WithLabelValues("g", "completion")); got != 4 {
		t.Errorf("llmproxy_cache_tokens_total{type=completion} %v; want 4", got)
	}
}
