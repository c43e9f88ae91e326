// Package forward is the reverse-proxy core of one forward (listener): rate limit, body
// cap, routing, concurrency limit, upstream choice with circuit breakers, request rewrite,
// retries with failover, streaming relay, token accounting and proxy-made errors.
package forward

import (
	"log/slog"
	"net/http"

	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// Deps are a handler's collaborators. Every field may be nil: nil Metrics means the
// runtime's own, nil Logger discards, nil (or no-op) Tracer turns tracing off.
type Deps struct {
	Metrics *telemetry.Metrics
	Logger  *slog.Logger
	Tracer  trace.Tracer
}

// New returns the handler of the forward named forward. Each request loads holder's
// current runtime once and is served by it to the end; a runtime without that forward
// answers 503. The handler is safe for concurrent use.
func New(holder *config.Holder, forward string, deps Deps) http.Handler {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &handler{holder: holder, name: forward, deps: deps}
}

type handler struct {
	holder *config.Holder
	name   string
	deps   Deps
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "not implemented", http.StatusNotImplemented)
}
