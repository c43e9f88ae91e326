package forward

import (
	"log/slog"
	"time"
)

// The access log: one Info record per request (request and trace ids, route, group,
// upstream, status, attempts, bytes, duration, tokens) built with LogAttrs, skipped when
// the logger does not enable Info or Deps.NoAccessLog is set. Requests whose client left
// are recorded with status 499 (nothing was written to the client). Failed upstream
// attempts get their own Warn records (attempt.go, relay.go).

// logAccess writes the request's access-log record; d is its duration, traceID its trace
// ("" when not traced).
func (ex *exchange) logAccess(d time.Duration, traceID string) {
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
		slog.String("route", ex.route.Pattern()),
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
