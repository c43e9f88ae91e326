package forward

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
)

func TestClientKey(t *testing.T) {
	for _, tt := range []struct {
		name   string
		header http.Header
		key    string
		given  bool
	}{
		{"bearer", http.Header{"Authorization": {"Bearer llmp-a"}}, "llmp-a", true},
		{"bearer any case", http.Header{"Authorization": {"bearer  llmp-a "}}, "llmp-a", true},
		{"anthropic", http.Header{"X-Api-Key": {"llmp-b"}}, "llmp-b", true},
		{"azure", http.Header{"Api-Key": {"llmp-c"}}, "llmp-c", true},
		{"bearer first", http.Header{"Authorization": {"Bearer llmp-a"}, "X-Api-Key": {"llmp-b"}}, "llmp-a", true},
		{"basic is no key", http.Header{"Authorization": {"Basic dTpw"}}, "", false},
		{"basic, then x-api-key", http.Header{"Authorization": {"Basic dTpw"}, "X-Api-Key": {"llmp-b"}}, "llmp-b", true},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, "", false},
		{"none", http.Header{}, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if key, given := clientKey(tt.header); key != tt.key || given != tt.given {
				t.Errorf("clientKey = %q, %v; want %q, %v", key, given, tt.key, tt.given)
			}
		})
	}
}

func TestWithIncludeUsage(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want "" when unchanged
	}{
		{`{"model":"m","stream":true}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true}`},
		{` { "model":"m", "stream" : true }`, ` {"stream_options":{"include_usage":true}, "model":"m", "stream" : true }`},
		{`{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{}}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{"include_usage":false}}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{"continuous_usage_stats":false}}`, `{"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":false}}`},
		{`{"stream":true,"stream_options":{"include_usage":true}}`, ""},
		{`{"stream":false}`, ""},
		{`{"model":"m"}`, ""},
		{`{"messages":[{"stream":true}]}`, ""},
		{`{"stream":true,"stream_options":"x"}`, ""},
		{`not json`, ""},
	} {
		got, ok := withIncludeUsage([]byte(tt.in))
		if (tt.want == "") == ok || (ok && string(got) != tt.want) {
			t.Errorf("withIncludeUsage(%s) = %s, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

// openAIStream is an OpenAI chat completion stream as the API sends it, with or without
// include_usage, lines ending with eol.
func openAIStream(includeUsage bool, eol string) string {
	chunk := func(delta, finish string) string {
		c := `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + finish + `}]`
		if includeUsage {
			c += `,"usage":null`
		}
		return c + "}" + eol + eol
	}
	s := chunk(`{"role":"assistant","content":"Hi"}`, "null") + chunk(`{"content":" there"}`, "null") + chunk(`{}`, `"stop"`)
	if includeUsage {
		s += `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}` + eol + eol
	}
	return s + "data: [DONE]" + eol + eol
}

func TestUsageStripper(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n"} {
		with, want := openAIStream(true, eol), openAIStream(false, eol)
		// Every way of cutting the stream in two, and byte by byte.
		for cut := 0; cut <= len(with); cut++ {
			s := &usageStripper{}
			got := string(s.filter([]byte(with[:cut])))
			got += string(s.filter([]byte(with[cut:])))
			got += string(s.flush())
			if got != want {
				t.Fatalf("eol %q, cut at %d:\n%s\nwant\n%s", eol, cut, got, want)
			}
		}
		s := &usageStripper{}
		var got strings.Builder
		for i := range len(with) {
			got.Write(s.filter([]byte{with[i]}))
		}
		if got.String() != want {
			t.Fatalf("byte by byte:\n%s", got.String())
		}
	}
	// What is not an OpenAI chunk passes unchanged, an unfinished last line included.
	other := "event: ping\ndata: {\"usage\":null ,\"x\":1}\n\n: comment\ndata: tail"
	s := &usageStripper{}
	if got := string(s.filter([]byte(other))) + string(s.flush()); got != other {
		t.Errorf("other stream changed:\n%q", got)
	}
}

// recordingUpstream answers like OpenAI (streams honour stream_options.include_usage) and
// records the headers and bodies it got.
type recordingUpstream struct {
	mu      sync.Mutex
	headers []http.Header
	bodies  []string
	url     string
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.bodies = append(u.bodies, string(b))
		u.mu.Unlock()
		w.Header().Set("X-Ratelimit-Remaining-Requests", "4999")
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, openAIStream(strings.Contains(string(b), `"include_usage":true`), "\n"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":10,"total_tokens":50}}`)
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL
	return u
}

func (u *recordingUpstream) last() (http.Header, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers[len(u.headers)-1], u.bodies[len(u.bodies)-1]
}

func hashOf(key string) string { return validate.FormatKeyHash(sha256.Sum256([]byte(key))) }

// consumerConfig is forward f (client_auth mode) over upstream a (bearer sk-upstream), and
// forward g no consumer may use, with consumers:
//
//	team   llmp-team (and an expired and a disabled key), models gpt-4o*, limits extra
//	open   llmp-open, no limits
func consumerConfig(mode, limits string) string {
	return fmt.Sprintf(`
http_server:
  forwards:
    - {name: f, port: 3999, default_group: g, client_auth: %s}
    - {name: other, port: 3998, default_group: g, client_auth: required}
upstreams:
  - {name: a, url: "{{U0}}", auth: {type: bearer, token: sk-upstream}}
upstream_groups:
  - {name: g, upstreams: [{name: a}]}
consumers:
  - name: team
    keys:
      - {id: k1, hash: "%s"}
      - {id: old, hash: "%s", expires_at: "2001-01-01T00:00:00Z"}
      - {id: off, hash: "%s", disabled: true}
    models: ["gpt-4o*"]
    forwards: [f]
    limits: %s
  - name: open
    keys: [{id: k1, hash: "%s"}]
    forwards: [other]
pricing:
  - {model: "gpt-4o*", input_per_million: 2.5, output_per_million: 10}
`, mode, hashOf("llmp-team"), hashOf("llmp-old"), hashOf("llmp-off"), limits, hashOf("llmp-open"))
}

func TestConsumerAuth(t *testing.T) {
	up := newRecordingUpstream(t)
	p := newTestProxy(t, consumerConfig("required", "{}"), up.url)
	chat := `{"model":"gpt-4o-mini","messages":[]}`
	url := p.URL + "/v1/chat/completions"

	for _, tt := range []struct {
		name   string
		hdr    []string
		body   string
		status int
		code   string
	}{
		{"no key", nil, chat, 401, "invalid_api_key"},
		{"unknown key", []string{"Authorization", "Bearer llmp-nope"}, chat, 401, "invalid_api_key"},
		{"expired key", []string{"X-Api-Key", "llmp-old"}, chat, 401, "expired_api_key"},
		{"disabled key", []string{"Api-Key", "llmp-off"}, chat, 401, "disabled_api_key"},
		{"forward not allowed", []string{"Authorization", "Bearer llmp-open"}, chat, 403, "forward_not_allowed"},
		{"model not allowed", []string{"Authorization", "Bearer llmp-team"}, `{"model":"claude-3","messages":[]}`, 403, "model_not_allowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eb := checkProxyError(t, post(t, url, tt.body, tt.hdr...), tt.status, tt.code)
			if strings.Contains(eb.Error.Message, "llmp-") {
				t.Errorf("the answer shows a key: %q", eb.Error.Message)
			}
		})
	}
	if n := len(up.headers); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}

	// A valid key, in each header the SDKs use, never reaches the upstream: its own auth
	// replaces it.
	for _, hdr := range [][]string{{"Authorization", "Bearer llmp-team"}, {"X-Api-Key", "llmp-team"}, {"Api-Key", "llmp-team"}} {
		resp := post(t, url, chat, hdr...)
		if body := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", hdr[0], resp.StatusCode, body)
		}
		got, _ := up.last()
		if got.Get("Authorization") != "Bearer sk-upstream" || got.Get("X-Api-Key") != "" || got.Get("Api-Key") != "" {
			t.Errorf("%s: upstream got Authorization %q, X-Api-Key %q, Api-Key %q", hdr[0], got.Get("Authorization"), got.Get("X-Api-Key"), got.Get("Api-Key"))
		}
	}
	if v := counterValue(p.Metrics.ConsumerRequests.WithLabelValues("team", "gpt-4o-mini", "200")); v != 3 {
		t.Errorf("llmproxy_consumer_requests_total{team,gpt-4o-mini,200} = %v; want 3", v)
	}
	if v := counterValue(p.Metrics.ConsumerRefusals.WithLabelValues("", "missing_key")); v != 1 {
		t.Errorf("refusals{missing_key} = %v", v)
	}
	if v := counterValue(p.Metrics.ConsumerRefusals.WithLabelValues("team", "model_not_allowed")); v != 1 {
		t.Errorf("refusals{team,model_not_allowed} = %v", v)
	}
	// 40 prompt and 10 completion tokens of gpt-4o: 2.5 and 10 USD per million.
	if v := counterValue(p.Metrics.ConsumerSpend.WithLabelValues("team", "gpt-4o-mini")); v < 3*200e-6-1e-12 || v > 3*200e-6+1e-12 {
		t.Errorf("spend = %v; want %v", v, 3*200e-6)
	}
}

func TestConsumerOptionalAuth(t *testing.T) {
	up := newRecordingUpstream(t)
	p := newTestProxy(t, consumerConfig("optional", "{}"), up.url)
	// No key: anonymous, and a non-Bearer Authorization does not reach the upstream either.
	resp := post(t, p.URL+"/v1/chat/completions", `{"model":"anything"}`, "Authorization", "Basic dTpw")
	if body := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("anonymous: %d %s", resp.StatusCode, body)
	}
	if got, _ := up.last(); got.Get("Authorization") != "Bearer sk-upstream" {
		t.Errorf("upstream got Authorization %q", got.Get("Authorization"))
	}
	// A key that is given must be valid.
	checkProxyError(t, post(t, p.URL+"/v1/chat/completions", `{}`, "X-Api-Key", "llmp-nope"), 401, "invalid_api_key")
}

func TestConsumerLimitsAndHeaders(t *testing.T) {
	up := newRecordingUpstream(t)
	p := newTestProxy(t, consumerConfig("required", "{requests_per_minute: 3, tokens_per_minute: 1000}"), up.url)
	url := p.URL + "/v1/chat/completions"
	for i := range 3 {
		resp := post(t, url, `{"model":"gpt-4o"}`, "Authorization", "Bearer llmp-team")
		readAll(t, resp)
		h := resp.Header
		if resp.StatusCode != 200 || h.Get("X-Ratelimit-Limit-Requests") != "3" || h.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(2-i) ||
			h.Get("X-Ratelimit-Limit-Tokens") != "1000" || h.Get("X-Ratelimit-Remaining-Tokens") != strconv.Itoa(1000-50*i) {
			t.Fatalf("request %d: %d, headers %v", i, resp.StatusCode, h)
		}
		if d, err := time.ParseDuration(h.Get("X-Ratelimit-Reset-Requests")); err != nil || d <= 0 || d > time.Minute {
			t.Errorf("reset-requests %q", h.Get("X-Ratelimit-Reset-Requests"))
		}
	}
	resp := post(t, url, `{"model":"gpt-4o"}`, "Authorization", "Bearer llmp-team")
	h := resp.Header
	eb := checkProxyError(t, resp, 429, "rate_limit_exceeded")
	if !strings.Contains(eb.Error.Message, "requests_per_minute is 3") || eb.Error.Type != "requests" {
		t.Errorf("429 body %+v", eb)
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After %q", h.Get("Retry-After"))
	}
	if h.Get("X-Ratelimit-Remaining-Requests") != "0" || h.Get("X-Ratelimit-Limit-Tokens") != "1000" {
		t.Errorf("429 headers %v", h)
	}
	if len(up.headers) != 3 {
		t.Errorf("upstream saw %d requests; want 3", len(up.headers))
	}
}

// A streamed request whose client did not ask for usage: the upstream is asked for it, the
// tokens are charged, and the client gets exactly the stream it asked for; a client that
// asked for usage gets it.
func TestConsumerStreamUsage(t *testing.T) {
	up := newRecordingUpstream(t)
	p := newTestProxy(t, consumerConfig("required", "{tokens_per_minute: 20}"), up.url)
	url := p.URL + "/v1/chat/completions"
	asked := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`
	if got := readAll(t, post(t, url, asked, "Authorization", "Bearer llmp-team")); got != openAIStream(true, "\n") {
		t.Fatalf("a client that asked for usage got:\n%s", got)
	}
	body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	resp := post(t, url, body, "Authorization", "Bearer llmp-team", "Accept-Encoding", "gzip")
	got := readAll(t, resp)
	if want := openAIStream(false, "\n"); got != want {
		t.Fatalf("client stream:\n%s\nwant\n%s", got, want)
	}
	sentHdr, sent := up.last()
	if !strings.Contains(sent, `"stream_options":{"include_usage":true}`) || sentHdr.Get("Accept-Encoding") != "" {
		t.Errorf("upstream body %s (Accept-Encoding %q) does not ask for usage, plain", sent, sentHdr.Get("Accept-Encoding"))
	}
	if v := counterValue(p.Metrics.ConsumerTokens.WithLabelValues("team", "gpt-4o", "completion")); v != 4 {
		t.Errorf("completion tokens %v; want 4", v)
	}
	// 22 tokens counted: over 20, refused.
	eb := checkProxyError(t, post(t, url, body, "Authorization", "Bearer llmp-team"), 429, "rate_limit_exceeded")
	if !strings.Contains(eb.Error.Message, "tokens_per_minute is 20") || eb.Error.Type != "tokens" {
		t.Errorf("429 body %+v", eb)
	}
}

func TestConsumerBudget(t *testing.T) {
	up := newRecordingUpstream(t)
	// 40 prompt tokens at 2.5 and 10 completion at 10 USD per million: 200 micro-USD each.
	p := newTestProxy(t, consumerConfig("required", "{budget: {usd: 0.0004, period: day}}"), up.url)
	for range 2 {
		resp := post(t, p.URL+"/v1/chat/completions", `{"model":"gpt-4o"}`, "Authorization", "Bearer llmp-team")
		if body := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	eb := checkProxyError(t, post(t, p.URL+"/v1/chat/completions", `{"model":"gpt-4o"}`, "Authorization", "Bearer llmp-team"), 429, "insufficient_quota")
	if !strings.Contains(eb.Error.Message, "budget of 0.0004 USD per day is spent") {
		t.Errorf("message %q does not name the budget", eb.Error.Message)
	}
}
