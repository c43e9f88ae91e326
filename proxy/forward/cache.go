package forward

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/llmproxy-go/llmproxy/proxy/cache"
	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// Response cache (the group's cache block; see package cache).
//
// The cache step runs once the group, the body and the model are known and before a
// concurrency slot or an upstream is taken, so a hit costs neither. GET and POST requests
// are cacheable; anything else is a bypass. The request's Cache-Control decides:
// no-store skips the cache both ways, no-cache skips the lookup but stores the fresh
// answer, max-age=N refuses older entries, only-if-cached answers 504 rather than going
// upstream.
//
// Otherwise, with a memory backend, a hit found at once is written at once. Else the
// request joins the flight of its key. The leader looks the key up: a hit is written at
// once (and shared with the followers); on a miss the leader goes upstream and
// the answer is shared as it arrives: a follower writes the same status and stored headers
// and then every byte from the first, live. Only a 2xx answer that the upstream did not
// mark no-store is shared; anything else releases the followers to go upstream on their
// own (no error fans out). While followers read, the leader's upstream request no longer
// depends on its own client: if that client leaves, the answer goes on for the followers
// (and is stored), and is cancelled only when the last of them leaves too.
//
// An answer is stored when it is complete: the whole body read without error, at most
// max_object_bytes, and for an event stream ending with a complete event. A hit writes
// the stored status, headers and body (an event stream in one write: the same frames),
// counts the entry's tokens under llmproxy_cache_tokens_total and has no upstream attempt
// (no client span). Answers carry X-PROXY-CACHE, Cache-Status and, on hits, Age.
//
// Unless the cache is shared, a consumer's request is keyed by its consumer as well as its
// credential. A stream whose usage its client did not ask for is stripped of it
// (usage.go): such a request is keyed by that edit too, and its followers and its entry get
// the stream as its client gets it, the entry's tokens read from the usage the upstream
// sent.

// editStripUsage is the cache.Request.Edit of a request whose answer is stripped of the
// usage its client did not ask for.
const editStripUsage = "usage-stripped"

// cacheExchange is the cache state of one request; its zero value means no cache.
type cacheExchange struct {
	c      *cache.Cache
	key    cache.Key
	result cache.Result
	store  bool          // the answer may be stored
	flight *cache.Flight // the answer is recorded into it (a joinable flight or a private one)
	shared bool          // flight is joinable (we lead it)
	up     context.Context
	cancel context.CancelCauseFunc
	stop   func() bool // stops watching the client's context
}

// cacheableMethod reports whether answers to method are cached.
func cacheableMethod(m string) bool { return m == http.MethodPost || m == http.MethodGet }

// cacheStep runs g's cache for the request; it returns true when the request was answered
// (a hit, a shared answer, or only-if-cached's 504).
func (ex *exchange) cacheStep(g *config.Group) bool {
	c := g.Cache
	cx := &ex.cache
	cx.c = c
	h := ex.w.Header()
	m := c.Metrics()
	if !cacheableMethod(ex.r.Method) {
		cx.result = cache.Bypass
		m.Bypasses.Inc()
		cache.SetHeaders(h, cx.result)
		return false
	}
	d := cache.ParseDirectives(ex.r.Header)
	if d.NoStore && !d.OnlyIfCached {
		cx.result = cache.Bypass
		m.Bypasses.Inc()
		cache.SetHeaders(h, cx.result)
		return false
	}
	req := cache.Request{Method: ex.r.Method, Path: ex.r.URL.EscapedPath(), RawQuery: ex.r.URL.RawQuery, Header: ex.r.Header}
	if ex.body != nil {
		req.Body = ex.body.data()
	}
	if ex.consumer != nil {
		req.Consumer = ex.consumer.Name
	}
	if ex.stripUsage {
		req.Edit = editStripUsage
	}
	cx.key = c.KeyOf(&req)
	cx.store = !d.NoStore

	if d.OnlyIfCached {
		e, res := c.Lookup(ex.ctx, cx.key)
		if res == cache.Hit && fresh(e, d) {
			ex.serveEntry(e)
			return true
		}
		m.Misses.Inc()
		cx.result = cache.NotCached
		cache.SetHeaders(h, cx.result)
		ex.fail(ErrNotCached, 0)
		return true
	}
	if d.NoCache {
		cx.result = cache.Refresh
		m.Bypasses.Inc()
		cache.SetHeaders(h, cx.result)
		cx.flight = cache.NewFlight(c.MaxObjectBytes)
		return false
	}

	if fl := c.Flights(); fl != nil {
		// A local lookup costs less than joining a flight (an allocation and the lock every
		// request of the group shares, twice): a hit is served before any flight. A miss
		// joins, and the leader looks again, as another leader may have stored the answer
		// in between.
		if c.Local() {
			if e, res := c.Lookup(ex.ctx, cx.key); res == cache.Hit && fresh(e, d) {
				ex.serveEntry(e)
				return true
			}
		}
		f, leader := fl.Join(cx.key, c.MaxObjectBytes)
		if !leader {
			if ex.follow(f, d) {
				return true
			}
			// Released, or what it shared is too old for this client: go alone.
			cx.result = cache.Miss
			m.Misses.Inc()
			cache.SetHeaders(h, cx.result)
			cx.flight = cache.NewFlight(c.MaxObjectBytes)
			return false
		}
		cx.flight, cx.shared = f, true
	} else {
		cx.flight = cache.NewFlight(c.MaxObjectBytes)
	}

	e, res := c.Lookup(ex.ctx, cx.key)
	if res == cache.Hit {
		if fresh(e, d) {
			if cx.shared {
				cx.flight.Hit(e)
			}
			cx.flight = nil
			ex.serveEntry(e)
			return true
		}
		res = cache.Stale
	}
	cx.result = res
	m.Misses.Inc()
	cache.SetHeaders(h, cx.result)
	if cx.shared {
		ex.detachUpstream()
	}
	return false
}

// fresh reports whether e satisfies the request's max-age.
func fresh(e *cache.Entry, d cache.Directives) bool {
	return !d.HasMaxAge || e.Age(time.Now()) <= d.MaxAge
}

// detachUpstream makes the leader's upstream request outlive its client while followers
// read the answer: it is cancelled when the client leaves and no follower remains, or when
// the last follower leaves after the client.
func (ex *exchange) detachUpstream() {
	cx := &ex.cache
	cx.up, cx.cancel = context.WithCancelCause(context.WithoutCancel(ex.ctx))
	f, cancel := cx.flight, cx.cancel
	cx.stop = context.AfterFunc(ex.r.Context(), func() {
		abandon := func() { cancel(context.Canceled) }
		if !f.LeaderGone(abandon) {
			abandon()
		}
	})
}

// upstreamCtx is the parent context of the upstream attempts.
func (ex *exchange) upstreamCtx() context.Context {
	if ex.cache.up != nil {
		return ex.cache.up
	}
	return ex.ctx
}

// relayForFollowers reports whether the leader should keep reading an answer whose client
// has left, because followers are reading it.
func (ex *exchange) relayForFollowers() bool {
	f := ex.cache.flight
	return f != nil && ex.cache.shared && f.Followers() > 0
}

// cacheRelayStart is called by relay (writeHead) once the upstream's headers are copied
// into h: it sets the cache headers and starts sharing (and recording) the answer, or
// releases the followers when the answer is not to be shared.
func (ex *exchange) cacheRelayStart(h http.Header, resp *http.Response) {
	cx := &ex.cache
	if cx.c == nil {
		return
	}
	if up := resp.Header["Cache-Status"]; len(up) > 0 {
		// RFC 9211: each cache appends its member; ours comes after the upstream's.
		cache.SetHeaders(h, cx.result)
		h["Cache-Status"] = append(append([]string(nil), up...), h["Cache-Status"]...)
	} else {
		cache.SetHeaders(h, cx.result)
	}
	if cx.flight == nil {
		return
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 || !cache.Storable(resp.Header, cx.c.Shared) {
		cx.flight.Fail()
		cx.flight = nil
		return
	}
	length := resp.ContentLength
	if ex.strip != nil {
		length = -1 // the usage the client did not ask for is taken out (usage.go)
	}
	cx.flight.Begin(resp.StatusCode, cache.SelectHeaders(resp.Header), length)
}

// cacheRelayEnd is called by relay (endRelay) once the body was read to its end or its
// error: it completes the shared answer and stores it, or fails it.
func (ex *exchange) cacheRelayEnd(resp *http.Response, readErr error, sse bool) {
	cx := &ex.cache
	f := cx.flight
	if f == nil {
		return
	}
	cx.flight = nil
	if readErr != nil {
		f.Fail()
		return
	}
	body, ok := f.Complete(ex.usage.prompt, ex.usage.completion)
	if !ok || !cx.store || (sse && !completeEvents(body)) {
		f.Close()
		return
	}
	e := &cache.Entry{
		Status:           resp.StatusCode,
		Header:           cache.SelectHeaders(resp.Header),
		Body:             append([]byte(nil), body...),
		Stream:           sse,
		StoredAt:         time.Now(),
		TTL:              cx.c.TTL,
		Epoch:            cx.c.Epoch,
		PromptTokens:     ex.usage.prompt,
		CompletionTokens: ex.usage.completion,
	}
	cx.c.Store(cx.key, e, f.Close)
}

// completeEvents reports whether an event stream ends with a complete event (a blank line).
func completeEvents(b []byte) bool {
	return bytes.HasSuffix(b, []byte("\n\n")) || bytes.HasSuffix(b, []byte("\r\n\r\n"))
}

// cacheDone ends the request's part in the cache: a flight the relay did not end (the
// request failed before an answer) is failed, so its followers go upstream themselves.
func (ex *exchange) cacheDone() {
	cx := &ex.cache
	if cx.flight != nil {
		cx.flight.Fail()
		cx.flight = nil
	}
	if cx.stop != nil {
		cx.stop()
	}
	if cx.cancel != nil {
		cx.cancel(nil)
	}
}

// serveEntry answers with a stored entry: a hit, counted, with Age and the remaining TTL
// (also when the flight's leader found it for this request).
func (ex *exchange) serveEntry(e *cache.Entry) {
	cx := &ex.cache
	h := ex.w.Header()
	for k, v := range e.Header {
		h[k] = v
	}
	now := time.Now()
	cache.SetHitHeaders(h, e.Age(now), e.TTL-e.Age(now))
	cx.result = cache.Hit
	cx.c.CountHit(e, false)
	ex.usage = usage{prompt: e.PromptTokens, completion: e.CompletionTokens, seen: e.PromptTokens > 0 || e.CompletionTokens > 0}
	if !e.Stream {
		h["Content-Length"] = []string{strconv.Itoa(len(e.Body))}
	}
	ex.status = e.Status
	ex.w.WriteHeader(e.Status)
	n, err := ex.w.Write(e.Body)
	ex.written += int64(n)
	if err == nil && e.Stream {
		err = http.NewResponseController(ex.w).Flush()
	}
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		ex.status, ex.perr = StatusClientClosedRequest, ErrClientGone
	}
}

// follow serves the request from the flight f it joined; false when it must go upstream
// on its own (the leader failed, or shared an entry older than the request's max-age).
func (ex *exchange) follow(f *cache.Flight, d cache.Directives) bool {
	defer f.Leave()
	out, err := f.Wait(ex.r.Context())
	if err != nil {
		ex.status, ex.perr = StatusClientClosedRequest, ErrClientGone
		return true
	}
	switch out {
	case cache.Shared:
		e := f.Entry()
		if !fresh(e, d) {
			return false
		}
		ex.serveEntry(e)
		return true
	case cache.Streaming:
		ex.followStream(f)
		return true
	}
	return false
}

// followStream writes the answer being shared through f, from its first byte, as it
// arrives.
func (ex *exchange) followStream(f *cache.Flight) {
	cx := &ex.cache
	cx.result = cache.Coalesced
	cx.c.Metrics().Coalesced.Inc()
	status, hdr, length := f.Head()
	h := ex.w.Header()
	for k, v := range hdr {
		h[k] = v
	}
	cache.SetHeaders(h, cache.Coalesced)
	if length >= 0 {
		h["Content-Length"] = []string{strconv.FormatInt(length, 10)}
	}
	sse := strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
	ex.status = status
	ex.w.WriteHeader(status)
	rc := http.NewResponseController(ex.w)
	if sse {
		_ = rc.Flush()
	}
	ctx := ex.r.Context()
	off := 0
	for {
		p, done, err := f.Read(ctx, off)
		if len(p) > 0 {
			n, werr := ex.w.Write(p)
			ex.written += int64(n)
			off += len(p)
			if werr == nil {
				if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
					werr = ferr
				}
			}
			if werr != nil {
				ex.status, ex.perr = StatusClientClosedRequest, ErrClientGone
				return
			}
		}
		switch {
		case errors.Is(err, cache.ErrBroken):
			ex.perr = ErrStreamInterrupted
			if sse {
				ex.w.Write(sseErrorEvent)
				_ = rc.Flush()
				return
			}
			panic(http.ErrAbortHandler)
		case err != nil:
			ex.status, ex.perr = StatusClientClosedRequest, ErrClientGone
			return
		case done:
			prompt, completion := f.Usage()
			cx.c.CountTokens(prompt, completion)
			ex.usage = usage{prompt: prompt, completion: completion, seen: prompt > 0 || completion > 0}
			return
		}
	}
}

// cacheSpanResult is the server span's llmproxy.cache attribute.
func (ex *exchange) cacheSpanResult() {
	if ex.span == nil || ex.cache.c == nil {
		return
	}
	ex.span.SetAttributes(attribute.String("llmproxy.cache", resultName(ex.cache.result)))
}

// resultName is the access-log and span name of a cache result.
func resultName(r cache.Result) string {
	switch r {
	case cache.Hit:
		return "hit"
	case cache.Coalesced:
		return "coalesced"
	case cache.Bypass:
		return "bypass"
	case cache.Refresh:
		return "refresh"
	case cache.Stale:
		return "stale"
	case cache.Unavailable:
		return "unavailable"
	case cache.NotCached:
		return "not_cached"
	}
	return "miss"
}
