// Package redisguard bounds what a slow or dead Redis costs the requests that use it. Every
// feature that talks to Redis on the request path (global rate limits, the shared response
// cache) calls it through one Guard per Redis client:
//
//   - every call gets a hard deadline (Options.Timeout). go-redis applies a context's
//     deadline to the socket only when the client is built with ContextTimeoutEnabled;
//     ParseURL sets it;
//   - a circuit breaker of the guard's own: the first failed call opens it, and while it is
//     open calls are not made at all (Do answers ErrSkipped at once, and the caller falls
//     back), so a dead or frozen Redis costs a request nothing but the fallback; after
//     Options.Cooldown one call probes Redis, and its success closes the breaker;
//   - every fallback is counted by reason (Metrics), and the guard logs when Redis becomes
//     unavailable, at most one record per Options.LogEvery while it stays so, and when it
//     is back.
//
// The package is a leaf: it imports go-redis and Prometheus, nothing of the proxy.
package redisguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Defaults of Options.
const (
	// DefaultTimeout bounds one Redis call, connection set-up included.
	DefaultTimeout = 50 * time.Millisecond
	// DefaultCooldown is how long an open breaker skips Redis before one call probes it.
	DefaultCooldown = time.Second
	// DefaultLogEvery is the shortest interval between two "still unavailable" records.
	DefaultLogEvery = 30 * time.Second
)

// Fallback reasons, the reason label of Metrics.Fallbacks.
const (
	// ReasonSkipped: the breaker was open; Redis was not asked.
	ReasonSkipped = "skipped"
	// ReasonTimeout: the call ran into its deadline.
	ReasonTimeout = "timeout"
	// ReasonError: Redis answered with an error, or the connection failed.
	ReasonError = "error"
)

// ErrSkipped is returned by Do, without calling Redis, while the breaker is open.
var ErrSkipped = errors.New("redis skipped: unavailable recently")

// Metrics are the guard's collectors; a nil *Metrics counts nothing. Fallbacks has one
// label, reason (ReasonSkipped, ReasonTimeout, ReasonError); Up is 1 while the breaker is
// closed and 0 while it is open.
type Metrics struct {
	Fallbacks *prometheus.CounterVec
	Up        prometheus.Gauge
}

// NewMetrics creates the collectors llmproxy_redis_fallbacks_total and llmproxy_redis_up
// and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmproxy_redis_fallbacks_total",
			Help: "Redis calls replaced by a fallback (local rate limit, cache miss), by reason: skipped (Redis was unavailable recently), timeout, error.",
		}, []string{"reason"}),
		Up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmproxy_redis_up",
			Help: "1 while Redis answers, 0 while the proxy skips it after a failure.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Fallbacks, m.Up)
	}
	return m
}

// Options configure a Guard. Zero values take the defaults.
type Options struct {
	// Timeout bounds one call (DefaultTimeout).
	Timeout time.Duration
	// Cooldown is how long Redis is skipped after a failure before one call probes it
	// (DefaultCooldown).
	Cooldown time.Duration
	// LogEvery is the shortest interval between two records saying Redis is still
	// unavailable (DefaultLogEvery).
	LogEvery time.Duration
	// Logger receives the guard's records; nil discards them.
	Logger *slog.Logger
	// Metrics counts fallbacks; nil counts nothing.
	Metrics *Metrics
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Guard runs Redis calls under a deadline and a circuit breaker. It is safe for concurrent
// use; share one per Redis client, so that every user of a dead Redis learns it from the
// first failure. A nil *Guard runs calls unguarded (with no deadline).
type Guard struct {
	timeout, cooldown, logEvery time.Duration
	log                         *slog.Logger
	now                         func() time.Time
	skipped, timedOut, failed   prometheus.Counter
	up                          prometheus.Gauge

	// openUntil is the UnixNano before which calls are skipped; 0 while the breaker is
	// closed. When it has passed, the one caller that moves it on probes Redis.
	openUntil atomic.Int64

	mu        sync.Mutex // guards the fields below (transitions and log throttling)
	downSince time.Time  // zero while closed
	lastLog   time.Time
	fallbacks uint64 // fallbacks since the last record
	lastErr   string
}

// New returns a guard with opts.
func New(opts Options) *Guard {
	g := &Guard{timeout: opts.Timeout, cooldown: opts.Cooldown, logEvery: opts.LogEvery, log: opts.Logger, now: opts.Now}
	if g.timeout <= 0 {
		g.timeout = DefaultTimeout
	}
	if g.cooldown <= 0 {
		g.cooldown = DefaultCooldown
	}
	if g.logEvery <= 0 {
		g.logEvery = DefaultLogEvery
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if m := opts.Metrics; m != nil {
		g.skipped = m.Fallbacks.WithLabelValues(ReasonSkipped)
		g.timedOut = m.Fallbacks.WithLabelValues(ReasonTimeout)
		g.failed = m.Fallbacks.WithLabelValues(ReasonError)
		g.up = m.Up
		g.up.Set(1)
	}
	return g
}

// Do calls call with a context derived from ctx that ends after the guard's timeout,
// unless the breaker is open: then it returns ErrSkipped at once. A call that returns nil
// or redis.Nil (no such key) is a success and closes the breaker; any other error opens it,
// unless ctx itself ended first (the caller left: that says nothing about Redis, and the
// breaker is left as it was). Do returns call's error (redis.Nil included), or ErrSkipped.
// Every non-nil error other than redis.Nil is counted as a fallback: the caller is
// expected to fall back.
func (g *Guard) Do(ctx context.Context, call func(ctx context.Context) error) error {
	if g == nil {
		return call(ctx)
	}
	if !g.allow() {
		g.count(g.skipped)
		return ErrSkipped
	}
	cctx, cancel := context.WithTimeout(ctx, g.timeout)
	err := call(cctx)
	cancel()
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		g.succeeded()
	case ctx.Err() != nil:
		// The caller left; if this was the probe, let the next request probe.
		if until := g.openUntil.Load(); until != 0 {
			g.openUntil.CompareAndSwap(until, g.now().UnixNano())
		}
	default:
		timeout := errors.Is(err, context.DeadlineExceeded) || isTimeout(err)
		if timeout {
			g.count(g.timedOut)
		} else {
			g.count(g.failed)
		}
		g.fail(err, timeout)
	}
	return err
}

// Up reports whether the breaker is closed (Redis answered the last call, or no call
// failed yet).
func (g *Guard) Up() bool { return g == nil || g.openUntil.Load() == 0 }

// allow reports whether this call may go to Redis: always while the breaker is closed;
// while it is open, only the one caller that first sees the cooldown over (the probe),
// which pushes the next probe a cooldown further.
func (g *Guard) allow() bool {
	until := g.openUntil.Load()
	if until == 0 {
		return true
	}
	now := g.now()
	if now.UnixNano() < until {
		return false
	}
	return g.openUntil.CompareAndSwap(until, now.Add(g.cooldown).UnixNano())
}

func (g *Guard) count(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
	if g.openUntil.Load() != 0 {
		g.mu.Lock()
		g.fallbacks++
		g.mu.Unlock()
	}
}

// fail opens the breaker (or keeps it open for another cooldown) and logs: at once when
// it opens, then at most once per logEvery.
func (g *Guard) fail(err error, timeout bool) {
	msg := err.Error()
	if timeout {
		msg = fmt.Sprintf("no answer within %s (%v)", g.timeout, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.openUntil.Store(now.Add(g.cooldown).UnixNano())
	g.lastErr = msg
	if g.downSince.IsZero() {
		g.downSince, g.lastLog, g.fallbacks = now, now, 1
		if g.up != nil {
			g.up.Set(0)
		}
		g.log.Warn("redis unavailable: falling back until it answers again",
			"err", msg, "timeout", g.timeout.String(), "retry_every", g.cooldown.String())
		return
	}
	if now.Sub(g.lastLog) >= g.logEvery {
		g.log.Warn("redis unavailable still: falling back",
			"err", msg, "down_for", now.Sub(g.downSince).Round(time.Millisecond).String(), "fallbacks", g.fallbacks)
		g.lastLog, g.fallbacks = now, 0
	}
}

// succeeded closes the breaker, logging when it was open.
func (g *Guard) succeeded() {
	if g.openUntil.Load() == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.openUntil.Store(0)
	if g.downSince.IsZero() {
		return
	}
	if g.up != nil {
		g.up.Set(1)
	}
	g.log.Info("redis available again", "down_for", g.now().Sub(g.downSince).Round(time.Millisecond).String(),
		"fallbacks_since_last_record", g.fallbacks, "last_err", g.lastErr)
	g.downSince, g.fallbacks = time.Time{}, 0
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// ParseURL parses a redis:// or rediss:// URL into client options with
// ContextTimeoutEnabled set, so that the deadline of Do's context bounds the socket reads
// and writes of a call, not only the wait for a pooled connection.
func ParseURL(url string) (*redis.Options, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	o.ContextTimeoutEnabled = true
	return o, nil
}

// Logger adapts a *slog.Logger to go-redis's logging interface (redis.SetLogger), so the
// library's own lines become warn records with component "redis" instead of plain text on
// stderr. go-redis keeps its logger in a package variable: set it once, from main.
type Logger struct{ L *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l Logger) Printf(ctx context.Context, format string, v ...any) {
	if l.L == nil {
		return
	}
	l.L.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "redis")
}
