package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisTimeout bounds one Redis round trip of a limiter without a Guard; past it the
// fallback decides.
const DefaultRedisTimeout = 50 * time.Millisecond

// Guard runs one Redis call: typically under a deadline and a circuit breaker that answers an
// error at once, without calling, while Redis is being left alone after a failure
// (proxy/redisguard.Guard). It must be safe for concurrent use.
type Guard interface {
	Do(ctx context.Context, call func(ctx context.Context) error) error
}

// timeoutGuard bounds each call by a deadline and nothing else.
type timeoutGuard time.Duration

func (d timeoutGuard) Do(ctx context.Context, call func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, time.Duration(d))
	defer cancel()
	return call(cctx)
}

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
// Redis and prefix shares one budget per key. Every call goes through the limiter's Guard;
// when it fails (Redis down, slow, or being skipped by the guard's breaker) the fallback
// limiter decides (typically a Local with the same numbers, so a Redis outage degrades to
// per-proxy limits) and Fallbacks counts it. Safe for concurrent use; create it with NewRedis.
//
// Keys are never written as given: a bucket's Redis key is the prefix and the first 128 bits,
// in hex, of the SHA-256 of a fixed domain string and the key (bucketKey). A limit keyed by a
// credential header therefore keeps no credential in Redis, while every proxy, computing the
// same hash with no shared secret, still finds the same bucket.
type Redis struct {
	client    redis.UniversalClient
	prefix    string
	rate      string
	rateF     float64
	burst     int
	guard     Guard
	fallback  Limiter
	fallbacks atomic.Uint64
}

// RedisOption adjusts a Redis limiter at construction.
type RedisOption func(*Redis)

// WithTimeout bounds each Redis call by d when the limiter has no Guard (WithGuard); 0
// keeps DefaultRedisTimeout.
func WithTimeout(d time.Duration) RedisOption {
	return func(r *Redis) {
		if _, own := r.guard.(timeoutGuard); own && d > 0 {
			r.guard = timeoutGuard(d)
		}
	}
}

// WithGuard runs every Redis call through g (proxy/redisguard.Guard: a deadline and a circuit
// breaker shared by every user of the client). nil keeps the default: each call bounded by
// DefaultRedisTimeout, with no breaker.
func WithGuard(g Guard) RedisOption {
	return func(r *Redis) {
		if g != nil {
			r.guard = g
		}
	}
}

// NewRedis returns a limiter that keeps key's bucket at bucketKey(prefix, key) in Redis.
// burst below 1 counts as 1; perSecond ≤ 0 means no limit. A nil fallback allows requests
// while Redis is unavailable (fail open).
func NewRedis(client redis.UniversalClient, prefix string, perSecond float64, burst int, fallback Limiter, opts ...RedisOption) *Redis {
	r := &Redis{
		client: client, prefix: prefix, rateF: perSecond,
		rate:     strconv.FormatFloat(perSecond, 'g', -1, 64),
		burst:    max(burst, 1),
		guard:    timeoutGuard(DefaultRedisTimeout),
		fallback: fallback,
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// keyDomain separates the limiter's hashes from any other use of SHA-256 over the same
// values; its version changes if the derivation ever does.
const keyDomain = "llmproxy ratelimit key v1\x00"

// bucketKey is the Redis key of key's bucket: prefix, then the first 16 bytes of
// SHA-256(keyDomain || key) in hex.
func bucketKey(prefix, key string) string {
	h := sha256.New()
	h.Write([]byte(keyDomain))
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	b := make([]byte, 0, len(prefix)+32)
	b = append(b, prefix...)
	b = hex.AppendEncode(b, sum[:16])
	return string(b)
}

// Allow takes a token from key's shared bucket, or asks the fallback when the Redis call
// fails. A caller whose ctx is already done gets the fallback's answer, not counted.
func (r *Redis) Allow(ctx context.Context, key string) (bool, time.Duration) {
	if r.rateF <= 0 {
		return true, 0
	}
	var res []int64
	err := r.guard.Do(ctx, func(ctx context.Context) error {
		var err error
		res, err = tokenBucketScript.Run(ctx, r.client, []string{bucketKey(r.prefix, key)}, r.rate, r.burst).Int64Slice()
		if err == nil && len(res) != 2 {
			err = fmt.Errorf("run token bucket script: %d results, want 2", len(res))
		}
		return err
	})
	if err == nil {
		if res[0] == 1 {
			return true, 0
		}
		return false, time.Duration(res[1]) * time.Microsecond
	}
	if ctx.Err() == nil {
		r.fallbacks.Add(1)
	}
	return r.fallbackAllow(ctx, key)
}

func (r *Redis) fallbackAllow(ctx context.Context, key string) (bool, time.Duration) {
	if r.fallback == nil {
		return true, 0
	}
	return r.fallback.Allow(ctx, key)
}

// Fallbacks returns how many decisions went to the fallback because the Redis call failed,
// timed out, or was skipped by the guard.
func (r *Redis) Fallbacks() uint64 { return r.fallbacks.Load() }
