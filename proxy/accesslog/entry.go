package accesslog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Entry is the access-log record of one request. Optional fields at their zero value are
// left out of the line, as documented on each.
type Entry struct {
	// Time is when the request ended.
	Time      time.Time
	RequestID string
	Forward   string
	Method    string
	// Path is the request's path (never its query).
	Path string
	// Route is the matched route's pattern ("default" when none matched).
	Route string
	// Status is the status written, or 499 when the client left first.
	Status int
	// Bytes is the number of body bytes written to the client.
	Bytes int64
	// Duration is the request's duration, logged in milliseconds with microsecond precision.
	Duration time.Duration
	// Client is the client's address: the peer's host:port, or the address X-Forwarded-For
	// names when the peer is a trusted proxy (forwards[].trusted_proxies).
	Client string
	// Peer is the peer's host:port when Client came from X-Forwarded-For; "" leaves it out.
	Peer string
	// TraceID is the request's trace id; "" leaves it out.
	TraceID string
	// Group is the upstream group; "" leaves it out.
	Group string
	// Upstream is the upstream that answered; "" leaves it and Attempts out.
	Upstream string
	Attempts int
	// Model is the request body's model; "" leaves it out.
	Model string
	// Consumer is the client's consumer; "" leaves it out.
	Consumer string
	// Tokens says whether PromptTokens and CompletionTokens were read from the answer;
	// false leaves them out.
	Tokens                         bool
	PromptTokens, CompletionTokens int64
	// Error is the kind of the proxy's own error; "" leaves it out.
	Error string
	// Cache is the response cache's result (hit, miss, coalesced, bypass, …); "" (a group
	// without a cache) leaves it out.
	Cache string
}

// AppendJSON appends e as one JSON line (newline included), the same line log/slog's
// JSONHandler writes for an Info record "request" with e's fields as attributes:
//
//	{"time":"…","level":"INFO","msg":"request","request_id":"…","forward":"…",…}
//
// It does not allocate beyond growing b.
func (e *Entry) AppendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request","request_id":`...)
	b = appendString(b, e.RequestID)
	b = appendStringField(b, "forward", e.Forward)
	b = appendStringField(b, "method", e.Method)
	b = appendStringField(b, "path", e.Path)
	b = appendStringField(b, "route", e.Route)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, e.Duration.Microseconds())
	b = appendStringField(b, "client", e.Client)
	if e.Peer != "" {
		b = appendStringField(b, "peer", e.Peer)
	}
	if e.TraceID != "" {
		b = appendStringField(b, "trace_id", e.TraceID)
	}
	if e.Group != "" {
		b = appendStringField(b, "group", e.Group)
	}
	if e.Upstream != "" {
		b = appendStringField(b, "upstream", e.Upstream)
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(e.Attempts), 10)
	}
	if e.Model != "" {
		b = appendStringField(b, "model", e.Model)
	}
	if e.Consumer != "" {
		b = appendStringField(b, "consumer", e.Consumer)
	}
	if e.Tokens {
		b = append(b, `,"prompt_tokens":`...)
		b = strconv.AppendInt(b, e.PromptTokens, 10)
		b = append(b, `,"completion_tokens":`...)
		b = strconv.AppendInt(b, e.CompletionTokens, 10)
	}
	if e.Error != "" {
		b = appendStringField(b, "error", e.Error)
	}
	if e.Cache != "" {
		b = appendStringField(b, "cache", e.Cache)
	}
	return append(b, "}\n"...)
}

// appendStringField appends ,"key":"value"; key needs no escaping.
func appendStringField(b []byte, key, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// appendString appends s as a JSON string, escaped as log/slog escapes: '"', '\\' and
// control characters (\n, \r, \t by name, others as \u00XX), invalid UTF-8 as \ufffd, and
// U+2028 and U+2029 (which break JavaScript consumers); '<', '>' and '&' are kept.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	done := 0 // s[:done] is in b
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[done:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			done = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[done:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[done:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		done = i
	}
	b = append(b, s[done:]...)
	return append(b, '"')
}

// appendMillis appends us microseconds as milliseconds, as encoding/json (and so slog)
// writes float64(us)/1000: the shortest decimal, here at most three decimals with no
// trailing zero. Integer arithmetic does it without strconv's float formatting, exactly
// up to maxExactMillis; a negative or longer duration (11 days) goes through strconv, whose
// float64 rounds the last decimals of much longer ones.
func appendMillis(b []byte, us int64) []byte {
	if us < 0 || us >= maxExactMillis {
		return strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64)
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return b
	}
	d := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for d[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, d[:n]...)
}

// maxExactMillis bounds the microseconds appendMillis writes with integers.
const maxExactMillis = 1e12
