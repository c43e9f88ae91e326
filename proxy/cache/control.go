package cache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Directives are the cache directives of a request (RFC 9111 section 5.2.1) that the
// cache honours.
type Directives struct {
	// NoCache: do not answer from the cache; the fresh answer may be stored.
	NoCache bool
	// NoStore: neither answer from the cache nor store the answer.
	NoStore bool
	// OnlyIfCached: answer from the cache or with 504, never go upstream.
	OnlyIfCached bool
	// MaxAge, when HasMaxAge, is the oldest entry the client accepts.
	MaxAge    time.Duration
	HasMaxAge bool
}

// ParseDirectives reads the Cache-Control headers of a request; without any, a
// "Pragma: no-cache" (HTTP/1.0) counts as no-cache (RFC 9111 section 5.4). Unknown
// directives and malformed max-age values are ignored. It does not allocate.
func ParseDirectives(h http.Header) Directives {
	var d Directives
	cc := h["Cache-Control"]
	if len(cc) == 0 {
		for _, v := range h["Pragma"] {
			if hasToken(v, "no-cache") {
				d.NoCache = true
			}
		}
		return d
	}
	for _, v := range cc {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			name, arg, _ := strings.Cut(strings.TrimSpace(item), "=")
			name = strings.TrimSpace(name)
			switch {
			case strings.EqualFold(name, "no-cache"):
				d.NoCache = true
			case strings.EqualFold(name, "no-store"):
				d.NoStore = true
			case strings.EqualFold(name, "only-if-cached"):
				d.OnlyIfCached = true
			case strings.EqualFold(name, "max-age"):
				arg = strings.Trim(strings.TrimSpace(arg), `"`)
				if n, err := strconv.ParseUint(arg, 10, 32); err == nil {
					secs := min(n, 1<<31-1)
					if !d.HasMaxAge || time.Duration(secs)*time.Second < d.MaxAge {
						d.MaxAge, d.HasMaxAge = time.Duration(secs)*time.Second, true
					}
				}
			}
		}
	}
	return d
}

// Storable reports whether an upstream answer with header h may be stored: not when its
// Cache-Control says no-store, nor, in a shared cache (entries served to other callers),
// when it says private.
func Storable(h http.Header, shared bool) bool {
	for _, v := range h["Cache-Control"] {
		if hasToken(v, "no-store") || (shared && hasToken(v, "private")) {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds token (case-insensitive; a
// token with an argument, like private="x", counts).
func hasToken(v, token string) bool {
	for v != "" {
		var item string
		item, v, _ = strings.Cut(v, ",")
		name, _, _ := strings.Cut(strings.TrimSpace(item), "=")
		if strings.EqualFold(strings.TrimSpace(name), token) {
			return true
		}
	}
	return false
}

// Response header names and the values of HeaderResult.
const (
	// HeaderResult is X-PROXY-CACHE (in canonical form): HIT, MISS or BYPASS.
	HeaderResult = "X-Proxy-Cache"
	// HeaderStatus is RFC 9211's Cache-Status.
	HeaderStatus = "Cache-Status"
	// HeaderAge is Age (RFC 9111 section 5.1), on hits.
	HeaderAge = "Age"
)

// Result is the outcome of a cacheable request, as X-PROXY-CACHE and Cache-Status say it.
type Result uint8

// Results.
const (
	// Miss: looked up, not found; the answer came from upstream.
	Miss Result = iota
	// Hit: answered from the cache, no upstream request.
	Hit
	// Coalesced: answered with the answer of an identical request in flight (one upstream
	// request for both); shown as a hit.
	Coalesced
	// Bypass: not looked up and not stored (request no-store, or not cacheable).
	Bypass
	// Refresh: not looked up because the request said no-cache; the answer may be stored.
	Refresh
	// Stale: an entry was found but it is older than the request's max-age.
	Stale
	// Unavailable: the backend did not answer the lookup in time (or failed).
	Unavailable
	// NotCached: only-if-cached and nothing stored: answered 504.
	NotCached
)

var (
	valueHit    = []string{"HIT"}
	valueMiss   = []string{"MISS"}
	valueBypass = []string{"BYPASS"}

	statusMiss        = []string{"llmproxy; fwd=uri-miss"}
	statusCoalesced   = []string{"llmproxy; hit; detail=coalesced"}
	statusBypass      = []string{"llmproxy; fwd=bypass"}
	statusRefresh     = []string{"llmproxy; fwd=request"}
	statusStale       = []string{"llmproxy; fwd=stale"}
	statusUnavailable = []string{"llmproxy; fwd=miss; detail=backend-unavailable"}
	statusNotCached   = []string{"llmproxy; detail=only-if-cached"}
)

// SetHeaders writes X-PROXY-CACHE and Cache-Status for r into h. Hits (Result Hit) are
// written by SetHitHeaders, which also knows the entry's age and remaining lifetime.
// Header values are shared, read-only slices: nothing is allocated.
func SetHeaders(h http.Header, r Result) {
	switch r {
	case Hit, Coalesced:
		h[HeaderResult] = valueHit
		h[HeaderStatus] = statusCoalesced
	case Bypass:
		h[HeaderResult] = valueBypass
		h[HeaderStatus] = statusBypass
	case Refresh:
		h[HeaderResult] = valueMiss
		h[HeaderStatus] = statusRefresh
	case Stale:
		h[HeaderResult] = valueMiss
		h[HeaderStatus] = statusStale
	case Unavailable:
		h[HeaderResult] = valueMiss
		h[HeaderStatus] = statusUnavailable
	case NotCached:
		h[HeaderResult] = valueMiss
		h[HeaderStatus] = statusNotCached
	default:
		h[HeaderResult] = valueMiss
		h[HeaderStatus] = statusMiss
	}
}

// SetHitHeaders writes the headers of a hit on an entry of age age that lives ttlLeft
// more: X-PROXY-CACHE: HIT, Cache-Status: llmproxy; hit; ttl=N and Age: N (seconds,
// rounded down; ttl at least 0).
func SetHitHeaders(h http.Header, age, ttlLeft time.Duration) {
	h[HeaderResult] = valueHit
	secs := max(int64(ttlLeft/time.Second), 0)
	h[HeaderStatus] = []string{"llmproxy; hit; ttl=" + strconv.FormatInt(secs, 10)}
	h[HeaderAge] = []string{strconv.FormatInt(max(int64(age/time.Second), 0), 10)}
}
