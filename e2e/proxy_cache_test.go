package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of the response cache: real proxies, mockllm, real Redis.

// cacheConfig is one forward over one group "{{.Group}}" of mockllm "up" with the cache
// block {{.Cache}}.
const cacheConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: {{.Group}}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - name: {{.Group}}
    upstreams: [{name: up}]
    cache: {{.Cache}}
`

// cacheProxy starts a proxy on cacheConfig and returns it with its chat completions URL.
func cacheProxy(t *testing.T, m *mock, group, cacheBlock string, env ...string) (*proxy, string) {
	t.Helper()
	port := harness.FreePort(t)
	p := startProxy(t, renderConfig(t, cacheConfig, map[string]any{"Port": port, "URL": m.URL, "Group": group, "Cache": cacheBlock}), env...)
	return p, fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port)
}

// cacheMetric sums a metric of p's /metrics over the samples with the given labels.
func cacheMetric(t *testing.T, p *proxy, name string, labels ...string) float64 {
	t.Helper()
	v, _ := (&resProxy{t: t, admin: p.Admin}).metrics().sum(name, labels...)
	return v
}

// sharedRedisEnv points a proxy at the shared Redis. Tests that count hits give lookups a
// generous deadline: under -race on a busy machine a lookup can take longer than the
// production default, and would then (correctly) be a miss.
var sharedRedisEnv = []string{"LLMPROXY_REDIS_URL=redis://127.0.0.1:6379/0", "LLMPROXY_CACHE_LOOKUP_TIMEOUT=1s"}

// uniqueGroup is a group name no other run uses, so Redis keys never collide.
func uniqueGroup(prefix string) string { return fmt.Sprintf("%s-%x", prefix, rand.Uint64()) }

func TestProxyCacheKeysAndHits(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	m := mocks["up"]
	_, url := cacheProxy(t, m, "g", "{enabled: true}")
	_, sharedURL := cacheProxy(t, m, "g", "{enabled: true, shared: true}")

	body := `{"model":"gpt-4o-mini","temperature":0.2,"messages":[{"role":"user","content":"cache me"}]}`
	cases := []struct {
		name, url, body, auth, want string
	}{
		{"first", url, body, "Bearer client-a", "MISS"},
		{"same again", url, body, "Bearer client-a", "HIT"},
		{"reordered keys and whitespace", url, `{ "messages": [ {"content":"cache me","role":"user"} ], "temperature": 0.2, "model": "gpt-4o-mini" }`, "Bearer client-a", "HIT"},
		{"other model", url, strings.Replace(body, "gpt-4o-mini", "gpt-4o", 1), "Bearer client-a", "MISS"},
		{"other temperature", url, strings.Replace(body, "0.2", "0.7", 1), "Bearer client-a", "MISS"},
		{"other credential, not shared", url, body, "Bearer client-b", "MISS"},
		{"shared: first", sharedURL, body, "Bearer client-a", "MISS"},
		{"shared: other credential", sharedURL, body, "Bearer client-b", "HIT"},
	}
	var first answer
	for i, tc := range cases {
		before := len(m.requests(t))
		a := mustSend(t, http.MethodPost, tc.url, tc.body, "Authorization", tc.auth)
		if a.Status != 200 {
			t.Fatalf("%s: status %d: %s", tc.name, a.Status, a.Body)
		}
		got := a.Header.Get("X-PROXY-CACHE")
		upstream := len(m.requests(t)) - before
		if got != tc.want || (tc.want == "HIT") != (upstream == 0) {
			t.Errorf("%s: X-PROXY-CACHE %q with %d upstream requests; want %s", tc.name, got, upstream, tc.want)
		}
		if i == 0 {
			first = a
		}
		if tc.name == "same again" {
			if string(a.Body) != string(first.Body) {
				t.Errorf("hit body %q; want the first answer byte for byte: %q", a.Body, first.Body)
			}
			if !strings.HasPrefix(a.Header.Get("Cache-Status"), "llmproxy; hit; ttl=") || a.Header.Get("Age") == "" {
				t.Errorf("hit: Cache-Status %q, Age %q", a.Header.Get("Cache-Status"), a.Header.Get("Age"))
			}
		}
	}
}

// A streamed answer with reasoning, a tool call and usage replays frame for frame on a hit,
// through the official OpenAI and Anthropic Go SDKs' stream parsers.
func TestProxyCacheStreamsThroughSDKs(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	m := mocks["up"]
	p, url := cacheProxy(t, m, "g", "{enabled: true}")
	base := strings.TrimSuffix(url, "/chat/completions")
	headers := map[string]string{"X-Mock-Reasoning": "3", "X-Mock-Tool": "get_weather", "X-Mock-Chunks": "4"}

	t.Run("openai", func(t *testing.T) {
		opts := []openaioption.RequestOption{openaioption.WithBaseURL(base + "/"), openaioption.WithAPIKey("sk-openai-client"), openaioption.WithMaxRetries(0)}
		for k, v := range headers {
			opts = append(opts, openaioption.WithHeader(k, v))
		}
		client := openai.NewClient(opts...)
		params := openai.ChatCompletionNewParams{
			Model:         "gpt-4o-mini",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather in Paris?")},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}
		run := func() ([]string, openai.ChatCompletion, string) {
			var frames []string
			var reasoning strings.Builder
			acc := openai.ChatCompletionAccumulator{}
			stream := client.Chat.Completions.NewStreaming(context.Background(), params)
			for stream.Next() {
				chunk := stream.Current()
				frames = append(frames, chunk.RawJSON())
				acc.AddChunk(chunk)
				for _, c := range chunk.Choices {
					if f, ok := c.Delta.JSON.ExtraFields["reasoning_content"]; ok {
						reasoning.WriteString(strings.Trim(f.Raw(), `"`))
					}
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			return frames, acc.ChatCompletion, reasoning.String()
		}
		before := len(m.requests(t))
		miss, missAcc, missReasoning := run()
		hit, hitAcc, hitReasoning := run()
		if n := len(m.requests(t)) - before; n != 1 {
			t.Errorf("two identical streams made %d upstream requests; want 1", n)
		}
		if strings.Join(hit, "\n") != strings.Join(miss, "\n") || len(hit) < 8 {
			t.Errorf("replayed %d frames; want the %d original frames, identical", len(hit), len(miss))
		}
		for name, cc := range map[string]openai.ChatCompletion{"miss": missAcc, "hit": hitAcc} {
			if len(cc.Choices) != 1 || len(cc.Choices[0].Message.ToolCalls) != 1 {
				t.Fatalf("%s: accumulated %+v; want one choice with one tool call", name, cc.Choices)
			}
			tc := cc.Choices[0].Message.ToolCalls[0]
			if tc.Function.Name != "get_weather" || tc.Function.Arguments != `{"city":"Paris"}` || cc.Choices[0].FinishReason != "tool_calls" {
				t.Errorf("%s: tool call %+v, finish %q", name, tc.Function, cc.Choices[0].FinishReason)
			}
			if cc.Choices[0].Message.Content != "Hello from mockllm," || cc.Usage.CompletionTokens != 4 {
				t.Errorf("%s: content %q, usage %+v", name, cc.Choices[0].Message.Content, cc.Usage)
			}
		}
		if missReasoning != "Let me think about the" || hitReasoning != missReasoning {
			t.Errorf("reasoning: miss %q, hit %q", missReasoning, hitReasoning)
		}
	})

	t.Run("anthropic", func(t *testing.T) {
		opts := []anthropicoption.RequestOption{anthropicoption.WithBaseURL(strings.TrimSuffix(base, "/v1") + "/"), anthropicoption.WithAPIKey("sk-ant-client"), anthropicoption.WithMaxRetries(0)}
		for k, v := range headers {
			opts = append(opts, anthropicoption.WithHeader(k, v))
		}
		client := anthropic.NewClient(opts...)
		params := anthropic.MessageNewParams{
			Model:     "claude-3-5-haiku-latest",
			MaxTokens: 256,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("weather in Paris?"))},
		}
		run := func() ([]string, anthropic.Message) {
			var frames []string
			msg := anthropic.Message{}
			stream := client.Messages.NewStreaming(context.Background(), params)
			for stream.Next() {
				ev := stream.Current()
				frames = append(frames, ev.RawJSON())
				if err := msg.Accumulate(ev); err != nil {
					t.Fatalf("accumulate: %v", err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			return frames, msg
		}
		before := len(m.requests(t))
		miss, missMsg := run()
		hit, hitMsg := run()
		if n := len(m.requests(t)) - before; n != 1 {
			t.Errorf("two identical streams made %d upstream requests; want 1", n)
		}
		if strings.Join(hit, "\n") != strings.Join(miss, "\n") || len(hit) < 10 {
			t.Errorf("replayed %d events; want the %d original events, identical", len(hit), len(miss))
		}
		for name, msg := range map[string]anthropic.Message{"miss": missMsg, "hit": hitMsg} {
			if len(msg.Content) != 3 {
				t.Fatalf("%s: %d content blocks; want thinking, text, tool_use", name, len(msg.Content))
			}
			if th := msg.Content[0].AsThinking(); th.Thinking != "Let me think about the" || th.Signature == "" {
				t.Errorf("%s: thinking %+v", name, th)
			}
			if tx := msg.Content[1].AsText(); tx.Text != "Hello from mockllm," {
				t.Errorf("%s: text %q", name, tx.Text)
			}
			if tu := msg.Content[2].AsToolUse(); tu.Name != "get_weather" || string(tu.Input) != `{"city":"Paris"}` {
				t.Errorf("%s: tool use %s %s", name, tu.Name, tu.Input)
			}
			if msg.StopReason != "tool_use" || msg.Usage.OutputTokens != 4 {
				t.Errorf("%s: stop %q, usage %+v", name, msg.StopReason, msg.Usage)
			}
		}
	})

	// Hits count the stored answers' tokens, apart from upstream tokens.
	if v := cacheMetric(t, p, "llmproxy_cache_tokens_total", "group", "g", "type", "completion"); v != 8 {
		t.Errorf("llmproxy_cache_tokens_total{type=completion} %v; want 8 (two hits of 4)", v)
	}
	if v := cacheMetric(t, p, "llmproxy_cache_hits_total", "group", "g"); v != 2 {
		t.Errorf("llmproxy_cache_hits_total %v; want 2", v)
	}
}

func TestProxyCacheRequestControls(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	m := mocks["up"]
	_, url := cacheProxy(t, m, "g", `{enabled: true, ttl: "2s"}`)
	body := chat("gpt-4o-mini")
	send := func(cc string) answer {
		if cc == "" {
			return mustSend(t, http.MethodPost, url, body)
		}
		return mustSend(t, http.MethodPost, url, body, "Cache-Control", cc)
	}
	upstream := func() int { return len(m.requests(t)) }

	if a := send("only-if-cached"); a.Status != 504 || upstream() != 0 {
		t.Fatalf("only-if-cached on a miss: %d, %d upstream requests; want 504 and none", a.Status, upstream())
	}
	if a := send("no-store"); a.Header.Get("X-PROXY-CACHE") != "BYPASS" || upstream() != 1 {
		t.Errorf("no-store: %q; want BYPASS", a.Header.Get("X-PROXY-CACHE"))
	}
	if a := send("only-if-cached"); a.Status != 504 {
		t.Errorf("no-store stored its answer (only-if-cached got %d)", a.Status)
	}
	stored := send("")
	if a := send("no-cache"); a.Header.Get("X-PROXY-CACHE") != "MISS" || upstream() != 3 || string(a.Body) == string(stored.Body) {
		t.Errorf("no-cache: %q after %d upstream requests; want a fresh MISS", a.Header.Get("X-PROXY-CACHE"), upstream())
	}
	if a := send("only-if-cached"); a.Status != 200 || a.Header.Get("X-PROXY-CACHE") != "HIT" {
		t.Errorf("only-if-cached after a store: %d %q; want a HIT", a.Status, a.Header.Get("X-PROXY-CACHE"))
	}
	harness.Eventually(t, 5*time.Second, func() bool { return send("only-if-cached").Header.Get("Age") == "1" },
		"the entry to be a second old")
	if a := send("max-age=0"); a.Header.Get("X-PROXY-CACHE") != "MISS" || upstream() != 4 {
		t.Errorf("max-age=0 on an older entry: %q; want MISS and an upstream request", a.Header.Get("X-PROXY-CACHE"))
	}
	if a := send("max-age=60"); a.Header.Get("X-PROXY-CACHE") != "HIT" {
		t.Errorf("max-age=60: %q; want HIT", a.Header.Get("X-PROXY-CACHE"))
	}
	// ttl: the entry expires by itself.
	harness.Eventually(t, 10*time.Second, func() bool { return send("only-if-cached").Status == 504 }, "the 2s ttl to expire the entry")
}

// 50 identical concurrent requests (streaming and not) make exactly one upstream request,
// and every client gets the whole answer.
func TestProxyCacheSingleFlight(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	m := mocks["up"]
	p, url := cacheProxy(t, m, "g", "{enabled: true}")
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			body := resChat(fmt.Sprintf("flight %v", stream), stream)
			// The upstream takes its time, so the 50 overlap however the machine schedules them.
			slow := []string{"X-Mock-Latency", "300ms", "X-Mock-Chunk-Gap", "50ms"}
			before := len(m.requests(t))
			const n = 50
			answers := make([]answer, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a, err := send(context.Background(), http.MethodPost, url, body, slow...)
					if err != nil {
						t.Errorf("client %d: %v", i, err)
					}
					answers[i] = a
				}()
			}
			wg.Wait()
			if got := len(m.requests(t)) - before; got != 1 {
				t.Errorf("%d identical concurrent requests made %d upstream requests; want 1", n, got)
			}
			for i, a := range answers {
				if a.Status != 200 || string(a.Body) != string(answers[0].Body) {
					t.Errorf("client %d: %d %q; want 200 and the shared answer %q", i, a.Status, a.Body, answers[0].Body)
				}
			}
			if stream && !strings.HasSuffix(string(answers[0].Body), "data: [DONE]\n\n") {
				t.Errorf("shared stream incomplete: %q", answers[0].Body)
			}
		})
	}
	if v := cacheMetric(t, p, "llmproxy_cache_coalesced_total", "group", "g"); v == 0 {
		t.Error("llmproxy_cache_coalesced_total is 0; want the followers counted")
	}
}

// Two proxies on one Redis share entries: a miss on one is a hit on the other.
func TestProxyCacheRedisShared(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	m := mocks["up"]
	group := uniqueGroup("shared")
	p1, url1 := cacheProxy(t, m, group, "{enabled: true, backend: redis}", sharedRedisEnv...)
	p2, url2 := cacheProxy(t, m, group, "{enabled: true, backend: redis}", sharedRedisEnv...)
	body := resChat("shared through redis", true)
	a1 := mustSend(t, http.MethodPost, url1, body)
	if a1.Header.Get("X-PROXY-CACHE") != "MISS" {
		t.Fatalf("first proxy: %q; want MISS", a1.Header.Get("X-PROXY-CACHE"))
	}
	// The store runs after the answer: wait for it rather than for luck.
	harness.Eventually(t, 5*time.Second, func() bool { return cacheMetric(t, p1, "llmproxy_cache_stores_total", "group", group) == 1 }, "the store")
	a2 := mustSend(t, http.MethodPost, url2, body)
	if a2.Header.Get("X-PROXY-CACHE") != "HIT" || string(a2.Body) != string(a1.Body) || len(m.requests(t)) != 1 {
		t.Errorf("second proxy: %q, same body %v, %d upstream requests; want a HIT of the same stream and 1 request",
			a2.Header.Get("X-PROXY-CACHE"), string(a2.Body) == string(a1.Body), len(m.requests(t)))
	}
	if v := cacheMetric(t, p2, "llmproxy_cache_backend_up", "group", group); v != 1 {
		t.Errorf("llmproxy_cache_backend_up %v; want 1", v)
	}
}

// A proxy without --redis serves a redis-backed group uncached and says so.
func TestProxyCacheRedisMissing(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	p, url := cacheProxy(t, mocks["up"], "g", "{enabled: true, backend: redis}")
	for range 2 {
		if a := mustSend(t, http.MethodPost, url, chat("x")); a.Status != 200 || a.Header.Get("X-PROXY-CACHE") != "" {
			t.Errorf("uncached group: %d %q; want 200, no cache header", a.Status, a.Header.Get("X-PROXY-CACHE"))
		}
	}
	var cfg struct {
		Warnings []struct{ Path, Message string } `json:"warnings"`
	}
	getJSON(t, p.Admin+"/config", &cfg)
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Path != "upstream_groups[0].cache.backend" {
		t.Errorf("/config warnings %+v; want one on upstream_groups[0].cache.backend", cfg.Warnings)
	}
	if v := cacheMetric(t, p, "llmproxy_cache_backend_up", "group", "g"); v != 0 {
		t.Errorf("llmproxy_cache_backend_up %v; want 0", v)
	}
	if n := strings.Count(p.proc.Output(), "response cache backend redis without --redis"); n != 1 {
		t.Errorf("%d log records about the missing Redis; want 1", n)
	}
}

// A fleet on one Redis: a purge through REST makes every proxy miss, within one
// propagation. Both proxies share the forward's port (SO_REUSEPORT), so which one answered
// is read from their metrics.
func TestProxyCachePurge(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "up")
	m := mocks["up"]
	group := uniqueGroup("purge")
	port := harness.FreePort(t)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, cacheConfig, map[string]any{
		"Port": port, "URL": m.URL, "Group": group, "Cache": "{enabled: true, backend: redis}",
	}))
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, "sqlite:"+t.TempDir()+"/cp.db", grpcAddr, httpAddr, "--bootstrap", boot)
	ps := []*proxy{xdsStartProxy(t, grpcAddr, "p1", t.TempDir(), sharedRedisEnv...), xdsStartProxy(t, grpcAddr, "p2", t.TempDir(), sharedRedisEnv...)}
	cp.waitFleet(t, 1, "p1", "p2")
	url := fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port)
	body := chat("purge me")
	// served counts, per proxy, the requests of the group that its cache answered or missed.
	served := func(p *proxy) float64 {
		return cacheMetric(t, p, "llmproxy_cache_hits_total", "group", group) + cacheMetric(t, p, "llmproxy_cache_misses_total", "group", group)
	}
	fresh := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}

	// Until both proxies have answered: one miss in all, so the other proxy's answers were hits.
	harness.Eventually(t, 20*time.Second, func() bool {
		a := resSend(context.Background(), fresh(), url, body)
		if a.Status != 200 {
			t.Fatalf("before the purge: %s", a)
		}
		return served(ps[0]) > 0 && served(ps[1]) > 0
	}, "both proxies to answer")
	if n := len(m.requests(t)); n != 1 {
		t.Fatalf("%d upstream requests before the purge; want 1 (a miss on one proxy is a hit on the other)", n)
	}

	var out struct{ Revision, Epoch string }
	cp.do(t, http.MethodPost, "/api/v1/upstream-groups/"+group+"/cache:purge", "", &out)
	if out.Epoch != "1" {
		t.Errorf("purge answered %+v; want epoch 1", out)
	}
	rev, err := strconv.ParseUint(out.Revision, 10, 64)
	if err != nil {
		t.Fatalf("purge revision %q: %v", out.Revision, err)
	}
	xdsWaitRevision(t, rev, ps...)
	// Both now find nothing: only-if-cached (which never stores) answers 504 on each.
	misses := []float64{cacheMetric(t, ps[0], "llmproxy_cache_misses_total", "group", group), cacheMetric(t, ps[1], "llmproxy_cache_misses_total", "group", group)}
	harness.Eventually(t, 20*time.Second, func() bool {
		a := resSend(context.Background(), fresh(), url, body, "Cache-Control", "only-if-cached")
		if a.Status != 504 {
			t.Fatalf("after the purge a proxy answered from the cache: %s", a)
		}
		return cacheMetric(t, ps[0], "llmproxy_cache_misses_total", "group", group) > misses[0] &&
			cacheMetric(t, ps[1], "llmproxy_cache_misses_total", "group", group) > misses[1]
	}, "both proxies to miss after the purge")
}

// Redis stopped mid-load: no client request fails, the backend-error metric rises, and
// once Redis is back the cache hits again. The Redis is a private redis-server on a free
// port, not the shared one.
func TestProxyCacheRedisOutage(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found")
		}
		t.Skip("redis-server not found")
	}
	raddr := harness.FreeAddr(t)
	startRedis := func() *harness.Process {
		p := harness.Start(t, bin, []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(harness.Port(t, raddr)), "--save", "", "--appendonly", "no"})
		harness.WaitTCP(t, raddr, 10*time.Second)
		return p
	}
	redisProc := startRedis()
	mocks := startMocks(t, nil, "up")
	p, url := cacheProxy(t, mocks["up"], "g", "{enabled: true, backend: redis}", "LLMPROXY_REDIS_URL=redis://"+raddr+"/0")

	var sent, failed atomic.Int64
	var lastFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := resSend(context.Background(), resClient, url, chat(fmt.Sprintf("key %d", (w+i)%8)))
				sent.Add(1)
				if a.Err != nil || a.Status != 200 {
					failed.Add(1)
					lastFailure.Store(a.String())
				}
			}
		}()
	}
	hits := func() float64 { return cacheMetric(t, p, "llmproxy_cache_hits_total", "group", "g") }
	errs := func() float64 { return cacheMetric(t, p, "llmproxy_cache_backend_errors_total", "group", "g") }
	harness.Eventually(t, 20*time.Second, func() bool { return hits() > 20 }, "hits with Redis up")

	redisProc.Stop(5 * time.Second)
	t.Logf("Redis stopped after %d requests", sent.Load())
	harness.Eventually(t, 20*time.Second, func() bool { return errs() > 0 }, "backend errors with Redis down")
	harness.Eventually(t, 20*time.Second, func() bool { return cacheMetric(t, p, "llmproxy_cache_backend_up", "group", "g") == 0 },
		"llmproxy_cache_backend_up 0 with Redis down")
	during := sent.Load()
	harness.Eventually(t, 20*time.Second, func() bool { return sent.Load() > during+50 }, "requests while Redis is down")

	startRedis()
	h := hits()
	harness.Eventually(t, 20*time.Second, func() bool { return hits() > h+20 }, "hits once Redis is back")
	harness.Eventually(t, 20*time.Second, func() bool { return cacheMetric(t, p, "llmproxy_cache_backend_up", "group", "g") == 1 },
		"llmproxy_cache_backend_up 1 once Redis is back")
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d client requests failed across the outage; want 0 (last: %v)", f, sent.Load(), lastFailure.Load())
	}
	t.Logf("%d requests, %v backend errors", sent.Load(), errs())
}
