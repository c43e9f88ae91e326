package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/upstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// An attempt is one upstream exchange: the request rewritten for a member (outbound.go),
// sent, and its answer's headers awaited; the body is relayed later (relay.go) or drained
// when the outcome is retried.
//
// Outcomes, for the breaker, the balancer's scoring and the spans alike (attempt.failed):
// an attempt failed when it could not connect, timed out, got a 5xx answer, or its body
// broke before the end. 4xx answers are successes: the upstream is alive and answering. A
// 429 is the exception for the balancer only (attempt.scored): it counts as a failure in
// response_aware's success rate (a throttling upstream answers fast, and would otherwise
// look like the best one), and with a Retry-After every strategy skips the upstream for
// that long (balancer.Stats.Throttle, at most maxThrottle). For the breaker a 429 stays a
// success: it is a quota signal, not a health one, and opening the breaker would take the
// upstream away for a whole cooldown where Retry-After says how long is enough.
// A client that leaves mid-attempt is not the upstream's fault and counts as a
// success, except for a half-open probe, which counts as a failure so that an unproven
// upstream is not declared healthy (attempt.settle).
//
// Timeouts: a non-stream group's request timeout bounds the attempt up to the end of the
// answer; stream groups (http_client.stream true) have none, as time to first token can be
// minutes. The idle timeout bounds the silence during each body read (relay.go).

// attempt is one upstream exchange.
type attempt struct {
	m      *config.Member
	done   func(bool) // the breaker slot; called once, by settle
	cancel context.CancelCauseFunc
	ctx    context.Context
	timer  *time.Timer
	span   trace.Span
	resp   *http.Response
	// err is the transport's error, or the error that broke the answer's body.
	err  error
	kind errKind
	// wrote is set once net/http reports the whole request written (into the
	// connection's buffer); conn and sent are the connection the transport gave the
	// attempt and its byte count then. All are reset when the transport goes for another
	// connection (its own retry of a request it had not sent); see classify.
	wrote atomic.Bool
	conn  atomic.Pointer[config.CountingConn]
	sent  atomic.Int64
	trace httptrace.ClientTrace
}

// nothingSent reports whether not one byte left on the attempt's connection since the
// transport gave it to the attempt (see config.CountingConn): net/http reports a request
// written once it is in the connection's buffer, before the buffer reaches the socket.
func (a *attempt) nothingSent() bool {
	c := a.conn.Load()
	return c != nil && c.Written() == a.sent.Load()
}

// serverClosedIdle reports the error for a pooled connection the server had closed as
// idle (its FIN crossed the request): the server did not read the request. Neither the
// upstream client nor net/http's Transport (which exports no value to compare with, so it
// is known by its text) retries it by itself for a POST.
func serverClosedIdle(err error) bool {
	return errors.Is(err, upstream.ErrServerClosedIdle) || (err != nil && err.Error() == upstream.ErrServerClosedIdle.Error())
}

// traced returns ctx carrying a's client trace, which records whether the request was
// written.
func (a *attempt) traced(ctx context.Context) context.Context {
	a.trace.GetConn = func(string) {
		a.wrote.Store(false)
		a.conn.Store(nil)
	}
	a.trace.GotConn = func(i httptrace.GotConnInfo) {
		if c := config.Counting(i.Conn); c != nil {
			a.sent.Store(c.Written())
			a.conn.Store(c)
		}
	}
	a.trace.WroteRequest = func(i httptrace.WroteRequestInfo) { a.wrote.Store(i.Err == nil) }
	return httptrace.WithClientTrace(ctx, &a.trace)
}

// classify sorts a transport error: a timeout; connect_error when the upstream cannot
// have received the request (no connection: dial, DNS, TLS handshake, outbound proxy; or
// the connection failed before the whole request was written to it); reset when the
// connection was lost after that (the upstream may have the request, and may have acted
// on it); other for the rest (a malformed answer). "Written" is net/http's report checked
// against the bytes that reached the socket (nothingSent), and a pooled connection the
// server had already closed as idle (serverClosedIdle) is connect_error too: the server
// never read the request. Where the two cannot be told apart (an HTTP/2 connection busy
// with other streams), the doubt goes to reset: a request is not sent twice.
func (a *attempt) classify(err error) errKind {
	if k := upstreamErrKind(err); k == kindTimeout {
		return k
	}
	if c := context.Cause(a.ctx); c == errRequestTimeout || c == errIdleTimeout {
		return kindTimeout
	}
	if !a.wrote.Load() || a.nothingSent() || serverClosedIdle(err) {
		return kindConnect
	}
	if upstreamErrKind(err) == kindConnect {
		return kindReset
	}
	return kindOther
}

// failed is the one failure predicate: whether the attempt's outcome counts against its
// upstream (see the comment at the top of this file). A client that left is the caller's
// to tell apart.
func (a *attempt) failed() bool {
	return a.err != nil || a.resp.StatusCode >= 500
}

// scored is the outcome the balancer learns: not failed, and not throttled (429).
func (a *attempt) scored() bool {
	return !a.failed() && a.resp.StatusCode != http.StatusTooManyRequests
}

// maxThrottle caps how long a Retry-After keeps an upstream out of the picks.
const maxThrottle = 10 * time.Minute

// settle reports the attempt's outcome to its breaker slot and the breaker counters; it is
// called exactly once per attempt. clientGone says the client left before the outcome was
// known: a success, except for a half-open probe.
func (a *attempt) settle(clientGone bool) {
	ok := !a.failed()
	if clientGone {
		ok = a.m.Breaker.State() != breaker.HalfOpen
	}
	a.done(ok)
	if ok {
		a.m.BreakerSuccess.Inc()
	} else {
		a.m.BreakerFailure.Inc()
	}
}

// endSpan ends the attempt's client span (when tracing), with an error status when the
// attempt failed.
func (a *attempt) endSpan() {
	if a.span == nil {
		return
	}
	if a.err != nil {
		a.span.SetStatus(codes.Error, a.err.Error())
	} else if a.failed() {
		a.span.SetStatus(codes.Error, "")
	}
	a.span.End()
}

// close releases the attempt's timer and context.
func (a *attempt) close() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.cancel(nil)
}

// try sends one attempt to m and waits for the answer's headers. The balancer's scoring
// of m learns the outcome here, the breaker when the attempt is settled.
func (ex *exchange) try(g *config.Group, m *config.Member, done func(bool)) *attempt {
	a := &attempt{m: m, done: done}
	a.ctx, a.cancel = context.WithCancelCause(ex.upstreamCtx())
	a.ctx = a.traced(a.ctx)
	if !g.Stream && g.RequestTimeout > 0 {
		cancel := a.cancel
		a.timer = time.AfterFunc(g.RequestTimeout, func() { cancel(errRequestTimeout) })
	}
	out, parts := ex.outboundRequest(a.ctx, g, m)
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
	if a.resp != nil {
		// Nothing reads the outbound request past this point, and an open stream would
		// hold it (headers, URL, the request itself: about 1 KiB) until its end.
		a.resp.Request = nil
	}
	if g.Transport.Direct(out) {
		parts.release()
	}
	m.Requests.Inc()
	m.Duration.Observe(lat.Seconds())
	if a.err != nil && ex.clientGone() {
		end(lat, true)
		return a
	}
	end(lat, a.err == nil && a.scored())
	if a.err != nil {
		a.kind = a.classify(a.err)
		switch a.kind {
		case kindConnect:
			m.ErrorCounter(config.UpstreamErrConnect).Inc()
		case kindReset:
			m.ErrorCounter(config.UpstreamErrReset).Inc()
			a.err = &lostError{a.err}
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
	if a.resp.StatusCode == http.StatusTooManyRequests {
		m.RateLimited.Inc()
		now := t0.Add(lat)
		if d := parseRetryAfter(a.resp.Header.Get("Retry-After"), now); d > 0 {
			m.Stats.Throttle(now.Add(min(d, maxThrottle)))
		}
	}
	if a.failed() {
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

// outboundParts are an outbound request's URL and header map, pooled. When the upstream
// client exchanges a request itself (Client.Direct), it holds no reference to it once
// RoundTrip has returned, and the parts serve a later request: a stream opening does not
// allocate its own, nor does an open stream hold them. A request that went through the
// Transport, which may still be writing it, leaves its parts to the collector.
type outboundParts struct {
	url    url.URL
	header http.Header
}

var outboundPool = sync.Pool{New: func() any { return &outboundParts{header: make(http.Header, 16)} }}

// maxPooledHeader is the most entries a pooled header map may have held: a map keeps the
// room it grew to, and a rare request with very many headers should not pin it.
const maxPooledHeader = 64

func (p *outboundParts) release() {
	if len(p.header) > maxPooledHeader {
		return
	}
	clear(p.header)
	p.url = url.URL{}
	outboundPool.Put(p)
}

// outboundRequest is the request sent to m: the client's, rewritten (outbound.go), with
// the body replayed from memory when it was read; its URL and header are parts (released
// by the caller when the transport is done with them).
func (ex *exchange) outboundRequest(ctx context.Context, g *config.Group, m *config.Member) (*http.Request, *outboundParts) {
	r := ex.r
	out := r.WithContext(ctx)
	parts := outboundPool.Get().(*outboundParts)
	targetURL(&parts.url, m.URL, r.URL)
	out.URL = &parts.url
	out.Host = ""
	out.RequestURI = ""
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.Close = false
	out.TransferEncoding = nil
	out.Trailer = nil
	outboundHeader(parts.header, r.Header, r, g, m, ex.idHdr, ex.fw.ClientAuth != validate.ClientAuthOff)
	out.Header = parts.header
	if ex.stripUsage {
		// The answer is edited on its way (usage.go): it must come plain.
		delete(out.Header, "Accept-Encoding")
	}
	switch {
	case ex.body != nil:
		body := ex.body
		out.Body = body.reader()
		out.ContentLength = int64(len(body.data()))
		out.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
	case !ex.hasBody():
		out.Body, out.ContentLength = nil, 0
	}
	return out, parts
}

// complete answers the client with a's outcome: the upstream's answer relayed, or the
// proxy's error.
func (ex *exchange) complete(g *config.Group, a *attempt) {
	ex.member = a.m
	defer a.close()
	if a.err != nil {
		a.settle(ex.clientGone())
		a.endSpan()
		ex.fail(ex.errorOf(a.err), 0)
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
