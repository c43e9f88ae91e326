package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"regexp"
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
	"github.com/redis/go-redis/v9"

	"github.com/llmproxy-go/llmproxy/controlplane/apikey"
	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of consumers: client keys, allow-lists and limits, with real proxies,
// mockllm, the control plane and Redis.

// consumerFleetBootstrap is a forward requiring client keys over one mockllm, reached with
// the upstream's own key, and consumer {{.Name}} without keys, models gpt-4o*.
const consumerFleetBootstrap = `
http_server:
  forwards:
    - {name: main, address: 127.0.0.1, port: {{.Port}}, default_group: g, client_auth: required}
upstreams:
  - name: llm
    url: "{{.URL}}"
    auth: {type: bearer, token: sk-upstream-secret}
upstream_groups:
  - {name: g, upstreams: [{name: llm}]}
consumers:
  - {name: {{.Name}}, models: ["gpt-4o*"]}
`

// keyAnswer is the answer of POST /api/v1/consumers/{name}/keys and of :rotate.
type keyAnswer struct {
	ID       string `json:"id"`
	Key      string `json:"key"`
	Revision string `json:"revision"`
	Fleet    struct {
		Applied int `json:"applied"`
		Proxies int `json:"proxies"`
	} `json:"fleet"`
}

// consumerSend sends a chat completion for model with key (as a Bearer token; none when
// empty) and returns the answer.
func consumerSend(t *testing.T, forward, key, model string) answer {
	t.Helper()
	var hdr []string
	if key != "" {
		hdr = []string{"Authorization", "Bearer " + key, "Connection", "close"}
	}
	return mustSend(t, http.MethodPost, forward+"/v1/chat/completions", chat(model), hdr...)
}

// wantProxyError checks the status and the error code of one of the proxy's answers.
func wantProxyError(t *testing.T, a answer, status int, code string) string {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if a.Status != status || json.Unmarshal(a.Body, &e) != nil || e.Error.Code != code {
		t.Fatalf("answer %d %s; want %d with code %q", a.Status, a.Body, status, code)
	}
	return e.Error.Message
}

// TestConsumersFleet: a control plane and two proxies on one forward port. No key: 401. A key
// made by the control plane works through the unmodified OpenAI and Anthropic SDKs, and the
// upstream never sees it; the model allow-list holds; revoking the key is a revision whose
// answer says both proxies applied it, after which both refuse the key. Rotation: old and
// new key work during the grace period, only the new one after.
func TestConsumersFleet(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "llm")
	m := mocks["llm"]
	port := harness.FreePort(t)
	forward := fmt.Sprintf("http://127.0.0.1:%d", port)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, consumerFleetBootstrap, map[string]any{"Port": port, "URL": m.URL, "Name": "team"}))
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, "sqlite:"+t.TempDir()+"/cp.db", grpcAddr, httpAddr, "--bootstrap", boot)
	p1 := xdsStartProxy(t, grpcAddr, "p1", t.TempDir())
	p2 := xdsStartProxy(t, grpcAddr, "p2", t.TempDir())
	cp.waitFleet(t, 1, "p1", "p2")

	wantProxyError(t, consumerSend(t, forward, "", "gpt-4o-mini"), 401, "invalid_api_key")
	wantProxyError(t, consumerSend(t, forward, "llmp-made-up", "gpt-4o-mini"), 401, "invalid_api_key")

	var made keyAnswer
	cp.do(t, http.MethodPost, "/api/v1/consumers/team/keys?wait=10s", `{"id":"ci"}`, &made)
	if !strings.HasPrefix(made.Key, apikey.Prefix) || made.Fleet.Applied != 2 || made.Fleet.Proxies != 2 {
		t.Fatalf("key made: %+v", made)
	}
	key := made.Key

	// The OpenAI SDK, with the key as its API key: a completion and a stream.
	oa := openai.NewClient(openaioption.WithBaseURL(forward+"/v1/"), openaioption.WithAPIKey(key), openaioption.WithMaxRetries(0))
	ctx := harness.Context(t)
	cc, err := oa.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil || len(cc.Choices) != 1 || cc.Usage.CompletionTokens == 0 {
		t.Fatalf("OpenAI SDK completion: %+v, %v", cc, err)
	}
	stream := oa.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var text strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || text.Len() == 0 {
		t.Fatalf("OpenAI SDK stream: %q, %v", text.String(), err)
	}
	// The Anthropic SDK sends the key in x-api-key. A model outside the allow-list: 403,
	// which the SDK reports as an error with that status.
	an := anthropic.NewClient(anthropicoption.WithBaseURL(forward+"/"), anthropicoption.WithAPIKey(key), anthropicoption.WithMaxRetries(0))
	msgParams := anthropic.MessageNewParams{
		Model:     "gpt-4o-mini",
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}
	msg, err := an.Messages.New(ctx, msgParams)
	if err != nil || len(msg.Content) == 0 || msg.Usage.OutputTokens == 0 {
		t.Fatalf("Anthropic SDK message: %+v, %v", msg, err)
	}
	msgParams.Model = "claude-3"
	_, err = an.Messages.New(ctx, msgParams)
	var apiErr *anthropic.Error
	if !asError(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Fatalf("Anthropic SDK with a model outside the allow-list: %v; want 403", err)
	}
	wantProxyError(t, consumerSend(t, forward, key, "claude-3"), 403, "model_not_allowed")

	// The upstream saw its own key, never the client's, in any header.
	recs := m.requests(t)
	if len(recs) < 3 {
		t.Fatalf("mockllm recorded %d requests", len(recs))
	}
	for _, r := range recs {
		for name, vals := range r.Header {
			for _, v := range vals {
				if strings.Contains(v, key) {
					t.Errorf("the upstream got the client key in %s", name)
				}
			}
		}
		if got := r.Header.Get("Authorization"); got != "Bearer sk-upstream-secret" {
			t.Errorf("upstream Authorization %q; want its own key", got)
		}
	}

	// Rotation with a grace period: both keys work, then only the new one.
	var rotated keyAnswer
	cp.do(t, http.MethodPost, "/api/v1/consumers/team/keys/ci:rotate?wait=10s", `{"grace":"4s","new_id":"ci-2"}`, &rotated)
	if rotated.Fleet.Applied != 2 || rotated.Key == key {
		t.Fatalf("rotation: %+v", rotated)
	}
	for _, k := range []string{key, rotated.Key} {
		for range 4 { // new connections: both proxies answer
			if a := consumerSend(t, forward, k, "gpt-4o-mini"); a.Status != http.StatusOK {
				t.Fatalf("during the grace period: %d %s", a.Status, a.Body)
			}
		}
	}
	harness.Eventually(t, 15*time.Second, func() bool {
		return consumerSend(t, forward, key, "gpt-4o-mini").Status == http.StatusUnauthorized
	}, "the old key refused after the grace period")
	for range 4 {
		wantProxyError(t, consumerSend(t, forward, key, "gpt-4o-mini"), 401, "expired_api_key")
		if a := consumerSend(t, forward, rotated.Key, "gpt-4o-mini"); a.Status != http.StatusOK {
			t.Fatalf("new key after the grace period: %d %s", a.Status, a.Body)
		}
	}

	// Revocation: the answer says both proxies applied it; then both refuse the key.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+httpAddr+"/api/v1/consumers/team/keys/ci-2?wait=10s", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var revoked struct {
		Revision string `json:"revision"`
		Fleet    struct {
			Applied int    `json:"applied"`
			Summary string `json:"summary"`
		} `json:"fleet"`
	}
	json.NewDecoder(resp.Body).Decode(&revoked)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || revoked.Fleet.Applied != 2 {
		t.Fatalf("revoke: %s %+v", resp.Status, revoked)
	}
	rev, _ := strconv.ParseUint(revoked.Revision, 10, 64)
	xdsWaitRevision(t, rev, p1, p2)
	for _, p := range []*proxy{p1, p2} {
		if v, _ := scrape(t, p).sum("llmproxy_config_version"); v != float64(rev) {
			t.Errorf("proxy %s at revision %v; want %d", p.Admin, v, rev)
		}
	}
	// Each proxy refuses it: every request on a new connection, which the kernel gives to
	// either proxy of the shared port, until both have refused one (64 requests all going
	// to one proxy has a chance of 2^-63; six, as before, failed one run in 32).
	refusals := func(p *proxy) float64 {
		v, _ := scrape(t, p).sum("llmproxy_consumer_refusals_total", "reason", "invalid_key")
		return v
	}
	before := map[*proxy]float64{p1: refusals(p1), p2: refusals(p2)} // earlier unknown keys count too
	refused := func(p *proxy) bool { return refusals(p) > before[p] }
	for range 64 {
		wantProxyError(t, consumerSend(t, forward, rotated.Key, "gpt-4o-mini"), 401, "invalid_api_key")
		if refused(p1) && refused(p2) {
			break
		}
	}
	for _, p := range []*proxy{p1, p2} {
		if !refused(p) {
			t.Errorf("proxy %s refused no revoked key", p.Admin)
		}
	}
}

// asError is errors.As for the SDK's error type.
func asError[T error](err error, target *T) bool {
	for err != nil {
		if e, ok := err.(T); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// consumerStaticConfig is a forward requiring keys over mockllm "llm", consumer {{.Name}}
// with key hash {{.Hash}} and limits {{.Limits}}, and prices for gpt-4o*.
const consumerStaticConfig = `
http_server:
  forwards:
    - {name: main, address: 127.0.0.1, port: {{.Port}}, default_group: g, client_auth: required}
upstreams:
  - {name: llm, url: "{{.URL}}"}
upstream_groups:
  - {name: g, upstreams: [{name: llm}]}
consumers:
  - name: {{.Name}}
    keys: [{id: k1, hash: "{{.Hash}}"}]
    limits: {{.Limits}}
pricing:
  - {model: "gpt-4o*", input_per_million: 2.5, output_per_million: 10}
`

// consumerProxies starts n proxies of consumerStaticConfig on their own forward ports (with
// env, e.g. LLMPROXY_REDIS_URL) and returns them, their forward URLs, and the consumer's key.
// Their Redis calls may take a second: on this busy machine the default deadline (50 ms)
// would now and then send a decision to the local fallback, and the tests count exactly.
func consumerProxies(t *testing.T, m *mock, n int, limits string, env ...string) ([]*proxy, []string, string) {
	t.Helper()
	key := apikey.New()
	name := fmt.Sprintf("e2e-%x", rand.Uint64()) // counters in the shared Redis are this test's own
	var ps []*proxy
	var urls []string
	for range n {
		port := harness.FreePort(t)
		y := renderConfig(t, consumerStaticConfig, map[string]any{"Port": port, "URL": m.URL, "Name": name, "Hash": apikey.Hash(key), "Limits": limits})
		ps = append(ps, startProxyFlags(t, y, harness.FreeAddr(t), env, "--redis-timeout", "1s"))
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	return ps, urls, key
}

// TestConsumersSharedLimit: requests_per_minute 10 on two proxies sharing one Redis: of 30
// requests split across both, exactly 10 succeed, and every 429 carries Retry-After and the
// x-ratelimit headers.
func TestConsumersSharedLimit(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "llm")["llm"]
	_, urls, key := consumerProxies(t, m, 2, "{requests_per_minute: 10}", "LLMPROXY_REDIS_URL=redis://127.0.0.1:6379/0")
	var ok, limited atomic.Int32
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := consumerSend(t, urls[i%2], key, "gpt-4o")
			h := a.Header
			if h.Get("X-Ratelimit-Limit-Requests") != "10" || h.Get("X-Ratelimit-Remaining-Requests") == "" || h.Get("X-Ratelimit-Reset-Requests") == "" {
				t.Errorf("answer %d without the x-ratelimit headers: %v", a.Status, h)
			}
			switch a.Status {
			case http.StatusOK:
				ok.Add(1)
			case http.StatusTooManyRequests:
				limited.Add(1)
				if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
					t.Errorf("429 with Retry-After %q", h.Get("Retry-After"))
				}
				if h.Get("X-Ratelimit-Remaining-Requests") != "0" {
					t.Errorf("429 with x-ratelimit-remaining-requests %q", h.Get("X-Ratelimit-Remaining-Requests"))
				}
				wantProxyError(t, a, 429, "rate_limit_exceeded")
			default:
				t.Errorf("answer %d %s", a.Status, a.Body)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 10 || limited.Load() != 20 {
		t.Fatalf("%d succeeded and %d were limited; want 10 and 20", ok.Load(), limited.Load())
	}
}

// mockIDs are the parts of a mockllm answer that differ between any two requests.
var mockIDs = regexp.MustCompile(`"id":"chatcmpl-mock-[0-9]+"|"created":[0-9]+`)

// TestConsumersStreamTokens: tokens_per_minute counted from streams whose client did not ask
// for usage trips the limit, and the client's stream bytes are those of a direct request.
func TestConsumersStreamTokens(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "llm")["llm"]
	ps, urls, key := consumerProxies(t, m, 1, "{tokens_per_minute: 60}")
	body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"tell me"}]}`
	direct := mustSend(t, http.MethodPost, m.URL+"/v1/chat/completions", body, "X-Mock-Chunks", "12")
	if direct.Status != http.StatusOK || strings.Contains(string(direct.Body), `"usage"`) {
		t.Fatalf("direct stream: %d %s", direct.Status, direct.Body)
	}
	want := mockIDs.ReplaceAllString(string(direct.Body), "…")
	sent := 0
	for {
		a := mustSend(t, http.MethodPost, urls[0]+"/v1/chat/completions", body, "Authorization", "Bearer "+key, "X-Mock-Chunks", "12")
		if a.Status == http.StatusTooManyRequests {
			msg := wantProxyError(t, a, 429, "rate_limit_exceeded")
			if !strings.Contains(msg, "tokens_per_minute is 60") || a.Header.Get("X-Ratelimit-Remaining-Tokens") != "0" {
				t.Errorf("429: %q, headers %v", msg, a.Header)
			}
			break
		}
		if a.Status != http.StatusOK {
			t.Fatalf("stream: %d %s", a.Status, a.Body)
		}
		sent++
		if got := mockIDs.ReplaceAllString(string(a.Body), "…"); got != want {
			t.Fatalf("the client's stream differs from a direct one:\n%s\nwant\n%s", a.Body, direct.Body)
		}
		if sent > 10 {
			t.Fatal("the token limit never tripped")
		}
	}
	// Each stream counts 12 completion tokens and its prompt: the limit trips after a few.
	tokens, _ := scrape(t, ps[0]).sum("llmproxy_consumer_tokens_total", "type", "completion")
	if sent < 2 || tokens != float64(12*sent) {
		t.Errorf("%d streams, %v completion tokens counted; want 12 each", sent, tokens)
	}
	// The upstream was asked for usage each time.
	for _, r := range m.requests(t)[1:] {
		if !strings.Contains(r.Body, `"include_usage":true`) {
			t.Errorf("upstream body %s does not ask for usage", r.Body)
		}
	}
}

// TestConsumersBudget: with pricing set, spend reaches the budget and the next request gets
// a 429 naming the budget.
func TestConsumersBudget(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "llm")["llm"]
	ps, urls, key := consumerProxies(t, m, 1, "{budget: {usd: 0.0002, period: month}}")
	sent := 0
	for ; sent < 20; sent++ {
		a := consumerSend(t, urls[0], key, "gpt-4o")
		if a.Status == http.StatusTooManyRequests {
			msg := wantProxyError(t, a, 429, "insufficient_quota")
			if !strings.Contains(msg, "budget of 0.0002 USD per month is spent") {
				t.Errorf("429 message %q does not name the budget", msg)
			}
			break
		}
		if a.Status != http.StatusOK {
			t.Fatalf("%d %s", a.Status, a.Body)
		}
	}
	spend, _ := scrape(t, ps[0]).sum("llmproxy_consumer_spend_usd_total")
	if sent == 0 || sent == 20 || spend < 0.0002 {
		t.Fatalf("%d requests before the budget refused, spend %v USD", sent, spend)
	}
}

// TestConsumersRedisOutage: Redis killed mid-load: no request fails, the fallback counter
// rises; Redis back: the counters are shared again. The Redis is a private redis-server on
// a free port.
func TestConsumersRedisOutage(t *testing.T) {
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
		p := harness.Start(t, bin, []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(harness.Port(t, raddr)), "--save", "", "--appendonly", "no"})
		harness.WaitTCP(t, raddr, 10*time.Second)
		return p
	}
	redisProc := startRedis()
	m := startMocks(t, nil, "llm")["llm"]
	ps, urls, key := consumerProxies(t, m, 2, "{requests_per_minute: 1000000, tokens_per_minute: 100000000}", "LLMPROXY_REDIS_URL=redis://"+raddr+"/0")
	rdb := redis.NewClient(&redis.Options{Addr: raddr})
	defer rdb.Close()

	var sent, failed atomic.Int64
	var lastFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, err := send(context.Background(), http.MethodPost, urls[w%2]+"/v1/chat/completions", chat("gpt-4o"), "Authorization", "Bearer "+key)
				sent.Add(1)
				if err != nil || a.Status != http.StatusOK {
					failed.Add(1)
					lastFailure.Store(fmt.Sprintf("%v %d %s", err, a.Status, a.Body))
				}
			}
		}()
	}
	fallbacks := func() float64 {
		total := 0.0
		for _, p := range ps {
			v, _ := scrape(t, p).sum("llmproxy_consumer_limits_fallback_total")
			total += v
		}
		return total
	}
	counted := func() bool {
		keys, err := rdb.Keys(context.Background(), "{llmproxy:consumer:*").Result()
		return err == nil && len(keys) > 0
	}
	harness.Eventually(t, 20*time.Second, func() bool { return sent.Load() > 50 && counted() }, "counters in Redis under load")
	if f := fallbacks(); f != 0 {
		t.Fatalf("%v fallbacks with Redis up", f)
	}

	redisProc.Kill()
	t.Logf("Redis killed after %d requests", sent.Load())
	harness.Eventually(t, 20*time.Second, func() bool { return fallbacks() > 0 }, "fallbacks with Redis down")
	during := sent.Load()
	harness.Eventually(t, 20*time.Second, func() bool { return sent.Load() > during+100 }, "requests while Redis is down")

	startRedis()
	harness.Eventually(t, 20*time.Second, counted, "counters in Redis again once it is back")
	// Shared again: no more fallbacks while requests keep coming.
	settled := fallbacks()
	before := sent.Load()
	harness.Eventually(t, 20*time.Second, func() bool { return sent.Load() > before+100 }, "requests with Redis back")
	if f := fallbacks(); f != settled {
		harness.Eventually(t, 10*time.Second, func() bool {
			f1 := fallbacks()
			b := sent.Load()
			for sent.Load() < b+50 {
				time.Sleep(10 * time.Millisecond)
			}
			return fallbacks() == f1
		}, "fallbacks stop once Redis is back (%v then %v)", settled, f)
	}
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed across the outage; want 0 (last: %v)", f, sent.Load(), lastFailure.Load())
	}
	t.Logf("%d requests, %v decisions made locally", sent.Load(), fallbacks())
}
