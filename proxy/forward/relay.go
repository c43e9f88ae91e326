package forward

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/llmproxy-go/llmproxy/proxy/config"
	"go.opentelemetry.io/otel/attribute"
)

// Relay: an event stream (text/event-stream) or an answer of unknown length is flushed
// after every write; an event stream's headers are flushed at once, before the first
// token. An upstream that breaks mid-stream ends the client's event stream with
// `data: {"error":{…}}` (OpenAI shape); any other broken body aborts the response
// (http.ErrAbortHandler) so the client sees a broken answer, never a truncated success.
//
// Tokens: usage is read from plain (not content-encoded) answers without holding them
// back: event streams through a line scanner that only copies an unfinished line, JSON
// answers through a 16 KiB tail window (usage comes last in OpenAI and Anthropic answers).

// tailSize is how much of the end of a non-stream JSON answer is kept to read its usage
// (OpenAI, Anthropic and their imitators put usage last).
const tailSize = 16 << 10

var tailPool = sync.Pool{New: func() any { b := make([]byte, 0, tailSize); return &b }}

// relay writes the upstream answer to the client: status, headers (hop-by-hop removed),
// then the body (copyBody), flushed after every write for event streams and
// unknown-length bodies. It counts tokens on the way and settles the attempt's breaker
// slot once the body has ended.
//
// An open stream spends its life blocked in a read at the bottom of this call chain, on
// the client connection's goroutine, whose stack keeps the largest size it ever needed.
// So the steps are separate functions with small frames: with them, the deepest point
// (net/http writing the response headers, ~3.5 KiB of its own) fits an 8 KiB stack
// rather than 16 KiB, for every open stream.
func (ex *exchange) relay(g *config.Group, a *attempt) {
	rc, sse := ex.writeHead(a.resp)
	mt := ex.meterFor(a.resp, sse)
	var body io.ReadCloser = a.resp.Body
	if g.IdleTimeout > 0 {
		body = newIdleBody(body, g.IdleTimeout, a.cancel)
	}
	readErr, clientGone, ended := ex.copyBody(body, rc, &mt)
	body.Close()
	ex.endRelay(g, a, rc, sse, &mt, readErr, clientGone, ended)
}

// writeHead writes the answer's status and headers. rc is non-nil when the body must be
// flushed after every write (event streams and unknown lengths); an event stream's
// headers are flushed at once, so the client learns that its stream is open as it would
// talking to the upstream directly, rather than when the first token comes (which can
// take minutes).
func (ex *exchange) writeHead(resp *http.Response) (rc *http.ResponseController, sse bool) {
	h := ex.w.Header()
	copyResponseHeader(h, resp.Header)
	if up := resp.Header["X-Request-Id"]; len(up) > 0 && up[0] != ex.reqID {
		h["X-Upstream-Request-Id"] = up
	}
	h["X-Request-Id"] = ex.idHdr
	if ex.consumer != nil {
		ex.consumerHead(h, resp)
	}
	ex.cacheRelayStart(h, resp)
	ex.status = resp.StatusCode
	ex.w.WriteHeader(resp.StatusCode)
	sse = strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if sse || resp.ContentLength < 0 {
		rc = http.NewResponseController(ex.w)
	}
	if sse {
		_ = rc.Flush()
	}
	return rc, sse
}

// meter counts the tokens of an answer as it is relayed: an event stream through the
// line scanner, a JSON answer through the tail window; neither (zero) for other and
// content-encoded answers.
type meter struct {
	scanner *sseScanner
	tail    *[]byte
}

// meterFor returns the meter for resp.
func (ex *exchange) meterFor(resp *http.Response, sse bool) meter {
	if resp.Header.Get("Content-Encoding") != "" {
		return meter{}
	}
	switch {
	case sse:
		return meter{scanner: &sseScanner{onLine: ex.usageLine}}
	case strings.Contains(resp.Header.Get("Content-Type"), "json"):
		return meter{tail: tailPool.Get().(*[]byte)}
	}
	return meter{}
}

// copyBody copies body to the client until it ends (readErr nil), a read fails (readErr)
// or the client leaves (clientGone); ended reports that the body was read to its end or
// its error. A body with a known length is copied through a pooled copyBufSize buffer. A
// flushed body (rc non-nil: a stream) waits for the upstream's next event in a small
// pooled buffer and takes a streamBufSize one only while reads fill what they are given
// (a burst), so an open, silent stream holds streamWaitSize bytes here, not a full
// buffer. Every chunk read is metered, edited and recorded for the response cache (take),
// then written (and flushed) before the next read: nothing is held back. A client that
// leaves while followers of its cache flight read the answer ends only the writing: the
// copy reads on to the body's end for them.
func (ex *exchange) copyBody(body io.Reader, rc *http.ResponseController, mt *meter) (readErr error, clientGone, ended bool) {
	var waitp *[streamWaitSize]byte
	var bufp *[]byte // a pooled buffer while one is held
	if rc == nil {
		bufp = copyBufPool.Get().(*[]byte)
	} else {
		waitp = streamWaitPool.Get().(*[streamWaitSize]byte)
	}
	for {
		var buf []byte
		if bufp != nil {
			buf = *bufp
		} else {
			buf = waitp[:]
		}
		n, err := body.Read(buf)
		if n > 0 {
			chunk := ex.take(buf[:n], mt)
			if !clientGone && !ex.deliver(chunk, rc) {
				clientGone = true
				if !ex.relayForFollowers() {
					break
				}
			}
		}
		if rc != nil {
			switch {
			case n == len(buf) && bufp == nil:
				bufp = streamBufPool.Get().(*[]byte)
			case n < len(buf) && bufp != nil:
				streamBufPool.Put(bufp)
				bufp = nil
			}
		}
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			ended = true
			break
		}
	}
	if rc == nil {
		copyBufPool.Put(bufp)
	} else {
		if bufp != nil {
			streamBufPool.Put(bufp)
		}
		streamWaitPool.Put(waitp)
	}
	return readErr, clientGone, ended
}

// take counts the tokens in chunk, takes out the usage the client did not ask for
// (usage.go) and records the rest in the response cache's flight, if the answer is shared
// or stored; it returns what the client gets of chunk.
func (ex *exchange) take(chunk []byte, mt *meter) []byte {
	if mt.scanner != nil {
		mt.scanner.Write(chunk)
	} else if mt.tail != nil {
		*mt.tail = appendTail(*mt.tail, chunk)
	}
	if ex.strip != nil {
		chunk = ex.strip.filter(chunk)
	}
	if f := ex.cache.flight; f != nil {
		f.Write(chunk)
	}
	return chunk
}

// deliver writes chunk to the client (flushed when rc is set); false means the client is
// gone. It is the one place the answer's body reaches the client (for event streams,
// whole or partial frames as the upstream sent them).
func (ex *exchange) deliver(chunk []byte, rc *http.ResponseController) bool {
	w, err := ex.w.Write(chunk)
	ex.written += int64(w)
	if err != nil {
		return false
	}
	if rc != nil {
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
	}
	return true
}

// endRelay finishes the relay once the body has ended: token counts, the response cache
// (an answer read to its end is completed, shared and stored, or failed), the breaker
// slot, the span, and for an upstream that broke mid-answer, the end the client sees.
func (ex *exchange) endRelay(g *config.Group, a *attempt, rc *http.ResponseController, sse bool, mt *meter, readErr error, clientGone, ended bool) {
	m := a.m
	if mt.scanner != nil {
		mt.scanner.Close()
	}
	if ex.strip != nil {
		if rest := ex.strip.flush(); len(rest) > 0 {
			if f := ex.cache.flight; f != nil {
				f.Write(rest)
			}
			if !clientGone {
				w, _ := ex.w.Write(rest)
				ex.written += int64(w)
			}
		}
	}
	if tp := mt.tail; tp != nil {
		ex.usage.scan(*tp)
		*tp = (*tp)[:0]
		tailPool.Put(tp)
	}
	if ex.usage.seen {
		m.PromptTokens.Add(float64(ex.usage.prompt))
		m.CompletionTokens.Add(float64(ex.usage.completion))
		if a.span != nil {
			a.span.SetAttributes(attribute.Int64("gen_ai.usage.input_tokens", ex.usage.prompt), attribute.Int64("gen_ai.usage.output_tokens", ex.usage.completion))
		}
	}
	if ended {
		ex.cacheRelayEnd(a.resp, readErr, sse)
	}

	if clientGone || ex.clientGone() {
		a.settle(true)
		a.endSpan()
		ex.status = StatusClientClosedRequest
		ex.perr = ErrClientGone
		return
	}
	if readErr != nil {
		// The upstream broke mid-answer: a failure for its breaker; the client must not
		// mistake the truncated answer for a complete one.
		a.err = readErr
		a.settle(false)
		m.ErrorCounter(config.UpstreamErrStream).Inc()
		a.endSpan()
		kind := "stream_broken"
		if upstreamErrKind(readErr) == kindTimeout || errors.Is(readErr, errIdleTimeout) {
			kind = "idle_timeout"
		}
		ex.h.logger.LogAttrs(ex.ctx, slog.LevelWarn, "upstream answer interrupted",
			slog.String("request_id", ex.reqID), slog.String("group", g.Name), slog.String("upstream", m.Name),
			slog.String("reason", kind), slog.String("error", readErr.Error()))
		ex.perr = ErrStreamInterrupted
		if sse {
			ex.w.Write(sseErrorEvent)
			if rc != nil {
				rc.Flush()
			}
			return
		}
		// Abort the response (net/http then resets the stream or closes the connection
		// without the final chunk) after the bookkeeping, which runs in deferred calls.
		panic(http.ErrAbortHandler)
	}
	a.settle(false)
	a.endSpan()
}

// sseErrorEvent ends a client's event stream whose upstream broke.
var sseErrorEvent = func() []byte {
	b := []byte("data: ")
	b = appendErrorJSON(b, ErrStreamInterrupted.Msg, ErrStreamInterrupted.Type, ErrStreamInterrupted.Kind)
	return append(b, "\n\n"...)
}()

// usageLine is the SSE scanner's line callback: data lines mentioning usage are parsed.
func (ex *exchange) usageLine(line []byte) {
	if p, ok := sseData(line); ok && len(p) > 0 && p[0] == '{' {
		ex.usage.scan(p)
	}
}

// appendTail appends p to tail keeping at most tailSize bytes, the last ones.
func appendTail(tail, p []byte) []byte {
	if len(p) >= tailSize {
		return append(tail[:0], p[len(p)-tailSize:]...)
	}
	if over := len(tail) + len(p) - tailSize; over > 0 {
		n := copy(tail, tail[over:])
		tail = tail[:n]
	}
	return append(tail, p...)
}
