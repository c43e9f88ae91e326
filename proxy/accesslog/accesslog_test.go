package accesslog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/internal/wait"
)

// slogLine is the line log/slog's JSONHandler writes for e: the access log's reference
// format.
func slogLine(t testing.TB, e *Entry) string {
	t.Helper()
	attrs := []slog.Attr{
		slog.String("request_id", e.RequestID),
		slog.String("forward", e.Forward),
		slog.String("method", e.Method),
		slog.String("path", e.Path),
		slog.String("route", e.Route),
		slog.Int("status", e.Status),
		slog.Int64("bytes", e.Bytes),
		slog.Float64("duration_ms", float64(e.Duration.Microseconds())/1000),
		slog.String("client", e.Client),
	}
	if e.Peer != "" {
		attrs = append(attrs, slog.String("peer", e.Peer))
	}
	if e.TraceID != "" {
		attrs = append(attrs, slog.String("trace_id", e.TraceID))
	}
	if e.Group != "" {
		attrs = append(attrs, slog.String("group", e.Group))
	}
	if e.Upstream != "" {
		attrs = append(attrs, slog.String("upstream", e.Upstream), slog.Int("attempts", e.Attempts))
	}
	if e.Model != "" {
		attrs = append(attrs, slog.String("model", e.Model))
	}
	if e.Tokens {
		attrs = append(attrs, slog.Int64("prompt_tokens", e.PromptTokens), slog.Int64("completion_tokens", e.CompletionTokens))
	}
	if e.Error != "" {
		attrs = append(attrs, slog.String("error", e.Error))
	}
	var buf bytes.Buffer
	r := slog.NewRecord(e.Time, slog.LevelInfo, "request", 0)
	r.AddAttrs(attrs...)
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestEntryMatchesSlog(t *testing.T) {
	at := time.Date(2026, 11, 30, 9, 41, 7, 123456789, time.FixedZone("x", 3600))
	tests := []struct {
		name string
		e    Entry
	}{
		{"every field", Entry{
			Time: at, RequestID: "0123abcd", Forward: "main", Method: "POST", Path: "/v1/chat/completions",
			Route: "/v1/*", Status: 200, Bytes: 1234, Duration: 12345678 * time.Nanosecond, Client: "127.0.0.1:5555",
			TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Group: "openai", Upstream: "openai-eu", Attempts: 2,
			Model: "gpt-4o", Tokens: true, PromptTokens: 12, CompletionTokens: 800, Error: "",
		}},
		{"proxy error, nothing optional", Entry{
			Time: at.UTC(), RequestID: "r", Forward: "f", Method: "GET", Path: "/", Route: "default",
			Status: 503, Client: "[::1]:1", Error: "no_healthy_upstream",
		}},
		{"client from X-Forwarded-For", Entry{
			Time: at, RequestID: "r", Forward: "f", Method: "POST", Path: "/", Route: "default",
			Status: 200, Client: "198.51.100.7", Peer: "10.0.0.2:43210",
		}},
		{"zero duration and tokens", Entry{Time: at, Duration: 0, Tokens: true, Upstream: "u"}},
		{"long duration", Entry{Time: at, Duration: 3*time.Hour + time.Microsecond}},
		{"strings that need escaping", Entry{
			Time: at, RequestID: "a\"b\\c", Path: "/x\n\r\t\x00\x1f\x7f<>&/é/\u2028\u2029/\xff\xfe",
			Model: "模型", Client: "\x01", Route: strings.Repeat("ü", 40),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tt.e.AppendJSON(nil))
			if want := slogLine(t, &tt.e); got != want {
				t.Errorf("line\n got %s\nwant %s", got, want)
			}
		})
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b\\c", "\n\r\t\x00", "\u2028\xff", "é模"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Entry{Time: time.Unix(1e9, 0), Path: s, Model: s}
		if got, want := string(e.AppendJSON(nil)), slogLine(t, &e); got != want {
			t.Errorf("%q: line\n got %s\nwant %s", s, got, want)
		}
	})
}

// sink is an output that records its writes.
type sink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	err    error // returned by every write when set
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	s.writes++
	return s.buf.Write(p)
}

func (s *sink) lines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.buf.String(), "\n")
}

func (s *sink) writeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

type counter struct {
	mu sync.Mutex
	n  float64
}

func (c *counter) Add(v float64) { c.mu.Lock(); c.n += v; c.mu.Unlock() }

func (c *counter) value() float64 { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func entry(i int) *Entry {
	return &Entry{Time: time.Now(), RequestID: strings.Repeat("x", 20), Status: 200 + i%2, Path: "/v1/chat/completions"}
}

func TestFlushedWhenABufferFills(t *testing.T) {
	var out sink
	l := New(&out, Options{BufferSize: 1024, Buffers: 4, FlushInterval: time.Hour})
	defer l.Close(context.Background())
	line := len(entry(0).AppendJSON(nil))
	n := 1024/line + 1 // one more than a buffer holds
	for i := range n {
		l.Log(entry(i))
	}
	wait.For(t, "the full buffer to be written", func() bool { return out.lines() == n-1 })
	if w := out.writeCount(); w != 1 {
		t.Errorf("%d lines of a full buffer took %d writes; want 1", n-1, w)
	}
}

func TestFlushedAtTheInterval(t *testing.T) {
	var out sink
	l := New(&out, Options{FlushInterval: 5 * time.Millisecond})
	defer l.Close(context.Background())
	l.Log(entry(0))
	wait.For(t, "the line to be written without Close", func() bool { return out.lines() == 1 })
}

func TestCloseWritesEverything(t *testing.T) {
	var out sink
	var dropped counter
	l := New(&out, Options{BufferSize: 4096, FlushInterval: time.Hour, Dropped: &dropped})
	for i := range 100 {
		l.Log(entry(i))
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := out.lines(); got != 100 || dropped.value() != 0 {
		t.Errorf("after Close: %d lines written, %v dropped; want 100, 0", got, dropped.value())
	}
	l.Log(entry(0))
	if dropped.value() != 1 {
		t.Errorf("a line logged after Close: dropped = %v; want 1", dropped.value())
	}
	if err := l.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// blocked is an output whose writes wait until release is closed.
type blocked struct {
	release chan struct{}
	sink
}

func (b *blocked) Write(p []byte) (int, error) {
	<-b.release
	return b.sink.Write(p)
}

func TestBlockedOutputDropsAndCounts(t *testing.T) {
	out := &blocked{release: make(chan struct{})}
	var dropped counter
	l := New(out, Options{BufferSize: 256, Buffers: 3, FlushInterval: time.Millisecond, Dropped: &dropped})
	const n = 1000
	for i := range n { // must not block: nothing reads the output
		l.Log(entry(i))
	}
	if dropped.value() == 0 {
		t.Fatalf("%d lines into 3 buffers of 256 bytes with the output stuck: none dropped", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with the output stuck = %v; want the context's deadline", err)
	}
	close(out.release)
	wait.For(t, "every line written or counted", func() bool { return out.lines()+int(dropped.value()) == n })
}

func TestWriteErrorsCounted(t *testing.T) {
	out := &sink{err: errors.New("disk full")}
	var dropped counter
	var logs bytes.Buffer
	l := New(out, Options{FlushInterval: time.Hour, Dropped: &dropped, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := range 5 {
		l.Log(entry(i))
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dropped.value() != 5 {
		t.Errorf("5 lines to a failing output: dropped = %v; want 5", dropped.value())
	}
	if !strings.Contains(logs.String(), "disk full") {
		t.Errorf("no warning about the failing output; logs: %q", logs.String())
	}
}

func BenchmarkLog(b *testing.B) {
	e := &Entry{
		Time: time.Now(), RequestID: "0123456789abcdef0123456789abcdef", Forward: "main", Method: "POST",
		Path: "/v1/chat/completions", Route: "default", Status: 200, Bytes: 230, Duration: 1234567, Client: "127.0.0.1:43210",
		Group: "g", Upstream: "a", Attempts: 1, Model: "gpt-4o", Tokens: true, PromptTokens: 12, CompletionTokens: 8,
	}
	b.Run("accesslog", func(b *testing.B) {
		l := New(discard{}, Options{})
		defer l.Close(context.Background())
		b.ReportAllocs()
		for b.Loop() {
			l.Log(e)
		}
	})
	// The record as the proxy built it before: slog's JSON handler, one write a line.
	b.Run("slog", func(b *testing.B) {
		lg := slog.New(slog.NewJSONHandler(discard{}, nil))
		b.ReportAllocs()
		for b.Loop() {
			lg.LogAttrs(context.Background(), slog.LevelInfo, "request",
				slog.String("request_id", e.RequestID), slog.String("forward", e.Forward), slog.String("method", e.Method),
				slog.String("path", e.Path), slog.String("route", e.Route), slog.Int("status", e.Status),
				slog.Int64("bytes", e.Bytes), slog.Float64("duration_ms", float64(e.Duration.Microseconds())/1000),
				slog.String("client", e.Client), slog.String("group", e.Group), slog.String("upstream", e.Upstream),
				slog.Int("attempts", e.Attempts), slog.String("model", e.Model),
				slog.Int64("prompt_tokens", e.PromptTokens), slog.Int64("completion_tokens", e.CompletionTokens))
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestAppendMillisMatchesFloatFormatting(t *testing.T) {
	check := func(us int64) {
		want := strconv.AppendFloat(nil, float64(us)/1000, 'f', -1, 64)
		if got := appendMillis(nil, us); string(got) != string(want) {
			t.Fatalf("%d us: %s; want %s", us, got, want)
		}
	}
	for us := int64(0); us < 2_000_000; us++ {
		check(us)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		check(r.Int64N(2 * maxExactMillis))
	}
	for _, us := range []int64{-1, -1500, maxExactMillis - 1, maxExactMillis, 1 << 53, math.MaxInt64} {
		check(us)
	}
}
