package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys of a consumer, all in one hash slot ({prefix name}) so that a script may touch
// them together on a Redis Cluster:
//
//	{…}:req          hash  1-second step → requests
//	{…}:tokm         hash  1-second step → tokens
//	{…}:tokd         hash  24-minute step → tokens
//	{…}:spend:DATE   string micro-USD spent in the period starting on DATE
//	{…}:par          sorted set  slot id → lease end (ms)
//
// Every key expires once nothing in it counts any more, so idle consumers cost nothing.

// windowLua reads a window hash at step cur, dropping steps that left it, and returns its
// sum and its live steps in order.
const windowLua = `
local function window(key, cur)
  local h = redis.call('HGETALL', key)
  local used, live = 0, {}
  for i = 1, #h, 2 do
    local j, n = tonumber(h[i]), tonumber(h[i + 1])
    if j <= cur - 60 then
      redis.call('HDEL', key, h[i])
    else
      used = used + n
      live[#live + 1] = {j, n}
    end
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  return used, live
end
local function retry(live, used, limit, step, now)
  for _, e in ipairs(live) do
    used = used - e[2]
    if used < limit then return (e[1] + 60) * step - now end
  end
  return 0
end
local function reset(live, step, now)
  for i = #live, 1, -1 do
    if live[i][2] > 0 then return (live[i][1] + 60) * step - now end
  end
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// admitScript decides on one request. KEYS: req, tokm, tokd, spend, par. ARGV: requests per
// minute, tokens per minute, tokens per day, max parallel, budget (micro-USD), slot id, lease
// (ms), ms until the budget renews. Returns {admitted, reason, retry ms, requests used,
// requests reset ms, tokens/min used, its reset ms, tokens/day used, its reset ms, spent}.
var admitScript = redis.NewScript(windowLua + `
local rpm, tpm, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local maxpar, budget, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
local sec, day = math.floor(now / 1000), math.floor(now / 1440000)
local ru, rl, mu, ml, du, dl = 0, {}, 0, {}, 0, {}
if rpm > 0 then ru, rl = window(KEYS[1], sec) end
if tpm > 0 then mu, ml = window(KEYS[2], sec) end
if tpd > 0 then du, dl = window(KEYS[3], day) end
local spent = 0
if budget > 0 then spent = tonumber(redis.call('GET', KEYS[4]) or '0') end
local function answer(ok, reason, after)
  return {ok, reason, after, ru, reset(rl, 1000, now), mu, reset(ml, 1000, now), du, reset(dl, 1440000, now), spent}
end
if maxpar > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= maxpar then return answer(0, 1, 1000) end
end
if rpm > 0 and ru >= rpm then return answer(0, 2, retry(rl, ru, rpm, 1000, now)) end
if tpm > 0 and mu >= tpm then return answer(0, 3, retry(ml, mu, tpm, 1000, now)) end
if tpd > 0 and du >= tpd then return answer(0, 4, retry(dl, du, tpd, 1440000, now)) end
if budget > 0 and spent >= budget then return answer(0, 5, tonumber(ARGV[8])) end
if rpm > 0 then
  redis.call('HINCRBY', KEYS[1], sec, 1)
  redis.call('PEXPIRE', KEYS[1], 61000)
  ru = ru + 1
  rl[#rl + 1] = {sec, 1}
end
if maxpar > 0 then
  redis.call('ZADD', KEYS[5], now + lease, ARGV[6])
  redis.call('PEXPIRE', KEYS[5], lease)
end
return answer(1, 0, 0)
`)

// settleScript ends one request. KEYS as admitScript's. ARGV: tokens, 1 when tokens per
// minute are counted, 1 when tokens per day are, spend (micro-USD), the spend key's time to
// live (ms), the slot id ("" when none).
var settleScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens, spend = tonumber(ARGV[1]), tonumber(ARGV[4])
if tokens > 0 and ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[2], math.floor(now / 1000), tokens)
  redis.call('PEXPIRE', KEYS[2], 61000)
end
if tokens > 0 and ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[3], math.floor(now / 1440000), tokens)
  redis.call('PEXPIRE', KEYS[3], 88920000)
end
if spend > 0 then
  redis.call('INCRBY', KEYS[4], spend)
  redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[5]))
end
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[5], ARGV[6]) end
return 1
`)

// DefaultLease is how long a request holds its max_parallel slot in Redis at most: a proxy
// that dies mid-request frees its slots after it.
const DefaultLease = 15 * time.Minute

// Shared keeps counters in Redis for every consumer. Calls go through its Guard; when it
// refuses, Limiter falls back to its Local store. Create it with NewShared.
type Shared struct {
	client redis.UniversalClient
	prefix string
	lease  time.Duration
	guard  Caller
}

// Caller runs one Redis call under a deadline, answering an error without calling while
// Redis is being left alone: the proxy's guard of its Redis client (proxy/redisguard.Guard),
// which every Redis user of the request path shares. It must be safe for concurrent use.
type Caller interface {
	Do(ctx context.Context, fn func(context.Context) error) error
}

// NewShared returns a store keeping its keys under prefix in Redis, each call made
// through g, which must not be nil.
func NewShared(client redis.UniversalClient, prefix string, g Caller) *Shared {
	return &Shared{client: client, prefix: prefix, lease: DefaultLease, guard: g}
}

// keys returns the Redis keys of consumer name for the budget period starting at start.
func (s *Shared) keys(name string, start time.Time) []string {
	tag := "{" + s.prefix + name + "}:"
	return []string{tag + "req", tag + "tokm", tag + "tokd", tag + "spend:" + start.Format("2006-01-02"), tag + "par"}
}

// admit runs admitScript for name under l.
func (s *Shared) admit(ctx context.Context, name string, l Limits, now time.Time) (Admission, error) {
	start, renew := l.Period.bounds(now)
	var ticket string
	if l.MaxParallel > 0 {
		var b [12]byte
		_, _ = rand.Read(b[:])
		ticket = hex.EncodeToString(b[:])
	}
	var res []int64
	err := s.guard.Do(ctx, func(ctx context.Context) error {
		var err error
		res, err = admitScript.Run(ctx, s.client, s.keys(name, start),
			l.RequestsPerMinute, l.TokensPerMinute, l.TokensPerDay, l.MaxParallel, l.BudgetMicros,
			ticket, s.lease.Milliseconds(), renew.Sub(now).Milliseconds()).Int64Slice()
		if err == nil && len(res) != 10 {
			err = errors.New("quota: admit script answered " + strconv.Itoa(len(res)) + " values")
		}
		return err
	})
	if err != nil {
		return Admission{}, err
	}
	ms := func(v int64) time.Duration { return time.Duration(max(v, 0)) * time.Millisecond }
	a := Admission{OK: res[0] == 1, Reason: Reason(res[1]), RetryAfter: ms(res[2]), shared: true}
	if !a.OK {
		a.RetryAfter = max(a.RetryAfter, time.Millisecond)
	} else {
		a.ticket = ticket
	}
	if l.BudgetMicros > 0 {
		a.SpentMicros, a.Renews = res[9], renew
	}
	a.fill(l, res[3], ms(res[4]), window{res[5], ms(res[6])}, window{res[7], ms(res[8])})
	return a, nil
}

// settle runs settleScript for one request of name.
func (s *Shared) settle(ctx context.Context, name string, l Limits, ticket string, tokens, spendMicros int64, now time.Time) error {
	start, renew := l.Period.bounds(now)
	if l.BudgetMicros == 0 {
		spendMicros = 0
	}
	flag := func(on bool) string {
		if on {
			return "1"
		}
		return "0"
	}
	ttl := renew.Sub(now) + 24*time.Hour
	return s.guard.Do(ctx, func(ctx context.Context) error {
		return settleScript.Run(ctx, s.client, s.keys(name, start),
			tokens, flag(l.TokensPerMinute > 0), flag(l.TokensPerDay > 0), spendMicros, ttl.Milliseconds(), ticket).Err()
	})
}
