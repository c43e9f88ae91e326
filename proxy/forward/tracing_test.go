package forward

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/internal/wait"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const clientTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func traceUpstream(t *testing.T) (*httptest.Server, func() string) {
	var mu sync.Mutex
	var got string
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Get("Traceparent")
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"usage":{"prompt_tokens":2,"completion_tokens":3}}`)
	}))
	t.Cleanup(s.Close)
	return s, func() string { mu.Lock(); defer mu.Unlock(); return got }
}

func TestTraceparentPassesThroughWhenTracingOff(t *testing.T) {
	s, got := traceUpstream(t)
	p := newTestProxy(t, simpleConfig("", "a"), s.URL)
	readAll(t, post(t, p.URL+"/v1/chat/completions", `{}`, "Traceparent", clientTraceparent))
	if got() != clientTraceparent {
		t.Errorf("upstream traceparent = %q; want the client's unchanged", got())
	}
}

// tracedProxy serves forward "f" of yamlCfg ({{U0}} replaced by upstream) with tracing on;
// it returns the proxy's URL and the exporter that receives its spans.
func tracedProxy(t *testing.T, yamlCfg, upstream string) (string, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	c, err := configfile.Decode("t.yaml", []byte(strings.ReplaceAll(yamlCfg, "{{U0}}", upstream)))
	if err != nil {
		t.Fatal(err)
	}
	m := telemetry.NewMetrics()
	reg := config.NewRegistry(m, nil)
	t.Cleanup(reg.Close)
	rt, err := config.Compile(c, reg, config.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(config.NewHolder(rt), "f", Deps{Tracer: tp.Tracer("test")}))
	t.Cleanup(srv.Close)
	return srv.URL, exp
}

func TestSpansWhenTracingOn(t *testing.T) {
	s, got := traceUpstream(t)
	url, exp := tracedProxy(t, simpleConfig("", "a"), s.URL)
	readAll(t, post(t, url+"/v1/chat/completions", `{"model":"gpt-x"}`, "Traceparent", clientTraceparent))

	up := got()
	if !strings.HasPrefix(up, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || up == clientTraceparent {
		t.Errorf("upstream traceparent = %q; want the client's trace with the proxy's span", up)
	}
	wait.For(t, "two spans", func() bool { return len(exp.GetSpans()) == 2 })
	var server, client tracetest.SpanStub
	for _, sp := range exp.GetSpans() {
		switch sp.SpanKind {
		case trace.SpanKindServer:
			server = sp
		case trace.SpanKindClient:
			client = sp
		}
	}
	if server.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || client.Parent.SpanID() != server.SpanContext.SpanID() {
		t.Errorf("spans not linked: server %v, client parent %v", server.SpanContext, client.Parent)
	}
	attrs := map[string]string{}
	for _, kv := range client.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, v := range map[string]string{"gen_ai.request.model": "gpt-x", "llmproxy.upstream": "a", "http.response.status_code": "200", "gen_ai.usage.input_tokens": "2", "gen_ai.usage.output_tokens": "3"} {
		if attrs[k] != v {
			t.Errorf("client span %s = %q; want %q", k, attrs[k], v)
		}
	}
}

func TestIdleBodyTimeout(t *testing.T) {
	pr, pw := io.Pipe()
	fired := make(chan struct{})
	b := newIdleBody(pr, 20*time.Millisecond, func(cause error) { pw.CloseWithError(cause); close(fired) })
	go pw.Write([]byte("x"))
	buf := make([]byte, 4)
	if n, err := b.Read(buf); n != 1 || err != nil {
		t.Fatalf("first read = %d, %v", n, err)
	}
	// Time spent outside Read does not count.
	time.Sleep(40 * time.Millisecond)
	select {
	case <-fired:
		t.Fatal("idle timer fired between reads")
	default:
	}
	if _, err := b.Read(buf); err != errIdleTimeout {
		t.Fatalf("silent read err = %v; want the idle timeout", err)
	}
	b.Close()
}
