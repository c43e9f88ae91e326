package forward

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/accesslog"
	"github.com/prometheus/client_golang/prometheus"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAccessLog(t *testing.T) {
	var out syncBuffer
	al := accesslog.New(&out, accesslog.Options{FlushInterval: time.Hour})
	p := newTestProxyDeps(t, Deps{AccessLog: al}, simpleConfig("", "a"), jsonUpstream(t))
	resp := post(t, p.URL+"/v1/chat/completions?key=not-logged", `{"model":"gpt-x"}`, "X-Request-Id", "req-1")
	readAll(t, resp)
	if err := al.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out.String()), &rec); err != nil {
		t.Fatalf("access log %q: %v", out.String(), err)
	}
	want := map[string]any{
		"level": "INFO", "msg": "request", "request_id": "req-1", "forward": "f", "method": "POST",
		"path": "/v1/chat/completions", "route": "default", "status": 200.0, "bytes": float64(len(benchAnswer)),
		"group": "g", "upstream": "a", "attempts": 1.0, "prompt_tokens": 12.0, "completion_tokens": 8.0,
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("access log %s = %v; want %v", k, rec[k], v)
		}
	}
	for _, k := range []string{"time", "duration_ms", "client"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("access log lacks %s: %s", k, out.String())
		}
	}
	if strings.Contains(out.String(), "not-logged") {
		t.Errorf("access log shows the query: %s", out.String())
	}
}

// blockedSink is an output whose writes wait until it is opened.
type blockedSink struct {
	open    chan struct{}
	entered chan struct{} // closed at the first write
	once    sync.Once
	syncBuffer
}

func (s *blockedSink) Write(p []byte) (int, error) {
	s.once.Do(func() { close(s.entered) })
	<-s.open
	return s.syncBuffer.Write(p)
}

// TestAccessLogBlockedOutput: with the log's output stuck, requests still complete; the
// lines that found no room are counted as dropped, and every line is either written once
// the output moves again or counted.
func TestAccessLogBlockedOutput(t *testing.T) {
	sink := &blockedSink{open: make(chan struct{}), entered: make(chan struct{})}
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"})
	al := accesslog.New(sink, accesslog.Options{BufferSize: 512, Buffers: 2, FlushInterval: time.Millisecond, Dropped: dropped})
	p := newTestProxyDeps(t, Deps{AccessLog: al}, simpleConfig("", "a"), jsonUpstream(t))
	client := &http.Client{Timeout: 10 * time.Second}

	const n = 40
	for i := range n {
		resp, err := client.Post(p.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-x"}`))
		if err != nil {
			t.Fatalf("request %d with the access log blocked: %v", i, err)
		}
		if body := readAll(t, resp); resp.StatusCode != 200 || body != benchAnswer {
			t.Fatalf("request %d with the access log blocked: %d %q", i, resp.StatusCode, body)
		}
	}
	select {
	case <-sink.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the access log never wrote to its output")
	}
	if counterValue(dropped) == 0 {
		t.Fatalf("%d requests against a blocked output of two 512-byte buffers: nothing dropped", n)
	}
	close(sink.open)
	if err := al.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	written := strings.Count(sink.String(), "\n")
	if got := written + int(counterValue(dropped)); got != n {
		t.Errorf("%d lines written + %v dropped = %d; want %d requests", written, counterValue(dropped), got, n)
	}
}
