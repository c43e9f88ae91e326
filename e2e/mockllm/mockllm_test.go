package mockllm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestServer(t *testing.T, opts Options) (*Server, *httptest.Server, *Client) {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts, &Client{BaseURL: ts.URL, HTTP: ts.Client()}
}

func post(t *testing.T, ts *httptest.Server, path, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

func TestChatCompletion(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{Name: "up-a"})
	tests := []struct {
		name, path, body string
		hdr              map[string]string
		wantModel        string
		wantContent      string
		minSize          int
	}{
		{"plain", "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, nil, "gpt-4o", "Hello from mockllm, a", 0},
		{"base path", "/openai/v1/chat/completions", `{"model":"x\"y"}`, nil, `x"y`, "Hello from mockllm, a", 0},
		{"azure style", "/openai/deployments/d1/chat/completions", `{"messages":[]}`, nil, "mock-model", "Hello from mockllm, a", 0},
		{"chunks", "/v1/chat/completions", `{"model":"m"}`, map[string]string{HeaderChunks: "2"}, "m", "Hello from", 0},
		{"no chunks", "/v1/chat/completions", `{"model":"m"}`, map[string]string{HeaderChunks: "0"}, "m", "", 0},
		{"body size", "/v1/chat/completions", `{"model":"m"}`, map[string]string{HeaderBodySize: "10000"}, "m", "", 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, ts, tt.path, tt.body, tt.hdr)
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d; want 200: %s", resp.StatusCode, body)
			}
			if got := resp.Header.Get(HeaderUpstream); got != "up-a" {
				t.Errorf("X-Mock-Upstream %q; want up-a", got)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			var cc struct {
				Object  string `json:"object"`
				Model   string `json:"model"`
				Choices []struct {
					Message struct {
						Role, Content string
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					Prompt     int `json:"prompt_tokens"`
					Completion int `json:"completion_tokens"`
					Total      int `json:"total_tokens"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(body, &cc); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if cc.Object != "chat.completion" || cc.Model != tt.wantModel || len(cc.Choices) != 1 {
				t.Fatalf("got %+v; want a chat.completion for %q", cc, tt.wantModel)
			}
			if tt.minSize > 0 {
				if len(body) < tt.minSize || len(body) > tt.minSize+64 {
					t.Errorf("body is %d bytes; want about %d", len(body), tt.minSize)
				}
			} else if got := cc.Choices[0].Message.Content; got != tt.wantContent {
				t.Errorf("content %q; want %q", got, tt.wantContent)
			}
			if cc.Usage.Prompt < 1 || cc.Usage.Total != cc.Usage.Prompt+cc.Usage.Completion {
				t.Errorf("usage %+v inconsistent", cc.Usage)
			}
		})
	}
}

// sseEvent is one server-sent event.
type sseEvent struct{ event, data string }

func readSSE(t *testing.T, r io.Reader) ([]sseEvent, error) {
	t.Helper()
	var events []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur != (sseEvent{}) {
				events = append(events, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	return events, sc.Err()
}

func TestChatStream(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{})
	for _, includeUsage := range []bool{false, true} {
		t.Run("include_usage="+strconv.FormatBool(includeUsage), func(t *testing.T) {
			body := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":` + strconv.FormatBool(includeUsage) + `}}`
			resp := post(t, ts, "/v1/chat/completions", body, map[string]string{HeaderChunks: "3"})
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("Content-Type %q; want text/event-stream", ct)
			}
			events, err := readSSE(t, resp.Body)
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			want := 3 + 1 + 1 // content, finish, [DONE]
			if includeUsage {
				want++
			}
			if len(events) != want {
				t.Fatalf("got %d events; want %d: %+v", len(events), want, events)
			}
			if events[len(events)-1].data != "[DONE]" {
				t.Fatalf("last event %q; want [DONE]", events[len(events)-1].data)
			}
			var text strings.Builder
			var sawUsage, sawStop bool
			for _, ev := range events[:len(events)-1] {
				var c struct {
					Object  string `json:"object"`
					Model   string `json:"model"`
					Choices []struct {
						Delta        struct{ Role, Content string } `json:"delta"`
						FinishReason *string                        `json:"finish_reason"`
					} `json:"choices"`
					Usage *struct {
						Completion int `json:"completion_tokens"`
					} `json:"usage"`
				}
				if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
					t.Fatalf("chunk %q: %v", ev.data, err)
				}
				if c.Object != "chat.completion.chunk" || c.Model != "gpt-4o" {
					t.Errorf("chunk %q: wrong object or model", ev.data)
				}
				if c.Usage != nil {
					sawUsage = true
					if len(c.Choices) != 0 || c.Usage.Completion != 3 {
						t.Errorf("usage chunk %q", ev.data)
					}
					continue
				}
				if sawUsage {
					t.Errorf("chunk after the usage chunk")
				}
				if nullUsage := strings.HasSuffix(ev.data, `,"usage":null}`); nullUsage != includeUsage {
					t.Errorf("chunk %q: \"usage\":null is %v; want %v (OpenAI's shape)", ev.data, nullUsage, includeUsage)
				}
				text.WriteString(c.Choices[0].Delta.Content)
				if c.Choices[0].FinishReason != nil && *c.Choices[0].FinishReason == "stop" {
					sawStop = true
				}
			}
			if got := text.String(); got != "Hello from mockllm" {
				t.Errorf("text %q; want %q", got, "Hello from mockllm")
			}
			if !sawStop || sawUsage != includeUsage {
				t.Errorf("stop %v usage %v; want stop and usage %v", sawStop, sawUsage, includeUsage)
			}
		})
	}
}

func TestMessages(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{})
	t.Run("non-stream", func(t *testing.T) {
		resp := post(t, ts, "/anthropic/v1/messages", `{"model":"claude-x","max_tokens":10}`, nil)
		body := readAll(t, resp)
		var m struct {
			Type    string `json:"type"`
			Model   string `json:"model"`
			Content []struct{ Type, Text string }
			Usage   struct {
				In  int `json:"input_tokens"`
				Out int `json:"output_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		if m.Type != "message" || m.Model != "claude-x" || len(m.Content) != 1 || m.Content[0].Text != "Hello from mockllm, a" || m.Usage.Out != 5 {
			t.Errorf("got %s", body)
		}
	})
	t.Run("stream", func(t *testing.T) {
		resp := post(t, ts, "/v1/messages", `{"model":"claude-x","stream":true}`, map[string]string{HeaderChunks: "2"})
		defer resp.Body.Close()
		events, err := readSSE(t, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"message_start", "content_block_start", "content_block_delta", "content_block_delta",
			"content_block_stop", "message_delta", "message_stop"}
		if len(events) != len(want) {
			t.Fatalf("got %d events; want %d: %+v", len(events), len(want), events)
		}
		for i, ev := range events {
			var d struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
				t.Fatalf("event %d data %q: %v", i, ev.data, err)
			}
			if ev.event != want[i] || d.Type != want[i] {
				t.Errorf("event %d is %q/%q; want %q", i, ev.event, d.Type, want[i])
			}
		}
		if !strings.Contains(events[5].data, `"output_tokens":2`) {
			t.Errorf("message_delta %q lacks usage", events[5].data)
		}
	})
}

func TestOtherEndpoints(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{})
	resp, err := ts.Client().Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var models struct {
		Data []struct{ ID string } `json:"data"`
	}
	if err := json.Unmarshal(readAll(t, resp), &models); err != nil || len(models.Data) == 0 {
		t.Fatalf("models: %v %+v", err, models)
	}
	resp = post(t, ts, "/v1/embeddings", `{"model":"emb","input":["a","b","c"]}`, nil)
	var emb struct {
		Data []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Model string `json:"model"`
	}
	if err := json.Unmarshal(readAll(t, resp), &emb); err != nil || len(emb.Data) != 3 || len(emb.Data[0].Embedding) != 8 || emb.Model != "emb" {
		t.Fatalf("embeddings: %v %+v", err, emb)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/v1/chat/completions", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/nothing", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: status %d; want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
	resp = post(t, ts, "/v1/chat/completions", `{"model":`, nil)
	if readAll(t, resp); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad JSON: status %d; want 400", resp.StatusCode)
	}
}

func TestStatusInjection(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{})
	tests := []struct {
		name, path string
		hdr        map[string]string
		wantStatus int
		wantRetry  string
		wantType   string
	}{
		{"openai 503", "/v1/chat/completions", map[string]string{HeaderStatus: "503"}, 503, "", "server_error"},
		{"openai 429 retry-after", "/v1/chat/completions", map[string]string{HeaderStatus: "429", HeaderRetryAfter: "1"}, 429, "1", "rate_limit_error"},
		{"anthropic 529", "/v1/messages", map[string]string{HeaderStatus: "529"}, 529, "", "overloaded_error"},
		{"bad header", "/v1/chat/completions", map[string]string{HeaderLatency: "soon"}, 400, "", "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, ts, tt.path, `{"model":"m"}`, tt.hdr)
			body := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After %q; want %q", got, tt.wantRetry)
			}
			var e struct {
				Error struct{ Type, Message string } `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Type != tt.wantType || e.Error.Message == "" {
				t.Errorf("body %s; want error type %q", body, tt.wantType)
			}
		})
	}
}

func TestFailTimes(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{})
	call := func(key, status string) int {
		h := map[string]string{HeaderFailTimes: "2", HeaderFailKey: key}
		if status != "" {
			h[HeaderStatus] = status
		}
		resp := post(t, ts, "/v1/chat/completions", `{}`, h)
		readAll(t, resp)
		return resp.StatusCode
	}
	got := []int{call("a", ""), call("b", "429"), call("a", ""), call("b", "429"), call("a", ""), call("b", "429"), call("a", "")}
	want := []int{502, 429, 502, 429, 200, 200, 200}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses %v; want %v", got, want)
		}
	}
}

func TestBreakAfter(t *testing.T) {
	s, ts, _ := newTestServer(t, Options{})
	resp := post(t, ts, "/v1/chat/completions", `{"stream":true}`, map[string]string{HeaderChunks: "5", HeaderBreakAfter: "2"})
	events, err := readSSE(t, resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read error %v; want unexpected EOF", err)
	}
	if len(events) != 2 {
		t.Errorf("got %d events before the break; want 2", len(events))
	}
	resp = post(t, ts, "/v1/chat/completions", `{}`, map[string]string{HeaderBreakAfter: "10"})
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("non-stream read error %v; want unexpected EOF", err)
	}
	resp.Body.Close()
	waitFor(t, func() bool { return s.Stats().Aborted == 2 })
	recs := s.Requests(0)
	if len(recs) != 2 || !recs[0].Aborted || recs[0].Cancelled || !recs[0].Done {
		t.Errorf("records %+v; want two aborted", recs)
	}
}

func TestHangup(t *testing.T) {
	s, ts, c := newTestServer(t, Options{})
	for _, set := range []func(){
		func() {}, // the header alone
		func() {
			if err := c.SetBehaviour(context.Background(), `{"hangup":true}`); err != nil {
				t.Fatal(err)
			}
		},
	} {
		set()
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
		if s.Behaviour().Hangup == false {
			req.Header.Set(HeaderHangup, "true")
		}
		resp, err := ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %d; want the connection closed without an answer", resp.StatusCode)
		}
	}
	waitFor(t, func() bool { return s.Stats().Aborted == 2 })
	for _, r := range s.Requests(0) {
		if r.Body != `{"model":"m"}` || !r.Aborted {
			t.Errorf("record %+v; want the body read and the request aborted", r)
		}
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestStatsAndCancel(t *testing.T) {
	s, ts, c := newTestServer(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(`{}`))
			req.Header.Set(HeaderLatency, "1m")
			if resp, err := ts.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	waitFor(t, func() bool { return s.Stats().InFlight == 3 })
	cancel()
	wg.Wait()
	waitFor(t, func() bool { return s.Stats().InFlight == 0 })
	st, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests != 3 || st.MaxInFlight != 3 || st.Cancelled != 3 || st.LastSeq != 3 {
		t.Errorf("stats %+v; want 3 requests, max 3 in flight, 3 cancelled", st)
	}
	recs, err := c.Requests(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if !r.Cancelled || !r.Done || r.Header.Get(HeaderLatency) != "1m" || r.Body != "{}" || r.Path != "/v1/chat/completions" {
			t.Errorf("record %+v; want a cancelled chat request", r)
		}
	}
	if err := c.ResetStats(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Requests != 0 || st.MaxInFlight != 0 {
		t.Errorf("after reset %+v", st)
	}
}

func TestRecords(t *testing.T) {
	s, ts, c := newTestServer(t, Options{MaxRecords: 3})
	for i := 0; i < 5; i++ {
		readAll(t, post(t, ts, "/v1/chat/completions?n="+strconv.Itoa(i), `{"i":`+strconv.Itoa(i)+`}`, nil))
	}
	ctx := context.Background()
	recs, err := c.Requests(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].Seq != 3 || recs[2].Seq != 5 || recs[2].RawQuery != "n=4" || recs[2].Body != `{"i":4}` || recs[2].Status != 200 {
		t.Fatalf("records %+v; want seq 3..5", recs)
	}
	if recs, _ := c.Requests(ctx, 4); len(recs) != 1 || recs[0].Seq != 5 {
		t.Errorf("since=4: %+v", recs)
	}
	if err := c.ClearRequests(ctx); err != nil {
		t.Fatal(err)
	}
	readAll(t, post(t, ts, "/v1/chat/completions", `{}`, nil))
	if recs := s.Requests(0); len(recs) != 1 || recs[0].Seq != 6 {
		t.Errorf("after clear: %+v", recs)
	}
	// Admin calls are neither recorded nor counted.
	if st := s.Stats(); st.Requests != 6 {
		t.Errorf("requests %d; want 6", st.Requests)
	}
}

func TestAdminBehaviour(t *testing.T) {
	s, ts, c := newTestServer(t, Options{Behaviour: Behaviour{Chunks: 2}})
	ctx := context.Background()
	status := func() int {
		resp := post(t, ts, "/v1/chat/completions", `{}`, nil)
		readAll(t, resp)
		return resp.StatusCode
	}
	if err := c.SetBehaviour(ctx, `{"status":503,"latency":"1ms"}`); err != nil {
		t.Fatal(err)
	}
	if b := s.Behaviour(); b.Status != 503 || b.Latency != time.Millisecond || b.Chunks != 2 {
		t.Errorf("behaviour %+v; want status 503, latency 1ms on top of chunks 2", b)
	}
	if got := status(); got != 503 {
		t.Errorf("sick: status %d; want 503", got)
	}
	if err := c.ResetBehaviour(ctx); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != 200 {
		t.Errorf("healed: status %d; want 200", got)
	}
	if err := c.SetBehaviour(ctx, `{"fail_times":2,"status":500}`); err != nil {
		t.Fatal(err)
	}
	if got := []int{status(), status(), status()}; got[0] != 500 || got[1] != 500 || got[2] != 200 {
		t.Errorf("fail_times: %v; want 500 500 200", got)
	}
	if err := c.SetBehaviour(ctx, `{"fail_times":1}`); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != 502 {
		t.Errorf("fail_times without status: %d; want 502", got)
	}
	for _, bad := range []string{`{"status":42}`, `{"latency":"soon"}`, `{"nope":1}`, `[`} {
		if err := c.SetBehaviour(ctx, bad); err == nil {
			t.Errorf("SetBehaviour(%s) accepted", bad)
		}
	}
	resp, err := ts.Client().Get(ts.URL + "/_mock/behaviour")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(readAll(t, resp), &got); err != nil || got["latency"] != "0s" || got["chunks"] != 2.0 {
		t.Errorf("GET behaviour: %v %v", err, got)
	}
	if resp.Header.Get(HeaderUpstream) != "mockllm" {
		t.Errorf("admin answer lacks X-Mock-Upstream")
	}
}

func TestStreamTiming(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{})
	start := time.Now()
	resp := post(t, ts, "/v1/chat/completions", `{"stream":true}`, map[string]string{
		HeaderLatency: "20ms", HeaderTTFT: "30ms", HeaderChunkGap: "10ms", HeaderChunks: "3"})
	headers := time.Since(start)
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	all := time.Since(start)
	// Lower bounds only: the delays are minimums, the machine may add to them.
	if headers < 20*time.Millisecond || first < 50*time.Millisecond || all < 70*time.Millisecond {
		t.Errorf("headers after %v (≥20ms), first chunk %v (≥50ms), end %v (≥70ms)", headers, first, all)
	}
}

func TestScanRequest(t *testing.T) {
	tests := []struct {
		in           string
		model        string
		stream, incl bool
		bad          bool
	}{
		{in: `{"model":"a","stream":true,"stream_options":{"include_usage":true}}`, model: `"a"`, stream: true, incl: true},
		{in: ` { "messages" : [ {"content":"}{\"model\":\"no\""} ], "model" : "b\u00e9" } `, model: `"b\u00e9"`},
		{in: `{"stream":false,"model":null}`},
		{in: `{}`},
		{in: `{"model":"a"`, bad: true},
		{in: `{"model":"a",}`, bad: true},
		{in: `{"model":"a"} x`, bad: true},
		{in: `{"model":"a\q"}`, bad: true},
		{in: "{\"model\":\"a\nb\"}", bad: true},
		{in: ``, bad: true},
	}
	for _, tt := range tests {
		info, err := scanRequest([]byte(tt.in))
		if (err != nil) != tt.bad {
			t.Errorf("scan(%s) error %v; want bad=%v", tt.in, err, tt.bad)
			continue
		}
		if tt.bad {
			continue
		}
		if string(info.model) != tt.model || info.stream != tt.stream || info.includeUsage != tt.incl {
			t.Errorf("scan(%s) = %q %v %v", tt.in, info.model, info.stream, info.includeUsage)
		}
	}
}

// FuzzScanRequest checks the scanner against encoding/json on valid input, and that a model it
// extracts is always a valid JSON string (it is echoed into answers verbatim).
func FuzzScanRequest(f *testing.F) {
	f.Add(`{"model":"a","stream":true,"stream_options":{"include_usage":true}}`)
	f.Add(`{"messages":[{"role":"user","content":"x"}],"model":"m\"x"}`)
	f.Add(`{"a":[1,2,{"b":null}],"stream":false}`)
	f.Fuzz(func(t *testing.T, in string) {
		info, err := scanRequest([]byte(in))
		if err != nil {
			return
		}
		if info.model != nil && !json.Valid(info.model) {
			t.Fatalf("model token %q is not valid JSON", info.model)
		}
		if !json.Valid([]byte(in)) {
			return // the scanner is lenient about numbers and literals
		}
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(in), &m) != nil {
			t.Fatalf("scanner accepted non-object %q", in)
		}
		if raw, ok := m["model"]; ok && len(raw) > 0 && raw[0] == '"' && info.model == nil && !strings.Contains(in, `\`) {
			t.Fatalf("model missed in %q", in)
		}
		if raw, ok := m["stream"]; ok && (string(raw) == "true") != info.stream && !strings.Contains(in, `\`) {
			t.Fatalf("stream mismatch in %q", in)
		}
	})
}

// X-Mock-Reasoning and X-Mock-Tool add reasoning and a tool call to both stream formats:
// every event is JSON, and the tool's argument pieces join into its arguments.
func TestReasoningAndToolStreams(t *testing.T) {
	_, ts, _ := newTestServer(t, Options{})
	hdr := map[string]string{HeaderReasoning: "3", HeaderTool: "get_weather", HeaderChunks: "2"}
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		t.Run(path, func(t *testing.T) {
			events, err := readSSE(t, post(t, ts, path, `{"model":"m","stream":true}`, hdr).Body)
			if err != nil {
				t.Fatal(err)
			}
			var reasoning, args strings.Builder
			var finish string
			for _, ev := range events {
				if ev.data == "[DONE]" {
					continue
				}
				var v struct {
					Choices []struct {
						Delta struct {
							Reasoning string `json:"reasoning_content"`
							ToolCalls []struct {
								Function struct{ Name, Arguments string }
							} `json:"tool_calls"`
						}
						FinishReason *string `json:"finish_reason"`
					}
					Delta struct {
						Type, Thinking, StopReason string
						PartialJSON                string `json:"partial_json"`
						Stop                       string `json:"stop_reason"`
					}
				}
				if err := json.Unmarshal([]byte(ev.data), &v); err != nil {
					t.Fatalf("event %q is not JSON: %v", ev.data, err)
				}
				for _, c := range v.Choices {
					reasoning.WriteString(c.Delta.Reasoning)
					for _, tc := range c.Delta.ToolCalls {
						args.WriteString(tc.Function.Arguments)
					}
					if c.FinishReason != nil {
						finish = *c.FinishReason
					}
				}
				reasoning.WriteString(v.Delta.Thinking)
				args.WriteString(v.Delta.PartialJSON)
				if v.Delta.Stop != "" {
					finish = v.Delta.Stop
				}
			}
			if reasoning.String() != "Let me think about the" || args.String() != `{"city":"Paris"}` {
				t.Errorf("reasoning %q, tool arguments %q", reasoning.String(), args.String())
			}
			if finish != "tool_calls" && finish != "tool_use" {
				t.Errorf("finish reason %q; want the tool's", finish)
			}
		})
	}
}

func TestStatsCountConnections(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(s)
	ts.Config.ConnState = s.ConnState
	ts.Start()
	defer ts.Close()
	send := func(c *http.Client) {
		resp, err := c.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	keepAlive := &http.Client{Transport: &http.Transport{}}
	send(keepAlive)
	send(keepAlive)
	if n := s.Stats().Connections; n != 1 {
		t.Fatalf("two requests on a keep-alive client: %d connections, want 1", n)
	}
	oneEach := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	send(oneEach)
	send(oneEach)
	if n := s.Stats().Connections; n != 3 {
		t.Fatalf("then two without keep-alive: %d connections, want 3", n)
	}
}

func TestFixedAnswer(t *testing.T) {
	s, ts, _ := newTestServer(t, Options{Behaviour: Behaviour{Status: 503}})
	for range 2 {
		resp := post(t, ts, "/_mock/fixed", `{"model":"other","messages":[]}`, map[string]string{"X-Mock-Status": "500"})
		body := readAll(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength != int64(len(body)) {
			t.Fatalf("fixed: %d %q length %d for %d bytes; want a 200 JSON answer whatever the behaviour", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength, len(body))
		}
		var cc struct {
			Object  string `json:"object"`
			Model   string `json:"model"`
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(body, &cc); err != nil || cc.Object != "chat.completion" || cc.Model != "gpt-4o-mini" || len(cc.Choices) != 1 || cc.Choices[0].Message.Content == "" {
			t.Fatalf("fixed answer %s: %+v %v; want a chat completion", body, cc, err)
		}
	}
	if st := s.Stats(); st.Requests != 0 {
		t.Errorf("stats count %d requests; the fixed answer is not an API request", st.Requests)
	}
}
