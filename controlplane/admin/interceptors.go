package admin

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// adminMethodPrefix is the full-method prefix of every AdminService call.
var adminMethodPrefix = "/" + adminv1.AdminService_ServiceDesc.ServiceName + "/"

// IsAdminMethod reports whether fullMethod (as in grpc.UnaryServerInfo) is an AdminService
// call.
func IsAdminMethod(fullMethod string) bool { return strings.HasPrefix(fullMethod, adminMethodPrefix) }

// AuthInterceptor returns a unary interceptor that, when token is not empty, requires every
// AdminService call to carry the metadata `authorization: Bearer <token>` and fails it with
// UNAUTHENTICATED otherwise. Other services (health, reflection, ADS) pass through. The
// comparison takes constant time; the token is never logged. An empty token disables the
// check. An authenticated call is recorded in the revision history as made by "admin" (the
// one token's name until there are several).
func AuthInterceptor(token string) grpc.UnaryServerInterceptor {
	want := []byte(token)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if token == "" || !IsAdminMethod(info.FullMethod) {
			return handler(ctx, req)
		}
		if !bearerMatches(ctx, want) {
			return nil, status.Error(codes.Unauthenticated, "missing or invalid bearer token: send authorization: Bearer <LLMPROXY_ADMIN_AUTH_TOKEN>")
		}
		return handler(withActor(ctx, "admin"), req)
	}
}

// bearerMatches reports whether some authorization value of ctx's incoming metadata is
// "Bearer <want>" (scheme case-insensitive), comparing the token in constant time.
func bearerMatches(ctx context.Context, want []byte) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	ok := false
	for _, v := range md.Get("authorization") {
		scheme, tok, found := strings.Cut(strings.TrimSpace(v), " ")
		if !found || !strings.EqualFold(scheme, "bearer") {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), want) == 1 {
			ok = true
		}
	}
	return ok
}

// Metrics counts and times gRPC calls served by the control plane.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics creates the control plane's gRPC metrics and registers them with reg:
//
//	llmproxy_controlplane_grpc_requests_total{service,method,code}
//	llmproxy_controlplane_grpc_request_duration_seconds{service,method}
//
// It fails when reg already holds metrics of those names.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmproxy_controlplane_grpc_requests_total",
			Help: "Unary gRPC calls served by the control plane (REST calls included), by method and status code.",
		}, []string{"service", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmproxy_controlplane_grpc_request_duration_seconds",
			Help:    "Latency of unary gRPC calls served by the control plane.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"service", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// UnaryInterceptor returns the interceptor that records the metrics. Put it first in the
// chain so that refused (unauthenticated) calls are counted too.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		service, method := splitMethod(info.FullMethod)
		m.requests.WithLabelValues(service, method, status.Code(err).String()).Inc()
		m.duration.WithLabelValues(service, method).Observe(time.Since(start).Seconds())
		return resp, err
	}
}

// LoggingInterceptor returns a unary interceptor that logs AdminService calls: successes at
// debug (the service itself logs every committed change at info), refusals caused by the
// request at info, internal failures at error, anything else at warn. It logs the method, code, duration and error message, never metadata
// (which may hold the admin token). A nil log discards.
func LoggingInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !IsAdminMethod(info.FullMethod) {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		_, method := splitMethod(info.FullMethod)
		code := status.Code(err)
		level := slog.LevelDebug
		switch code {
		case codes.OK:
		case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition,
			codes.Aborted, codes.Unauthenticated, codes.Canceled:
			level = slog.LevelInfo // the caller's mistake or choice
		case codes.Internal, codes.Unknown, codes.DataLoss:
			level = slog.LevelError
		default:
			level = slog.LevelWarn
		}
		attrs := []slog.Attr{
			slog.String("method", method),
			slog.String("code", code.String()),
			slog.Float64("duration_seconds", time.Since(start).Seconds()),
		}
		if err != nil {
			attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
		}
		log.LogAttrs(ctx, level, "admin call", attrs...)
		return resp, err
	}
}

// splitMethod splits "/pkg.Service/Method" into service and method.
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
