// Package forward is the reverse-proxy core of one forward (listener). A request passes
// through these steps, one concern a file:
//
//   - admission.go: the forward's rate limit, the body cap, reading the body when routing
//     or retries need it, the group's concurrency queue;
//   - consumer.go: client keys, consumers' allow-lists and limits (with usage.go, which
//     asks an OpenAI stream for the usage its client did not ask for);
//   - pick.go: the choice of a member of the group, past open breakers and members
//     already tried;
//   - attempt.go: one upstream exchange (request rewrite in outbound.go), the one failure
//     predicate and the one place that settles an attempt's breaker slot;
//   - retry.go: whether an outcome is retried and how long to wait before the next attempt;
//   - relay.go: the answer written to the client, streamed, with token counting
//     (tokens.go);
//   - accesslog.go: the request's access-log entry;
//   - errors.go: the one mapping of errors to the proxy's own answers.
//
// A request is served entirely by the runtime (config.Runtime) it loaded when it arrived;
// a configuration swap affects only later requests.
package forward

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/accesslog"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/quota"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Deps are a handler's collaborators. Every field may be nil: nil Logger discards, nil
// AccessLog writes no access log, nil (or no-op) Tracer turns tracing off, and then a
// client's traceparent passes through unchanged. Metric children come from the runtime
// (config.Options.Metrics); Metrics here only counts requests to a forward the current
// runtime does not have.
type Deps struct {
	Metrics *telemetry.Metrics
	// Logger receives the records other than the access log (failed attempts, ...).
	Logger *slog.Logger
	// AccessLog receives one entry per request; it may be shared by every forward.
	AccessLog *accesslog.Logger
	Tracer    trace.Tracer
}

// New returns the handler of the forward named forward. Each request loads holder's
// current runtime once and is served by it to the end; a runtime without that forward
// answers 503. The handler is safe for concurrent use.
func New(holder *config.Holder, forward string, deps Deps) http.Handler {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{holder: holder, name: forward, deps: deps, logger: deps.Logger}
	if telemetry.TracingEnabled(deps.Tracer) {
		h.tracer = deps.Tracer
	}
	return h
}

type handler struct {
	holder *config.Holder
	name   string
	deps   Deps
	logger *slog.Logger
	tracer trace.Tracer // nil: tracing off
}

var propagator = propagation.TraceContext{}

var connectionClose = []string{"close"}

var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

// exchange is the state of one client request.
type exchange struct {
	h     *handler
	rt    *config.Runtime
	fw    *config.Forward
	w     http.ResponseWriter
	r     *http.Request
	ctx   context.Context
	start time.Time
	reqID string
	idHdr []string // X-Request-Id header value, shared by both directions

	route    *config.RouteMetrics
	group    *config.Group
	member   *config.Member
	body     *replayable
	in       *timedBody // the inbound body under its timeout; nil without one
	model    string
	attempts int
	status   int
	written  int64
	perr     *Error
	usage    usage
	span     trace.Span
	cache    cacheExchange

	// The client's address (clientaddr.go), worked out on first use.
	client          string
	clientForwarded bool
	clientKnown     bool

	// consumer is the client's consumer (nil when none was identified); adm the decision of
	// its limits; stripUsage says the answer carries usage the client did not ask for, and
	// strip takes it out of an event stream (usage.go).
	consumer   *config.Consumer
	adm        quota.Admission
	stripUsage bool
	strip      *usageStripper
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The exchange is filled field by field: a composite literal would be built in this
	// frame first, and this frame is under every open stream (see relay).
	ex := exchangePool.Get().(*exchange)
	ex.h, ex.w, ex.r, ex.ctx, ex.start = h, w, r, r.Context(), time.Now()
	defer ex.release()

	ex.reqID = r.Header.Get("X-Request-Id")
	if ex.reqID == "" || len(ex.reqID) > 200 {
		ex.reqID = newRequestID()
	}
	ex.idHdr = []string{ex.reqID}
	w.Header()["X-Request-Id"] = ex.idHdr
	if len(r.TransferEncoding) > 0 {
		// A request with both Transfer-Encoding and Content-Length may be an attempt to
		// smuggle a request past a front end that framed it by Content-Length; RFC 9112
		// section 6.1 says the server MUST close the connection after answering it.
		// net/http reads it by its chunked framing and keeps the connection, and it has
		// dropped the Content-Length by now, so every request framed by
		// Transfer-Encoding closes its connection (clients mostly send Content-Length).
		w.Header()["Connection"] = connectionClose
	}

	ex.rt = h.holder.Load()
	ex.fw = ex.rt.Forward(h.name)
	if ex.fw == nil {
		writeError(w, ErrNoForward, 0)
		if h.deps.Metrics != nil {
			h.deps.Metrics.HTTPErrors.WithLabelValues(h.name, ErrNoForward.Kind, "503").Inc()
		}
		return
	}
	if h.tracer != nil {
		ex.startSpan()
	}
	defer ex.finish()
	ex.serve()
}

// release empties the exchange and returns it to the pool.
func (ex *exchange) release() {
	*ex = exchange{}
	exchangePool.Put(ex)
}

// startSpan starts the request's server span, continuing the client's trace.
func (ex *exchange) startSpan() {
	h, r := ex.h, ex.r
	ctx := propagator.Extract(ex.ctx, propagation.HeaderCarrier(r.Header))
	ex.ctx, ex.span = h.tracer.Start(ctx, "llmproxy "+h.name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
}

// serve runs the request's steps in order; each step that answers the client itself
// (an error) ends it.
func (ex *exchange) serve() {
	if !ex.checkRequestLine() || !ex.checkRate() || !ex.limitBody() || !ex.identify() {
		return
	}
	if (ex.fw.NeedsModel || ex.consumer != nil) && ex.hasBody() {
		if !ex.readBody() {
			return
		}
		ex.model = modelOf(ex.body.data())
	}
	if ex.consumer != nil && !ex.admitConsumer() {
		return
	}
	g := ex.routeTo()
	if ex.needsBody(g) && !ex.readBody() {
		return
	}
	if ex.span != nil {
		ex.nameSpan(g)
	}
	// Everything about the request is known here (group, body, model) and no upstream has
	// been chosen: the response cache may answer without one (cache.go).
	if g.Cache != nil {
		defer ex.cacheDone()
		if ex.cacheStep(g) {
			return
		}
	}
	release, ok := ex.waitTurn(g)
	if !ok {
		return
	}
	if release != nil {
		defer release()
	}
	ex.proxy(g)
}

// nameSpan names the server span after the route and records the route and group.
func (ex *exchange) nameSpan(g *config.Group) {
	ex.span.SetName(ex.r.Method + " " + ex.route.Pattern())
	if ex.model == "" && ex.body != nil {
		ex.model = modelOf(ex.body.data())
	}
	ex.span.SetAttributes(attribute.String("http.route", ex.route.Pattern()), attribute.String("llmproxy.group", g.Name))
}

// routeTo matches the request to a route and returns its group (the forward's default
// group when no route matches).
func (ex *exchange) routeTo() *config.Group {
	fw, r := ex.fw, ex.r
	target, pattern := fw.Router.Match(r.Method, r.URL.Path, r.Header, ex.model)
	ex.route = fw.Route(pattern)
	if target < 0 || target >= len(ex.rt.Groups) {
		target = fw.DefaultGroup
	}
	ex.group = ex.rt.Groups[target]
	return ex.group
}

// proxy sends the request to members of g until an outcome is not retried, then answers
// the client with it. Each attempt reserves a breaker slot (pick.go), is sent and settled
// (attempt.go); a retried outcome waits the retry policy's delay (retry.go).
func (ex *exchange) proxy(g *config.Group) {
	maxAttempts := 1
	if g.Retry != nil && (ex.body != nil || !ex.hasBody()) {
		maxAttempts += g.Retry.Attempts
	}
	var tried memberSet
	next := -1
	for n := 0; ; n++ {
		idx, done, ok := reserve(g, next, &tried)
		if !ok {
			ex.fail(ErrNoHealthy, 0)
			return
		}
		tried.add(idx)
		a := ex.try(g, g.Members[idx], done)
		ex.attempts = n + 1

		reason, retry := "", false
		if n+1 < maxAttempts && !ex.clientGone() {
			reason, retry = retryReason(g.Retry, a)
		}
		if retry {
			next = pick(g, &tried, &memberSet{})
			retry = next >= 0
		}
		if !retry {
			ex.complete(g, a)
			return
		}

		var retryAfter time.Duration
		if a.resp != nil {
			retryAfter = parseRetryAfter(a.resp.Header.Get("Retry-After"), time.Now())
			drain(a.resp.Body)
		}
		a.settle(false)
		a.endSpan()
		a.close()
		g.RetryCounter(reason).Inc()
		if !sleep(ex.r.Context(), retryDelay(g.Retry, n, retryAfter, next == idx)) {
			ex.fail(ErrClientGone, 0)
			return
		}
	}
}

// fail answers with e (unless the client left) and records it.
func (ex *exchange) fail(e *Error, retryAfterSec int) {
	ex.perr = e
	ex.status = e.Status
	writeError(ex.w, e, retryAfterSec)
}

// clientGone reports whether the client's request has ended (it left, its connection
// broke, or its body ran out of time).
func (ex *exchange) clientGone() bool { return ex.r.Context().Err() != nil }

// errorOf is errorFor for this request: a body that ran past its timeout is the client's
// 408, although the failed read of its connection also ended the request's context.
func (ex *exchange) errorOf(err error) *Error {
	if ex.in.timedOut() {
		return ErrBodyTimeout
	}
	return errorFor(ex.r.Context(), err)
}

// finish records the request: metrics, span, access log, buffers.
func (ex *exchange) finish() {
	end := time.Now()
	d := end.Sub(ex.start)
	if ex.route == nil {
		ex.route = ex.fw.Route("")
	}
	ex.route.Observe(ex.r.Method, d)
	if ex.perr != nil {
		ex.fw.ErrorCounter(ex.perr.Kind, strconv.Itoa(ex.perr.Status)).Inc()
	}
	if ex.group != nil {
		ex.recordModel()
	}
	if ex.consumer != nil {
		ex.settleConsumer()
	}
	if ex.body != nil {
		ex.body.release()
	}
	var traceID string
	if ex.span != nil {
		ex.cacheSpanResult()
		ex.span.SetAttributes(attribute.Int("http.response.status_code", ex.status))
		if ex.status >= 500 {
			ex.span.SetStatus(codes.Error, "")
		}
		traceID = ex.span.SpanContext().TraceID().String()
		ex.span.End()
	}
	ex.logAccess(end, d, traceID)
}
