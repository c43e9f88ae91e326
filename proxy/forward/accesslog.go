package forward

import (
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/accesslog"
)

// The access log: one entry per request (request and trace ids, route, group, upstream,
// consumer, status, attempts, bytes, duration, tokens) handed to Deps.AccessLog, which buffers it
// off the request path (package accesslog). Requests whose client left are recorded with
// status 499 (nothing was written to the client). Failed upstream attempts get their own
// Warn records in Deps.Logger (attempt.go, relay.go).

// logAccess hands the request's entry to the access log; d is the request's duration,
// end when it ended, traceID its trace ("" when not traced).
func (ex *exchange) logAccess(end time.Time, d time.Duration, traceID string) {
	al := ex.h.deps.AccessLog
	if al == nil {
		return
	}
	e := accesslog.Entry{
		Time:      end,
		RequestID: ex.reqID,
		Forward:   ex.fw.Name,
		Method:    ex.r.Method,
		Path:      ex.r.URL.Path,
		Route:     ex.route.Pattern(),
		Status:    ex.status,
		Bytes:     ex.written,
		Duration:  d,
		TraceID:   traceID,
		Model:     ex.model,
	}
	e.Client, e.Peer = ex.clientLog()
	if ex.group != nil {
		e.Group = ex.group.Name
	}
	if ex.consumer != nil {
		e.Consumer = ex.consumer.Name
	}
	if ex.member != nil {
		e.Upstream, e.Attempts = ex.member.Name, ex.attempts
	}
	if ex.usage.seen {
		e.Tokens, e.PromptTokens, e.CompletionTokens = true, ex.usage.prompt, ex.usage.completion
	}
	if ex.perr != nil {
		e.Error = ex.perr.Kind
	}
	if ex.cache.c != nil {
		e.Cache = resultName(ex.cache.result)
	}
	al.Log(&e)
}
