// Package forward is the reverse-proxy core of one forward (listener): rate limit, body
// cap, routing, concurrency limit, upstream choice with circuit breakers, request rewrite,
// retries with failover, streaming relay, token accounting and the proxy's own errors.
//
// A request is served entirely by the runtime (config.Runtime) it loaded when it arrived;
// a configuration swap affects only later requests.
//
// Breakers: an attempt is a failure when it could not connect, timed out, got a 5xx
// answer, or its stream broke before the end. 4xx answers, 429 included, are successes:
// the upstream is alive and answering (a 429 is a quota signal handled by retries and
// Retry-After, not a health signal). A client that leaves mid-attempt is not the upstream's
// fault and counts as a success, except for a half-open probe, which counts as a failure so
// that an unproven upstream is not declared healthy.
//
// Retries (the group's http_client.retry): only what retry_on lists is retried; the body is
// read into memory first so every attempt sends the same bytes (groups without retries
// stream the body through, except a body of at most 64 KiB with a Content-Length, which is
// read first so that it leaves in the same write as the request headers). Backoff is exponential from initial, capped by max_backoff,
// with equal jitter (half fixed, half random). The next attempt goes to another ready
// member when there is one; a Retry-After of the answer is honoured (up to max_backoff)
// when the retry goes to the same upstream. Nothing is retried once the answer's status
// line has been written to the client.
//
// Streams: an event stream (text/event-stream) or an answer of unknown length is flushed
// after every write. An upstream that breaks mid-stream ends the client's event stream with
// `data: {"error":{…}}` (OpenAI shape); any other broken body aborts the response
// (http.ErrAbortHandler) so the client sees a broken answer, never a truncated success.
// Stream groups (http_client.stream true) have no response-header timeout: time to first
// token can be minutes. The idle timeout bounds the silence during each body read.
//
// Tokens: usage is read from plain (not content-encoded) answers without holding them
// back: event streams through a line scanner that only copies an unfinished line, JSON
// answers through a 16 KiB tail window (usage comes last in OpenAI and Anthropic answers).
//
// Logs: one Info access-log record per request (request and trace ids, route, group,
// upstream, status, attempts, bytes, duration, tokens) built with LogAttrs, skipped when
// the logger does not enable Info or Deps.NoAccessLog is set (each record costs a JSON
// encoding and a write to the log's output, about a fifth of the proxy's CPU per request
// under saturation); a Warn record per failed upstream attempt. Requests
// whose client left are recorded with status 499 and nothing is written.
package forward

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Deps are a handler's collaborators. Every field may be nil: nil Logger discards, nil
// (or no-op) Tracer turns tracing off, and then a client's traceparent passes through
// unchanged. Metric children come from the runtime (config.Options.Metrics); Metrics here
// only counts requests to a forward the current runtime does not have.
type Deps struct {
	Metrics *telemetry.Metrics
	Logger  *slog.Logger
	// NoAccessLog turns off the Info access-log record of every request; the other
	// records (warnings, errors) are unaffected.
	NoAccessLog bool
	Tracer      trace.Tracer
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
	model    string
	attempts int
	status   int
	written  int64
	perr     *Error
	usage    usage
	span     trace.Span
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := exchangePool.Get().(*exchange)
	*ex = exchange{h: h, w: w, r: r, ctx: r.Context(), start: time.Now()}
	defer func() {
		*ex = exchange{}
		exchangePool.Put(ex)
	}()

	ex.reqID = r.Header.Get("X-Request-Id")
	if ex.reqID == "" || len(ex.reqID) > 200 {
		ex.reqID = newRequestID()
	}
	ex.idHdr = []string{ex.reqID}
	w.Header()["X-Request-Id"] = ex.idHdr

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
		ctx := propagator.Extract(ex.ctx, propagation.HeaderCarrier(r.Header))
		ex.ctx, ex.span = h.tracer.Start(ctx, "llmproxy "+h.name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
	}
	defer ex.finish()
	ex.serve()
}

// fail answers with e (unless the client left) and records it.
func (ex *exchange) fail(e *Error, retryAfterSec int) {
	ex.perr = e
	ex.status = e.Status
	writeError(ex.w, e, retryAfterSec)
}

func (ex *exchange) serve() {
	fw, r := ex.fw, ex.r

	if rl := fw.RateLimit; rl != nil {
		key := ""
		if rl.Header != "" {
			if v := r.Header[rl.Header]; len(v) > 0 {
				key = v[0]
			}
		}
		if key == "" {
			key = clientIP(r.RemoteAddr)
		}
		if ok, after := rl.Limiter.Allow(ex.ctx, key); !ok {
			rl.Rejected.Inc()
			secs := int((after + time.Second - 1) / time.Second)
			ex.fail(ErrRateLimited, max(secs, 1))
			return
		}
	}

	hasBody := r.Body != nil && r.Body != http.NoBody
	if fw.MaxBodyBytes > 0 {
		if r.ContentLength > fw.MaxBodyBytes {
			ex.fail(ErrBodyTooLarge, 0)
			return
		}
		if hasBody {
			r.Body = http.MaxBytesReader(ex.w, r.Body, fw.MaxBodyBytes)
		}
	}
	if fw.NeedsModel && hasBody {
		if !ex.readBody() {
			return
		}
		ex.model = modelOf(ex.body.data())
	}

	target, pattern := fw.Router.Match(r.Method, r.URL.Path, r.Header, ex.model)
	ex.route = fw.Route(pattern)
	if target < 0 || target >= len(ex.rt.Groups) {
		target = fw.DefaultGroup
	}
	g := ex.rt.Groups[target]
	ex.group = g
	// The body is read into memory when retries may replay it, when tracing wants the
	// model for gen_ai.request.model, or when it is small with a Content-Length (it then
	// goes out in the same write as the request headers); otherwise it streams through.
	small := r.ContentLength > 0 && r.ContentLength <= maxSmallBody
	if (g.Retry != nil || ex.h.tracer != nil || small) && hasBody && ex.body == nil {
		if !ex.readBody() {
			return
		}
	}
	if ex.span != nil {
		ex.span.SetName(r.Method + " " + ex.route.Pattern())
		if ex.model == "" && ex.body != nil {
			ex.model = modelOf(ex.body.data())
		}
		ex.span.SetAttributes(attribute.String("http.route", ex.route.Pattern()), attribute.String("llmproxy.group", g.Name))
	}

	if g.Limiter != nil {
		g.QueueDepth.Inc()
		release, err := g.Limiter.Acquire(ex.ctx)
		g.QueueDepth.Dec()
		if err != nil {
			e := errorFor(ex.r.Context(), err)
			switch e {
			case ErrQueueFull:
				g.DroppedFull.Inc()
			case ErrQueueTimeout:
				g.DroppedTimeout.Inc()
			}
			ex.fail(e, 0)
			return
		}
		defer release()
	}
	ex.proxy(g)
}

// readBody reads the request body into a replayable buffer; false when it answered.
func (ex *exchange) readBody() bool {
	b, err := readBody(ex.r.Body, ex.r.ContentLength)
	if err != nil {
		e := errorFor(ex.r.Context(), err)
		if e != ErrBodyTooLarge && e != ErrClientGone {
			e = ErrBadBody
		}
		ex.fail(e, 0)
		return false
	}
	ex.r.Body.Close()
	ex.body = b
	return true
}

// modelOf returns the top-level "model" of a JSON body, or "".
func modelOf(body []byte) string {
	m, _ := topLevelString(body, modelKey)
	return m
}

// memberSet is a set of member indexes.
type memberSet struct {
	small uint64
	big   map[int]bool
}

func (s *memberSet) add(i int) {
	if i < 64 {
		s.small |= 1 << uint(i)
		return
	}
	if s.big == nil {
		s.big = map[int]bool{}
	}
	s.big[i] = true
}

func (s *memberSet) has(i int) bool {
	if i < 64 {
		return s.small&(1<<uint(i)) != 0
	}
	return s.big[i]
}

// pick chooses a member that is ready, not rejected and, when possible, not tried yet;
// -1 when none is ready.
// A retry leaves a rotating picker's rotation alone (balancer.Rotator), so it does not take
// the next request's turn.
func pick(g *config.Group, tried, rejected *memberSet) int {
	retry := tried.small != 0 || tried.big != nil
	choose := g.Picker.Pick
	if r, ok := g.Picker.(balancer.Rotator); ok && retry {
		choose = r.PickWithout
	}
	i := choose(func(i int) bool {
		return tried.has(i) || rejected.has(i) || !g.Members[i].Breaker.Ready()
	})
	if i >= 0 || !retry {
		return i
	}
	return choose(func(i int) bool {
		return rejected.has(i) || !g.Members[i].Breaker.Ready()
	})
}

// admit takes a breaker slot on the member chosen for the next attempt (preferred, or a
// fresh pick), skipping members whose breaker refuses.
func admit(g *config.Group, preferred int, tried *memberSet) (int, func(bool), bool) {
	var rejected memberSet
	i := preferred
	for range len(g.Members) + 1 {
		if i < 0 {
			i = pick(g, tried, &rejected)
			if i < 0 {
				return -1, nil, false
			}
		}
		m := g.Members[i]
		if done, ok := m.Breaker.Allow(); ok {
			return i, done, true
		}
		m.BreakerRejected.Inc()
		rejected.add(i)
		i = -1
	}
	return -1, nil, false
}

// attempt is one upstream exchange.
type attempt struct {
	m      *config.Member
	done   func(bool)
	cancel context.CancelCauseFunc
	ctx    context.Context
	timer  *time.Timer
	span   trace.Span
	resp   *http.Response
	err    error
	kind   errKind
}

func (a *attempt) close() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.cancel(nil)
}

func (ex *exchange) proxy(g *config.Group) {
	maxAttempts := 1
	if g.Retry != nil && (ex.body != nil || ex.r.Body == nil || ex.r.Body == http.NoBody) {
		maxAttempts += g.Retry.Attempts
	}
	var tried memberSet
	next := -1
	for n := 0; ; n++ {
		idx, done, ok := admit(g, next, &tried)
		if !ok {
			ex.fail(ErrNoHealthy, 0)
			return
		}
		tried.add(idx)
		a := ex.try(g, g.Members[idx], done)
		ex.attempts = n + 1

		// Decide whether to retry.
		retry, reason := false, ""
		if n+1 < maxAttempts && ex.r.Context().Err() == nil {
			p := g.Retry
			if a.err != nil {
				switch a.kind {
				case kindConnect:
					retry, reason = p.ConnectError, config.UpstreamErrConnect
				case kindTimeout:
					retry, reason = p.Timeout, config.UpstreamErrTimeout
				}
			} else if p.RetryStatus(a.resp.StatusCode) {
				retry, reason = true, strconv.Itoa(a.resp.StatusCode)
			}
		}
		if retry {
			next = pick(g, &tried, &memberSet{})
			retry = next >= 0
		}
		if !retry {
			ex.complete(g, a)
			return
		}

		// Retry: settle this attempt, back off, go again.
		failure := a.err != nil || a.resp.StatusCode >= 500
		var retryAfter time.Duration
		if a.resp != nil {
			retryAfter = parseRetryAfter(a.resp.Header.Get("Retry-After"), time.Now())
			drain(a.resp.Body)
		}
		a.done(!failure)
		ex.countBreaker(a.m, !failure)
		ex.endSpan(a, nil)
		a.close()
		g.RetryCounter(reason).Inc()
		delay := backoff(g.Retry, n)
		if next == idx && retryAfter > delay {
			delay = min(retryAfter, g.Retry.MaxBackoff)
		}
		if !sleep(ex.r.Context(), delay) {
			ex.fail(ErrClientGone, 0)
			return
		}
	}
}

func (ex *exchange) countBreaker(m *config.Member, success bool) {
	if success {
		m.BreakerSuccess.Inc()
	} else {
		m.BreakerFailure.Inc()
	}
}

// try sends one attempt to m and waits for the answer's headers.
func (ex *exchange) try(g *config.Group, m *config.Member, done func(bool)) *attempt {
	a := &attempt{m: m, done: done}
	a.ctx, a.cancel = context.WithCancelCause(ex.ctx)
	if !g.Stream && g.RequestTimeout > 0 {
		cancel := a.cancel
		a.timer = time.AfterFunc(g.RequestTimeout, func() { cancel(errRequestTimeout) })
	}
	r := ex.r
	out := r.WithContext(a.ctx)
	out.URL = targetURL(m.URL, r.URL)
	out.Host = ""
	out.RequestURI = ""
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.Close = false
	out.TransferEncoding = nil
	out.Trailer = nil
	out.Header = outboundHeader(r.Header, r, g, m, ex.idHdr)
	switch {
	case ex.body != nil:
		body := ex.body
		out.Body = body.reader()
		out.ContentLength = int64(len(body.data()))
		out.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
	case r.Body == nil || r.Body == http.NoBody:
		out.Body, out.ContentLength = nil, 0
	}
	if ex.h.tracer != nil {
		var span trace.Span
		a.ctx, span = ex.h.tracer.Start(a.ctx, "upstream "+m.Name, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("llmproxy.upstream", m.Name), attribute.String("server.address", m.URL.Host)))
		if ex.model != "" {
			span.SetAttributes(attribute.String("gen_ai.request.model", ex.model))
		}
		a.span = span
		out = out.WithContext(a.ctx)
		propagator.Inject(a.ctx, propagation.HeaderCarrier(out.Header))
	}

	end := m.Stats.Begin()
	t0 := time.Now()
	a.resp, a.err = g.Transport.RoundTrip(out)
	lat := time.Since(t0)
	m.Requests.Inc()
	m.Duration.Observe(lat.Seconds())
	if a.err != nil {
		if ex.r.Context().Err() != nil {
			end(lat, true)
			return a
		}
		a.kind = upstreamErrKind(a.err)
		if c := context.Cause(a.ctx); c == errRequestTimeout || c == errIdleTimeout {
			a.kind = kindTimeout
		}
		end(lat, false)
		switch a.kind {
		case kindConnect:
			m.ErrorCounter(config.UpstreamErrConnect).Inc()
		case kindTimeout:
			m.ErrorCounter(config.UpstreamErrTimeout).Inc()
		default:
			m.ErrorCounter(config.UpstreamErrOther).Inc()
		}
		ex.h.logger.LogAttrs(ex.ctx, slog.LevelWarn, "upstream attempt failed",
			slog.String("request_id", ex.reqID), slog.String("group", g.Name), slog.String("upstream", m.Name),
			slog.String("error", a.err.Error()))
		return a
	}
	failure := a.resp.StatusCode >= 500
	end(lat, !failure)
	if failure {
		m.ErrorCounter(config.UpstreamErrStatus).Inc()
		ex.h.logger.LogAttrs(ex.ctx, slog.LevelWarn, "upstream answered with a server error",
			slog.String("request_id", ex.reqID), slog.String("group", g.Name), slog.String("upstream", m.Name),
			slog.Int("status", a.resp.StatusCode))
	}
	if a.span != nil {
		a.span.SetAttributes(attribute.Int("http.response.status_code", a.resp.StatusCode))
	}
	return a
}

func (ex *exchange) endSpan(a *attempt, err error) {
	if a.span == nil {
		return
	}
	if err != nil {
		a.span.SetStatus(codes.Error, err.Error())
	} else if a.resp != nil && a.resp.StatusCode >= 500 {
		a.span.SetStatus(codes.Error, "")
	}
	a.span.End()
}

// settleClientGone releases an attempt whose client left.
func (ex *exchange) settleClientGone(a *attempt) {
	// A half-open probe must prove the upstream; an abandoned one proves nothing.
	ok := a.m.Breaker.State() != breaker.HalfOpen
	a.done(ok)
	ex.countBreaker(a.m, ok)
}

// complete answers the client with a's outcome: the upstream's answer relayed, or the
// proxy's error.
func (ex *exchange) complete(g *config.Group, a *attempt) {
	ex.member = a.m
	defer a.close()
	if a.err != nil {
		if ex.r.Context().Err() != nil {
			ex.settleClientGone(a)
			ex.endSpan(a, a.err)
			ex.fail(ErrClientGone, 0)
			return
		}
		a.done(false)
		ex.countBreaker(a.m, false)
		ex.endSpan(a, a.err)
		ex.fail(errorFor(ex.r.Context(), a.err), 0)
		return
	}
	ex.relay(g, a)
}

// drain reads a little of an abandoned answer so its connection can be reused, and
// closes it.
func drain(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}

// backoff is the delay before retry number n+1 (n from 0): initial·2ⁿ capped by
// max_backoff, with equal jitter.
func backoff(p *config.RetryPolicy, n int) time.Duration {
	d := p.Initial
	for i := 0; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date; 0 when absent
// or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// sleep waits d or until ctx is done; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// finish records the request: metrics, span, access log, buffers.
func (ex *exchange) finish() {
	d := time.Since(ex.start)
	route := ex.route
	if route == nil {
		route = ex.fw.Route("")
	}
	route.Observe(ex.r.Method, d)
	if ex.perr != nil {
		ex.fw.ErrorCounter(ex.perr.Kind, strconv.Itoa(ex.perr.Status)).Inc()
	}
	if ex.body != nil {
		ex.body.release()
	}
	var traceID string
	if ex.span != nil {
		ex.span.SetAttributes(attribute.Int("http.response.status_code", ex.status))
		if ex.status >= 500 {
			ex.span.SetStatus(codes.Error, "")
		}
		traceID = ex.span.SpanContext().TraceID().String()
		ex.span.End()
	}
	lg := ex.h.logger
	if ex.h.deps.NoAccessLog || !lg.Enabled(ex.ctx, slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("request_id", ex.reqID),
		slog.String("forward", ex.fw.Name),
		slog.String("method", ex.r.Method),
		slog.String("path", ex.r.URL.Path),
		slog.String("route", route.Pattern()),
		slog.Int("status", ex.status),
		slog.Int64("bytes", ex.written),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("client", ex.r.RemoteAddr),
	)
	if traceID != "" {
		attrs = append(attrs, slog.String("trace_id", traceID))
	}
	if ex.group != nil {
		attrs = append(attrs, slog.String("group", ex.group.Name))
	}
	if ex.member != nil {
		attrs = append(attrs, slog.String("upstream", ex.member.Name), slog.Int("attempts", ex.attempts))
	}
	if ex.model != "" {
		attrs = append(attrs, slog.String("model", ex.model))
	}
	if ex.usage.seen {
		attrs = append(attrs, slog.Int64("prompt_tokens", ex.usage.prompt), slog.Int64("completion_tokens", ex.usage.completion))
	}
	if ex.perr != nil {
		attrs = append(attrs, slog.String("error", ex.perr.Kind))
	}
	lg.LogAttrs(ex.ctx, slog.LevelInfo, "request", attrs...)
}
