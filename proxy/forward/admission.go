package forward

import (
	"net/http"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// Admission: what a request must pass before an upstream is chosen. Each step answers the
// client itself when the request is refused and then returns false.
//
// The body is read into memory (a replayable buffer) before the group's concurrency slot
// is taken whenever it may be: when something needs it whole (routing on the model,
// retries, which send the same bytes on every attempt, tracing, for gen_ai.request.model,
// the group's response cache, whose key covers the body), and otherwise when it is small
// (a Content-Length of at most maxEarlyBody) or of unknown length (chunked; bounded by
// max_body_bytes). A client that sends its body slowly then waits for itself, holding no
// slot. Only a larger declared body streams through to the
// one attempt while it holds a slot, and forwards[].timeout.body bounds how long that
// takes. A small body (at most maxSmallBody) leaves in the same write as the request
// headers.

// Methods is the Allow header of the proxy's 405: the methods it forwards. LLM APIs use
// GET, POST and DELETE; PUT, PATCH, HEAD and OPTIONS (CORS preflights) pass too. CONNECT,
// TRACE, the HTTP/2 preface's PRI and any other method are refused: none is an API call,
// and CONNECT or TRACE would make the proxy a tunnel or a reflector.
const Methods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

var allowHeader = []string{Methods}

// checkRequestLine refuses a method the proxy does not forward (405 with Allow) and a path
// it will not forward (400, badPath). Paths are refused, not normalised: a client of an
// LLM API never sends a dot segment, so one is an attempt to reach, through an upstream
// that resolves it, something outside the upstream url's path prefix, and rewriting it
// would forward a request other than the one the client made.
func (ex *exchange) checkRequestLine() bool {
	switch ex.r.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete, http.MethodPut, http.MethodPatch, http.MethodHead, http.MethodOptions:
	default:
		ex.w.Header()["Allow"] = allowHeader
		ex.fail(ErrMethodNotAllowed, 0)
		return false
	}
	if badPath(ex.r.URL.Path) {
		ex.fail(ErrBadPath, 0)
		return false
	}
	return true
}

// badPath reports whether a request path (decoded: %2e is '.', %2f '/') is not in origin
// form ("/" first), or has a control character (NUL, CR, LF, ...) or a segment that is "."
// or "..", segments being split at '/' and at '\' (which some servers also take for a
// separator).
func badPath(p string) bool {
	if p == "" || p[0] != '/' {
		return true
	}
	seg := 0 // length of the current segment if it is all dots so far, else -1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' || p[i] == '\\' {
			if seg == 1 || seg == 2 {
				return true
			}
			seg = 0
			continue
		}
		c := p[i]
		if c < 0x20 || c == 0x7f {
			return true
		}
		if c == '.' && seg >= 0 {
			seg++
		} else {
			seg = -1
		}
	}
	return false
}

// checkRate applies the forward's per-client rate limit; the client key is the configured
// header's value, or the client's IP (clientaddr.go) when there is none.
func (ex *exchange) checkRate() bool {
	rl := ex.fw.RateLimit
	if rl == nil {
		return true
	}
	key := ""
	if rl.Header != "" {
		if v := ex.r.Header[rl.Header]; len(v) > 0 {
			key = v[0]
		}
	}
	if key == "" {
		key = ex.clientAddress()
	}
	ok, after := rl.Limiter.Allow(ex.ctx, key)
	if !ok {
		rl.Rejected.Inc()
		secs := int((after + time.Second - 1) / time.Second)
		ex.fail(ErrRateLimited, max(secs, 1))
	}
	return ok
}

// limitBody refuses a declared length over the forward's cap, caps what is read, and
// bounds the time the body may take to arrive (timedBody).
func (ex *exchange) limitBody() bool {
	limit := ex.fw.MaxBodyBytes
	if limit > 0 && ex.r.ContentLength > limit {
		ex.fail(ErrBodyTooLarge, 0)
		return false
	}
	if !ex.hasBody() {
		return true
	}
	if limit > 0 {
		ex.r.Body = http.MaxBytesReader(ex.w, ex.r.Body, limit)
	}
	if d := ex.fw.BodyTimeout; d > 0 {
		ex.in = newTimedBody(ex.r.Body, ex.w, d)
		ex.r.Body = ex.in
	}
	return true
}

// hasBody reports whether the request has a body to send.
func (ex *exchange) hasBody() bool {
	return ex.r.Body != nil && ex.r.Body != http.NoBody
}

// needsBody reports whether the body must be read into memory before the attempts to g
// (see the comment at the top of this file).
func (ex *exchange) needsBody(g *config.Group) bool {
	if ex.body != nil || !ex.hasBody() {
		return false
	}
	early := ex.r.ContentLength <= maxEarlyBody // -1: unknown length
	return g.Retry != nil || ex.h.tracer != nil || early || g.Cache != nil
}

// readBody reads the request body into a replayable buffer.
func (ex *exchange) readBody() bool {
	b, err := readBody(ex.r.Body, ex.r.ContentLength)
	if err != nil {
		e := ex.errorOf(err)
		if e != ErrBodyTooLarge && e != ErrClientGone && e != ErrBodyTimeout {
			e = ErrBadBody
		}
		ex.fail(e, 0)
		return false
	}
	ex.r.Body.Close()
	ex.body = b
	return true
}

// recordModel counts a routed request under its requested model for the control-plane
// reports. The model is read from the body when it is in memory (bodies streamed straight
// through count under "").
func (ex *exchange) recordModel() {
	model := ex.model
	if model == "" && ex.body != nil {
		model = modelOf(ex.body.data())
	}
	ex.rt.Metrics.Models.Record(model, ex.status >= 500, ex.usage.prompt, ex.usage.completion)
}

// modelOf returns the top-level "model" of a JSON body, or "".
func modelOf(body []byte) string {
	m, _ := topLevelString(body, modelKey)
	return m
}

// waitTurn takes one of g's concurrency slots, waiting in its queue when they are all
// taken. release (nil when g has no limit) gives the slot back.
func (ex *exchange) waitTurn(g *config.Group) (release func(), ok bool) {
	if g.Limiter == nil {
		return nil, true
	}
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
		return nil, false
	}
	return release, true
}
