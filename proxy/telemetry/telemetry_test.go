package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestTracingConfigured(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
	}
	for _, tt := range tests {
		got := TracingConfigured(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
		if got != tt.want {
			t.Errorf("TracingConfigured(%v) = %v; want %v", tt.env, got, tt.want)
		}
	}
}

func TestSetupTracingOff(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"} {
		t.Setenv(k, "")
	}
	shutdown, tr, err := SetupTracing(context.Background())
	if err != nil || tr == nil || TracingEnabled(tr) {
		t.Fatalf("SetupTracing = %v, enabled %v; want a no-op tracer", err, TracingEnabled(tr))
	}
	if err := shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestSetupTracingOn(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	shutdown, tr, err := SetupTracing(context.Background())
	if err != nil || !TracingEnabled(tr) {
		t.Fatalf("SetupTracing = %v, enabled %v; want a real tracer", err, TracingEnabled(tr))
	}
	_, span := tr.Start(context.Background(), "x")
	if !span.SpanContext().IsValid() {
		t.Error("span has no valid context")
	}
	span.End()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // do not wait for the unreachable collector
	shutdown(ctx)
}

func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.HTTPRequests.WithLabelValues("f", "POST", "/v1/chat/completions").Inc()
	m.Tokens.WithLabelValues("g", "u", TokenPrompt).Add(3)
	m.BreakerStateChanges.WithLabelValues("", "u", "http://u", "closed", "open").Inc()
	m.ConfigVersion.Set(3)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`llmproxy_http_requests_total{forward="f",method="POST",path="/v1/chat/completions"} 1`,
		`llmproxy_tokens_total{group="g",type="prompt",upstream="u"} 3`,
		`llmproxy_circuitbreaker_state_changes_total{from="closed",group="",to="open",upstream="u",url="http://u"} 1`,
		`llmproxy_config_version 3`,
		`llmproxy_access_log_dropped_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}
