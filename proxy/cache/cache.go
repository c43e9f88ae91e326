// Package cache is the proxy's response cache: request keys, stored entries, the memory
// and Redis backends, single flight for identical requests in flight, and the request and
// response cache headers. It is a leaf: it imports no other package of the proxy.
//
// # Keys
//
// A Key is the SHA-256 of the method, the path and query as requested, the target group
// and its cache epoch, the canonical JSON body (key order and whitespace do not matter,
// every member does: model, temperature, tools, stream…), the VaryHeaders and, unless the
// group is shared, the caller: the credential headers (hashed into the key, never stored)
// and the consumer. Computing a key does not allocate (see BenchmarkKey).
//
// # Entries
//
// An Entry is a 2xx answer: status, StoredHeaders (content type and encoding, the
// provider's ids), body and usage. An event stream is stored as its exact SSE frames, so a
// hit replays the same stream. Shared backends hold entries in the Encode format, bodies
// above 1 KiB compressed.
//
// # Purge
//
// The group's epoch is part of every key: bumping it (the control plane's purge) makes
// every older entry unreachable at once, on every backend, with no scan; the old entries
// expire by TTL (Redis) or are dropped (memory).
//
// # Faults
//
// A cache fault never fails a request: a backend error or timeout is a miss (Cache-Status
// says backend-unavailable), counted and logged at most once per LogInterval.
package cache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Backend stores entries. Implementations must be safe for concurrent use. Get returns nil
// (and no error) when nothing live is stored under k.
type Backend interface {
	Get(ctx context.Context, k Key) (*Entry, error)
	Set(ctx context.Context, k Key, e *Entry) error
}

var (
	_ Backend = (*Memory)(nil)
	_ Backend = (*Redis)(nil)
)

// Adder is a counter that takes amounts (prometheus.Counter satisfies it).
type Adder interface{ Add(float64) }

// Metrics are one group's cache counters; nil fields are not counted.
type Metrics struct {
	Hits, Misses, Bypasses, Stores, Coalesced, BackendErrors Counter
	// PromptTokens and CompletionTokens count the tokens of answers served from the cache.
	PromptTokens, CompletionTokens Adder
}

type nopAdder struct{}

func (nopAdder) Add(float64) {}

func (m *Metrics) fill() {
	for _, c := range []*Counter{&m.Hits, &m.Misses, &m.Bypasses, &m.Stores, &m.Coalesced, &m.BackendErrors} {
		if *c == nil {
			*c = nopMetric{}
		}
	}
	if m.PromptTokens == nil {
		m.PromptTokens = nopAdder{}
	}
	if m.CompletionTokens == nil {
		m.CompletionTokens = nopAdder{}
	}
}

// LogInterval is the least time between two log records about backend errors of one
// group.
const LogInterval = 10 * time.Second

// Policy is a group's cache policy.
type Policy struct {
	// Group is the group's name; Epoch its cache epoch.
	Group string
	Epoch uint64
	// TTL is how long an entry lives.
	TTL time.Duration
	// MaxObjectBytes is the largest answer body stored.
	MaxObjectBytes int
	// Shared leaves the caller out of the key.
	Shared bool
}

// Cache is one group's compiled cache: its policy, backend, flights and metrics. It is
// immutable and safe for concurrent use; a configuration swap builds a new one around the
// same backend and flights.
type Cache struct {
	Policy
	backend Backend
	flights *Flights
	async   bool
	m       Metrics
	log     *slog.Logger
	logMu   *logLimiter
	stores  *sync.WaitGroup
}

// Options are the collaborators of New. Flights nil means no single flight; Logger nil
// discards; Async runs stores in the background (for a remote backend: the answer is
// complete before the store is); LogLimiter nil logs every backend error.
type Options struct {
	Backend    Backend
	Flights    *Flights
	Async      bool
	Metrics    Metrics
	Logger     *slog.Logger
	LogLimiter *LogLimiter
}

// New returns the cache of a group.
func New(p Policy, o Options) *Cache {
	o.Metrics.fill()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{Policy: p, backend: o.Backend, flights: o.Flights, async: o.Async, m: o.Metrics, log: o.Logger, stores: &sync.WaitGroup{}}
	if o.LogLimiter != nil {
		c.logMu = &o.LogLimiter.l
	}
	return c
}

// LogLimiter lets one log record through per LogInterval; share one per group across
// configurations. The zero value is ready.
type LogLimiter struct{ l logLimiter }

type logLimiter struct{ last atomic.Int64 }

func (l *logLimiter) allow(now time.Time) bool {
	last := l.last.Load()
	if last != 0 && now.UnixNano()-last < int64(LogInterval) {
		return false
	}
	return l.last.CompareAndSwap(last, now.UnixNano())
}

// Metrics are the cache's counters.
func (c *Cache) Metrics() *Metrics { return &c.m }

// Backend is the cache's backend.
func (c *Cache) Backend() Backend { return c.backend }

// Local reports whether lookups are answered in this process (the memory backend), so
// that one costs no round trip; a remote backend (Options.Async) is not local.
func (c *Cache) Local() bool { return !c.async }

// Flights are the cache's flights (nil when single flight is off).
func (c *Cache) Flights() *Flights { return c.flights }

// KeyOf computes the key of a request to this group: r's Group, Epoch and Shared are set
// from the policy first.
func (c *Cache) KeyOf(r *Request) Key {
	r.Group, r.Epoch, r.Shared = c.Group, c.Epoch, c.Shared
	return r.Key()
}

// Lookup returns the live entry under k and Hit, or nil and Miss, or nil and Unavailable
// when the backend failed (counted and logged, never returned). It counts nothing else:
// callers count the outcome they act on.
func (c *Cache) Lookup(ctx context.Context, k Key) (*Entry, Result) {
	e, err := c.backend.Get(ctx, k)
	if err != nil {
		if ctx.Err() != nil {
			return nil, Miss
		}
		c.backendError("lookup", err)
		return nil, Unavailable
	}
	if e == nil || e.Epoch != c.Epoch {
		return nil, Miss
	}
	return e, Hit
}

// Store saves e under k; then runs done (when not nil). An asynchronous cache returns at
// once and stores in the background; failures are counted and logged.
func (c *Cache) Store(k Key, e *Entry, done func()) {
	set := func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultStoreTimeout)
		defer cancel()
		if err := c.backend.Set(ctx, k, e); err != nil {
			c.backendError("store", err)
		} else {
			c.m.Stores.Inc()
		}
		if done != nil {
			done()
		}
	}
	if !c.async {
		set()
		return
	}
	c.stores.Add(1)
	go func() {
		defer c.stores.Done()
		set()
	}()
}

// WaitStores waits for the background stores started so far (tests, shutdown).
func (c *Cache) WaitStores() { c.stores.Wait() }

func (c *Cache) backendError(op string, err error) {
	c.m.BackendErrors.Inc()
	if c.logMu != nil && !c.logMu.allow(time.Now()) {
		return
	}
	c.log.Warn("response cache backend failed; requests go upstream", "group", c.Group, "op", op, "error", err.Error())
}

// CountHit counts a request answered from e (a hit or a shared flight): the hit or
// coalesced counter and the entry's tokens.
func (c *Cache) CountHit(e *Entry, coalesced bool) {
	if coalesced {
		c.m.Coalesced.Inc()
	} else {
		c.m.Hits.Inc()
	}
	c.CountTokens(e.PromptTokens, e.CompletionTokens)
}

// CountTokens counts tokens served from the cache.
func (c *Cache) CountTokens(prompt, completion int64) {
	if prompt > 0 {
		c.m.PromptTokens.Add(float64(prompt))
	}
	if completion > 0 {
		c.m.CompletionTokens.Add(float64(completion))
	}
}
