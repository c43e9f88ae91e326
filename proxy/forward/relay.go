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
// then the body through a pooled buffer, flushed after every write for event streams and
// unknown-length bodies. It counts tokens on the way and settles the attempt's breaker
// slot once the body has ended.
func (ex *exchange) relay(g *config.Group, a *attempt) {
	resp := a.resp
	m := a.m
	h := ex.w.Header()
	copyResponseHeader(h, resp.Header)
	if up := resp.Header["X-Request-Id"]; len(up) > 0 && up[0] != ex.reqID {
		h["X-Upstream-Request-Id"] = up
	}
	h["X-Request-Id"] = ex.idHdr
	ex.status = resp.StatusCode
	ex.w.WriteHeader(resp.StatusCode)

	ct := resp.Header.Get("Content-Type")
	sse := strings.HasPrefix(ct, "text/event-stream")
	flush := sse || resp.ContentLength < 0
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(ex.w)
	}
	if sse {
		// The client learns at once that its stream is open, as it would talking to the
		// upstream directly, rather than when the first token comes (which can take minutes).
		_ = rc.Flush()
	}
	// Token counting only on plain (not content-encoded) answers.
	plain := resp.Header.Get("Content-Encoding") == ""
	var scanner *sseScanner
	var tailp *[]byte
	switch {
	case !plain:
	case sse:
		scanner = &sseScanner{onLine: ex.usageLine}
	case strings.Contains(ct, "json"):
		tailp = tailPool.Get().(*[]byte)
	}

	var body io.ReadCloser = resp.Body
	if g.IdleTimeout > 0 {
		cancel := a.cancel
		body = newIdleBody(resp.Body, g.IdleTimeout, func() { cancel(errIdleTimeout) })
	}
	pool := &copyBufPool
	if flush {
		pool = &streamBufPool
	}
	bufp := pool.Get().(*[]byte)
	buf := *bufp
	var readErr error
	clientGone := false
	for {
		n, err := body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if scanner != nil {
				scanner.Write(chunk)
			} else if tailp != nil {
				*tailp = appendTail(*tailp, chunk)
			}
			// The one place the answer's body reaches the client (for event streams,
			// whole or partial frames as the upstream sent them).
			w, werr := ex.w.Write(chunk)
			ex.written += int64(w)
			if werr != nil {
				clientGone = true
				break
			}
			if flush {
				if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
					clientGone = true
					break
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
	}
	pool.Put(bufp)
	body.Close()
	if scanner != nil {
		scanner.Close()
	}
	if tailp != nil {
		ex.usage.scan(*tailp)
		*tailp = (*tailp)[:0]
		tailPool.Put(tailp)
	}
	if ex.usage.seen {
		m.PromptTokens.Add(float64(ex.usage.prompt))
		m.CompletionTokens.Add(float64(ex.usage.completion))
		if a.span != nil {
			a.span.SetAttributes(attribute.Int64("gen_ai.usage.input_tokens", ex.usage.prompt), attribute.Int64("gen_ai.usage.output_tokens", ex.usage.completion))
		}
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
