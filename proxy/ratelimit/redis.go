package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisTimeout bounds one Redis round trip; past it the fallback decides.
const DefaultRedisTimeout = 50 * time.Millisecond

// DefaultProbeInterval is how long a Redis limiter leaves Redis alone after a failure before one
// request tries it again.
const DefaultProbeInterval = time.Second

// tokenBucketScript updates one bucket atomically. The bucket is a hash {t: tokens, ts: last
// update in microseconds} that expires once it would have refilled to full (plus a second), so
// idle keys cost Redis nothing. Time comes from the Redis server, so proxies with skewed clocks
// share one budget. KEYS[1] = bucket; ARGV = perSecond, burst. Returns {allowed (0|1),
// microseconds until a token is available}.
var tokenBucketScript = redis.NewScript(`
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {allowed, wait}
`)

// Redis is a token-bucket limiter whose buckets live in Redis, so every proxy using the same
// Redis and prefix shares one budget per key. When Redis fails or is slower than the timeout,
// the fallback limiter decides (typically a Local with the same numbers, so a Redis outage
// degrades to per-proxy limits) and Fallbacks counts it; nothing is logged. After a failure
// Redis is left alone for the probe interval (every request goes to the fallback at once), then
// a single request probes it again, so an outage costs one timeout per interval, not one per
// request. Safe for concurrent use; create it with NewRedis.
//
// The timeout is applied through the request context, which go-redis honours on the socket only
// when the client is built with ContextTimeoutEnabled: true; otherwise the client's own
// ReadTimeout/WriteTimeout bound a stalled call (keep them short too).
type Redis struct {
	client    redis.UniversalClient
	prefix    string
	rate      string
	rateF     float64
	burst     int
	timeout   time.Duration
	probe     time.Duration
	now       func() time.Time
	fallback  Limiter
	fallbacks atomic.Uint64
	downUntil atomic.Int64 // UnixNano before which Redis is not tried; 0 when healthy
}

// RedisOption adjusts a Redis limiter at construction.
type RedisOption func(*Redis)

// WithTimeout sets the bound on one Redis round trip (default DefaultRedisTimeout).
func WithTimeout(d time.Duration) RedisOption {
	return func(r *Redis) {
		if d > 0 {
			r.timeout = d
		}
	}
}

// WithProbeInterval sets how long Redis is skipped after a failure (default
// DefaultProbeInterval); a negative value tries Redis on every request.
func WithProbeInterval(d time.Duration) RedisOption {
	return func(r *Redis) { r.probe = d }
}

// WithRedisClock makes the limiter read time from now (tests); nil means time.Now. It only
// drives the probe interval: bucket time comes from the Redis server.
func WithRedisClock(now func() time.Time) RedisOption {
	return func(r *Redis) {
		if now != nil {
			r.now = now
		}
	}
}

// NewRedis returns a limiter that keeps key's bucket at prefix+key in Redis. burst below 1 counts
// as 1; perSecond ≤ 0 means no limit. A nil fallback allows requests while Redis is unavailable
// (fail open).
func NewRedis(client redis.UniversalClient, prefix string, perSecond float64, burst int, fallback Limiter, opts ...RedisOption) *Redis {
	r := &Redis{
		client: client, prefix: prefix, rateF: perSecond,
		rate:    strconv.FormatFloat(perSecond, 'g', -1, 64),
		burst:   max(burst, 1),
		timeout: DefaultRedisTimeout, probe: DefaultProbeInterval, now: time.Now,
		fallback: fallback,
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Allow takes a token from key's shared bucket, or asks the fallback when Redis does not answer
// in time. A caller whose ctx is already done gets the fallback's answer, not counted.
func (r *Redis) Allow(ctx context.Context, key string) (bool, time.Duration) {
	if r.rateF <= 0 {
		return true, 0
	}
	if r.tryRedis() {
		cctx, cancel := context.WithTimeout(ctx, r.timeout)
		res, err := tokenBucketScript.Run(cctx, r.client, []string{r.prefix + key}, r.rate, r.burst).Int64Slice()
		cancel()
		if err == nil && len(res) == 2 {
			if r.downUntil.Load() != 0 {
				r.downUntil.Store(0)
			}
			if res[0] == 1 {
				return true, 0
			}
			return false, time.Duration(res[1]) * time.Microsecond
		}
		if ctx.Err() != nil {
			// The caller left; that says nothing about Redis.
			return r.fallbackAllow(ctx, key)
		}
		if r.probe > 0 {
			r.downUntil.Store(r.now().Add(r.probe).UnixNano())
		}
	}
	r.fallbacks.Add(1)
	return r.fallbackAllow(ctx, key)
}

// tryRedis reports whether this request should ask Redis: always while it is healthy; after a
// failure, only the one request that first sees the probe interval over.
func (r *Redis) tryRedis() bool {
	until := r.downUntil.Load()
	if until == 0 {
		return true
	}
	now := r.now()
	if now.UnixNano() < until {
		return false
	}
	// Elect one prober: push the next probe out before trying.
	return r.downUntil.CompareAndSwap(until, now.Add(r.probe).UnixNano())
}

func (r *Redis) fallbackAllow(ctx context.Context, key string) (bool, time.Duration) {
	if r.fallback == nil {
		return true, 0
	}
	return r.fallback.Allow(ctx, key)
}

// Fallbacks returns how many decisions went to the fallback because Redis failed, timed out,
// or was being left alone after a failure.
func (r *Redis) Fallbacks() uint64 { return r.fallbacks.Load() }
