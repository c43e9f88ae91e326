package cache

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of a Redis backend.
const (
	// DefaultLookupTimeout bounds one lookup: past it the request goes upstream.
	DefaultLookupTimeout = 20 * time.Millisecond
	// DefaultStoreTimeout bounds one store (stores run after the answer, off the request).
	DefaultStoreTimeout = time.Second
	// DefaultRetryInterval is how long Redis is left alone after it failed (FailuresDown
	// calls in a row) before one request tries it again, so an outage costs one timeout
	// per interval, not one per request.
	DefaultRetryInterval = time.Second
	// FailuresDown is how many failed calls in a row mark Redis down: one slow answer (a
	// pause, a cold connection) costs that one lookup, not a second of misses.
	FailuresDown = 3
)

// ErrBackendDown is returned by a Redis backend while it leaves Redis alone after a failure.
var ErrBackendDown = errors.New("cache backend unavailable")

// Redis is a backend shared by every proxy using the same Redis: an entry is one string
// value (Encode; bodies above 1 KiB compressed) under the prefix and the key in hex, with
// the entry's TTL as its expiry. A lookup is one GET; a store one SET with PX. Safe for
// concurrent use.
//
// The lookup deadline is applied through the context, which go-redis honours on the socket
// only when the client has ContextTimeoutEnabled; otherwise the client's read and write
// timeouts bound a stalled call. After FailuresDown failed calls in a row Redis is skipped
// for the retry interval (lookups answer ErrBackendDown at once), then one request probes
// it. NewRedis opens a connection in the background, so the first lookup does not pay for
// the dial within its deadline.
type Redis struct {
	client  redis.UniversalClient
	prefix  string
	lookup  time.Duration
	store   time.Duration
	retry   time.Duration
	maxBody int
	now     func() time.Time

	downUntil atomic.Int64 // UnixNano before which Redis is not tried; 0 when healthy
	failures  atomic.Int32 // failed calls in a row
	onUp      func(bool)   // called on every change of health
}

// RedisOptions configure NewRedis. Zero durations take the defaults; nil Now means
// time.Now; nil OnHealth is not called.
type RedisOptions struct {
	// Prefix starts every key, e.g. "llmproxy:cache:GROUP:"; "" means "llmproxy:cache:".
	Prefix        string
	LookupTimeout time.Duration
	StoreTimeout  time.Duration
	// RetryInterval: negative tries Redis on every request.
	RetryInterval time.Duration
	// MaxBody bounds a decoded body (the group's max_object_bytes).
	MaxBody int
	Now     func() time.Time
	// OnHealth is called with false when Redis fails and with true when it answers again.
	OnHealth func(up bool)
}

// NewRedis returns a backend on client.
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	r := &Redis{
		client: client, prefix: opts.Prefix,
		lookup: opts.LookupTimeout, store: opts.StoreTimeout, retry: opts.RetryInterval,
		maxBody: opts.MaxBody, now: opts.Now, onUp: opts.OnHealth,
	}
	if r.prefix == "" {
		r.prefix = "llmproxy:cache:"
	}
	if r.lookup <= 0 {
		r.lookup = DefaultLookupTimeout
	}
	if r.store <= 0 {
		r.store = DefaultStoreTimeout
	}
	if r.retry == 0 {
		r.retry = DefaultRetryInterval
	}
	if r.maxBody <= 0 {
		r.maxBody = 64 << 20
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.onUp == nil {
		r.onUp = func(bool) {}
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.store)
		defer cancel()
		_ = client.Ping(ctx).Err()
	}()
	return r
}

// RedisKey is the Redis key of k.
func (r *Redis) RedisKey(k Key) string {
	var hex [64]byte
	kh := k.AppendHex(hex[:0])
	return r.prefix + string(kh)
}

// Get looks k up: the entry, nil when there is none (or it is corrupt), or an error when Redis failed, timed out or is being left alone. The caller's
// ctx ending is not a Redis failure.
func (r *Redis) Get(ctx context.Context, k Key) (*Entry, error) {
	if !r.try() {
		return nil, ErrBackendDown
	}
	cctx, cancel := context.WithTimeout(ctx, r.lookup)
	b, err := r.client.Get(cctx, r.RedisKey(k)).Bytes()
	cancel()
	if errors.Is(err, redis.Nil) {
		r.healthy()
		return nil, nil
	}
	if err != nil {
		if ctx.Err() == nil {
			r.failed()
		}
		return nil, err
	}
	r.healthy()
	e, derr := Decode(b, r.maxBody)
	if derr != nil || !e.Fresh(r.now()) {
		return nil, nil
	}
	return e, nil
}

// Set stores e under k with e's TTL (from now) as its expiry.
func (r *Redis) Set(ctx context.Context, k Key, e *Entry) error {
	if !r.try() {
		return ErrBackendDown
	}
	ttl := e.TTL - e.Age(r.now())
	if ttl < time.Millisecond {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.store)
	err := r.client.Set(cctx, r.RedisKey(k), Encode(e), ttl).Err()
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			r.failed()
		}
		return err
	}
	r.healthy()
	return nil
}

// Up reports whether Redis is in use: false while it is left alone after failures.
func (r *Redis) Up() bool { return r.downUntil.Load() == 0 }

func (r *Redis) try() bool {
	until := r.downUntil.Load()
	if until == 0 {
		return true
	}
	if r.retry < 0 {
		return true
	}
	now := r.now()
	if now.UnixNano() < until {
		return false
	}
	// Elect one prober: push the next probe out before trying.
	return r.downUntil.CompareAndSwap(until, now.Add(r.retry).UnixNano())
}

func (r *Redis) failed() {
	if r.failures.Add(1) < FailuresDown && r.downUntil.Load() == 0 {
		return
	}
	next := r.now().Add(max(r.retry, 0)).UnixNano()
	if r.downUntil.Swap(next) == 0 {
		r.onUp(false)
	}
}

func (r *Redis) healthy() {
	if r.failures.Load() != 0 {
		r.failures.Store(0)
	}
	if r.downUntil.Load() != 0 && r.downUntil.Swap(0) != 0 {
		r.onUp(true)
	}
}
