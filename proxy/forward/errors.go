package forward

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"

	"github.com/llmproxy-go/llmproxy/proxy/concurrency"
)

// StatusClientClosedRequest is the status logged and counted (never written) when the
// client went away before the answer (nginx's 499).
const StatusClientClosedRequest = 499

// Error is an error made by the proxy itself, with the status and the OpenAI-style body
// that answer it. Kind is the error label of llmproxy_http_request_errors_total.
type Error struct {
	Status int
	Kind   string
	Type   string
	Msg    string
	body   []byte
}

func (e *Error) Error() string { return e.Msg }

func newError(status int, kind, typ, msg string) *Error {
	e := &Error{Status: status, Kind: kind, Type: typ, Msg: msg}
	e.body = appendErrorJSON(nil, msg, typ, kind)
	e.body = append(e.body, '\n')
	return e
}

// The errors the proxy answers with. Bodies are rendered once.
var (
	ErrRateLimited       = newError(http.StatusTooManyRequests, "rate_limited", "rate_limit_error", "rate limit exceeded")
	ErrBodyTooLarge      = newError(http.StatusRequestEntityTooLarge, "body_too_large", "invalid_request_error", "request body too large")
	ErrBadBody           = newError(http.StatusBadRequest, "bad_request_body", "invalid_request_error", "cannot read request body")
	ErrBadPath           = newError(http.StatusBadRequest, "invalid_path", "invalid_request_error", "request path has a dot segment or a control character")
	ErrMethodNotAllowed  = newError(http.StatusMethodNotAllowed, "method_not_allowed", "invalid_request_error", "method not allowed")
	ErrBodyTimeout       = newError(http.StatusRequestTimeout, "body_timeout", "invalid_request_error", "request body not received in time")
	ErrNoHealthy         = newError(http.StatusServiceUnavailable, "no_healthy_upstream", "upstream_error", "no healthy upstream")
	ErrQueueFull         = newError(http.StatusServiceUnavailable, "queue_full", "upstream_error", "request dropped: queue is full")
	ErrQueueTimeout      = newError(http.StatusServiceUnavailable, "queue_timeout", "upstream_error", "request dropped: queue timeout")
	ErrUnreachable       = newError(http.StatusBadGateway, "upstream_unreachable", "upstream_error", "upstream unreachable")
	ErrUpstreamBroken    = newError(http.StatusBadGateway, "upstream_error", "upstream_error", "upstream connection failed")
	ErrUpstreamTimeout   = newError(http.StatusGatewayTimeout, "upstream_timeout", "upstream_error", "upstream timeout")
	ErrNoForward         = newError(http.StatusServiceUnavailable, "forward_not_configured", "upstream_error", "forward is not configured")
	ErrClientGone        = newError(StatusClientClosedRequest, "client_closed_request", "", "client closed request")
	ErrStreamInterrupted = newError(http.StatusBadGateway, "stream_interrupted", "upstream_error", "upstream stream interrupted")
	// ErrNotCached answers a request with Cache-Control: only-if-cached that the cache
	// cannot answer (RFC 9111 section 5.2.1.7: 504).
	ErrNotCached = newError(http.StatusGatewayTimeout, "not_cached", "cache_miss", "no cached answer (only-if-cached)")
)

// errIdleTimeout and errRequestTimeout are the causes of an attempt's context when one of
// the group's timeouts fired.
var (
	errIdleTimeout    = errors.New("upstream idle timeout")
	errRequestTimeout = errors.New("upstream request timeout")
)

// errorFor is the one place that maps an error to the proxy's answer. clientCtx is the
// inbound request's context: when it is done the client left, whatever err says.
func errorFor(clientCtx context.Context, err error) *Error {
	var pe *Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &pe):
		return pe
	case clientCtx.Err() != nil:
		return ErrClientGone
	case errors.As(err, &mbe):
		return ErrBodyTooLarge
	case errors.Is(err, concurrency.ErrQueueFull):
		return ErrQueueFull
	case errors.Is(err, concurrency.ErrQueueTimeout):
		return ErrQueueTimeout
	}
	var lost *lostError
	if errors.As(err, &lost) && upstreamErrKind(err) != kindTimeout {
		return ErrUpstreamBroken
	}
	switch upstreamErrKind(err) {
	case kindTimeout:
		return ErrUpstreamTimeout
	case kindConnect:
		return ErrUnreachable
	}
	return ErrUpstreamBroken
}

type errKind uint8

const (
	kindOther errKind = iota
	kindConnect
	kindTimeout
	// kindReset: the connection was lost after the request was written (attempt.classify).
	kindReset
)

// lostError is an attempt's error when its connection was lost after the request was
// written: the upstream may have it, so the proxy says the connection failed rather than
// that the upstream is unreachable.
type lostError struct{ err error }

func (e *lostError) Error() string {
	return "connection lost after the request was written: " + e.err.Error()
}
func (e *lostError) Unwrap() error { return e.err }

// upstreamErrKind classifies a transport error by its type alone. Connect errors: the dial
// failed (refused, unreachable, DNS, outbound proxy), or the connection was reset or closed
// before any answer (whether the request had been written is attempt.classify's to tell).
// Timeouts: the group's request or idle timeout, the connect timeout, or any net timeout.
func upstreamErrKind(err error) errKind {
	if errors.Is(err, errIdleTimeout) || errors.Is(err, errRequestTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return kindTimeout
	}
	if isTimeout(err) {
		return kindTimeout
	}
	var oe *net.OpError
	if errors.As(err, &oe) && (oe.Op == "dial" || oe.Op == "proxyconnect") {
		return kindConnect
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE) {
		return kindConnect
	}
	return kindOther
}

// writeError answers with e's status and body; a client-gone error writes nothing.
func writeError(w http.ResponseWriter, e *Error, retryAfterSec int) {
	if e.Status == StatusClientClosedRequest {
		return
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(e.body))}
	if e == ErrBodyTimeout {
		// The rest of the body is still on its way: the connection cannot be reused.
		h["Connection"] = closeHeader
	}
	if retryAfterSec > 0 {
		h["Retry-After"] = []string{strconv.Itoa(retryAfterSec)}
	}
	w.WriteHeader(e.Status)
	w.Write(e.body)
}

var (
	jsonContentType = []string{"application/json"}
	closeHeader     = []string{"close"}
)

// appendErrorJSON appends {"error":{"message":…,"type":…,"code":…}}.
func appendErrorJSON(b []byte, msg, typ, code string) []byte {
	b = append(b, `{"error":{"message":`...)
	b = strconv.AppendQuote(b, msg)
	b = append(b, `,"type":`...)
	b = strconv.AppendQuote(b, typ)
	b = append(b, `,"code":`...)
	b = strconv.AppendQuote(b, code)
	return append(b, "}}"...)
}
