package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation scope of the proxy's spans.
const TracerName = "github.com/llmproxy-go/llmproxy/proxy"

// TracingConfigured reports whether the standard OpenTelemetry environment asks for an OTLP
// trace exporter: OTEL_TRACES_EXPORTER=otlp, or OTEL_EXPORTER_OTLP_ENDPOINT /
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set while OTEL_TRACES_EXPORTER is unset.
// OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn tracing off. lookup is
// os.LookupEnv when nil.
func TracingConfigured(lookup func(string) (string, bool)) bool {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if v, _ := lookup("OTEL_SDK_DISABLED"); strings.EqualFold(strings.TrimSpace(v), "true") {
		return false
	}
	if v, ok := lookup("OTEL_TRACES_EXPORTER"); ok && strings.TrimSpace(v) != "" {
		for _, e := range strings.Split(v, ",") {
			if strings.TrimSpace(e) == "otlp" {
				return true
			}
		}
		return false
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if v, _ := lookup(k); strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}

// SetupTracing configures tracing from the standard OTEL_* environment. When no OTLP
// exporter is configured (see TracingConfigured) it returns a no-op tracer, which costs
// nothing and which TracingEnabled reports as off, and a shutdown that does nothing.
// Otherwise it builds an OTLP exporter (gRPC when OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL is "grpc", HTTP/protobuf otherwise; endpoint, headers and TLS
// from the exporters' own OTEL_* variables), a batching tracer provider with service.name
// "llmproxy" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise, and returns
// its tracer. shutdown flushes pending spans. The global OpenTelemetry state is not touched.
func SetupTracing(ctx context.Context) (shutdown func(context.Context) error, tracer trace.Tracer, err error) {
	nop := func(context.Context) error { return nil }
	if !TracingConfigured(nil) {
		return nop, noop.NewTracerProvider().Tracer(TracerName), nil
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp *otlptrace.Exporter
	if strings.TrimSpace(proto) == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nop, noop.NewTracerProvider().Tracer(TracerName), fmt.Errorf("create otlp exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "llmproxy")),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp.Shutdown, tp.Tracer(TracerName), nil
}

// TracingEnabled reports whether t records spans: false for nil and for the no-op tracer
// SetupTracing returns when tracing is off.
func TracingEnabled(t trace.Tracer) bool {
	if t == nil {
		return false
	}
	_, isNoop := t.(noop.Tracer)
	return !isNoop
}
