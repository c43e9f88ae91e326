package quota

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/llmproxy-go/llmproxy/proxy/internal/redistest"
	"github.com/llmproxy-go/llmproxy/proxy/redisguard"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// start is a Wednesday, 10:00:00.250 UTC, mid-step, so windows and periods have edges to
// cross.
var start = time.Date(2026, 12, 2, 10, 0, 0, 250e6, time.UTC)

func TestPeriodBounds(t *testing.T) {
	for _, tt := range []struct {
		p           Period
		start, next string
	}{
		{Day, "2026-12-02", "2026-12-03"},
		{Week, "2026-11-30", "2026-12-07"},
		{Month, "2026-12-01", "2027-01-01"},
	} {
		s, n := tt.p.bounds(start)
		if s.Format(time.DateOnly) != tt.start || n.Format(time.DateOnly) != tt.next {
			t.Errorf("%v: %v – %v; want %s – %s", tt.p, s, n, tt.start, tt.next)
		}
	}
	// A Monday is its own week's start; a Sunday belongs to the week before.
	if s, _ := Week.bounds(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)); s.Day() != 30 {
		t.Errorf("Monday's week starts %v", s)
	}
	if s, _ := Week.bounds(time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)); s.Day() != 30 {
		t.Errorf("Sunday's week starts %v", s)
	}
}

// admitN admits n requests and returns how many were admitted, settling none.
func admitN(lm *Limiter, n int) (int, Admission) {
	ok := 0
	var last Admission
	for range n {
		last = lm.Admit(context.Background())
		if last.OK {
			ok++
		}
	}
	return ok, last
}

func TestLocalRequestsPerMinute(t *testing.T) {
	c := &clock{t: start}
	lm := NewLimiter("c", Limits{RequestsPerMinute: 10}, NewLocal(c.now), nil, nil)
	ok, last := admitN(lm, 30)
	if ok != 10 {
		t.Fatalf("admitted %d of 30; want 10", ok)
	}
	if last.OK || last.Reason != ReasonRequestsPerMinute || last.Requests.Remaining != 0 || last.Requests.Limit != 10 {
		t.Fatalf("refusal %+v", last)
	}
	// Every count is in the step of start: it leaves 60 steps on, 59.75 s from now.
	if want := 59750 * time.Millisecond; last.RetryAfter != want || last.Requests.Reset != want {
		t.Errorf("retry after %v, reset %v; want %v", last.RetryAfter, last.Requests.Reset, want)
	}
	c.add(59 * time.Second)
	if a := lm.Admit(context.Background()); a.OK {
		t.Fatalf("admitted 59 s later: %+v", a)
	}
	c.add(time.Second)
	if ok, _ := admitN(lm, 11); ok != 10 {
		t.Errorf("after the window: admitted %d; want 10", ok)
	}
}

func TestLocalTokensAndBudget(t *testing.T) {
	c := &clock{t: start}
	lm := NewLimiter("c", Limits{TokensPerMinute: 100, TokensPerDay: 250, BudgetMicros: 1000, Period: Day}, NewLocal(c.now), nil, nil)
	ctx := context.Background()
	// Admitted while below the limit; the tokens come at the end.
	a := lm.Admit(ctx)
	b := lm.Admit(ctx)
	if !a.OK || !b.OK || a.Tokens.Limit != 100 || a.Tokens.Remaining != 100 {
		t.Fatalf("admissions %+v %+v", a, b)
	}
	lm.Settle(ctx, &a, 90, 10)
	lm.Settle(ctx, &b, 30, 10) // 120: over, as documented
	r := lm.Admit(ctx)
	if r.OK || r.Reason != ReasonTokensPerMinute || r.Tokens.Remaining != 0 {
		t.Fatalf("after 120 tokens: %+v", r)
	}
	c.add(time.Minute)
	a = lm.Admit(ctx)
	if !a.OK || a.Tokens.Remaining != 100 {
		t.Fatalf("a minute later: %+v", a)
	}
	lm.Settle(ctx, &a, 150, 2000) // day: 270 ≥ 250; budget: 2020 ≥ 1000
	c.add(time.Minute)
	r = lm.Admit(ctx)
	if r.OK || r.Reason != ReasonTokensPerDay {
		t.Fatalf("over the day's tokens: %+v", r)
	}
	// The day window's counts leave 24 hours after they were made; the budget renews at
	// midnight, first.
	c.add(24 * time.Hour)
	r = lm.Admit(ctx)
	if !r.OK {
		t.Fatalf("a day later: %+v", r)
	}
	lm.Settle(ctx, &r, 0, 5000)
	r = lm.Admit(ctx)
	if r.OK || r.Reason != ReasonBudget || r.SpentMicros != 5000 || !r.Renews.Equal(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("over budget: %+v", r)
	}
	if r.RetryAfter != r.Renews.Sub(c.now()) {
		t.Errorf("retry after %v; want the time to the renewal %v", r.RetryAfter, r.Renews.Sub(c.now()))
	}
}

func TestLocalMaxParallel(t *testing.T) {
	lm := NewLimiter("c", Limits{MaxParallel: 2}, NewLocal(nil), nil, nil)
	ctx := context.Background()
	a, b := lm.Admit(ctx), lm.Admit(ctx)
	if r := lm.Admit(ctx); r.OK || r.Reason != ReasonMaxParallel || r.RetryAfter <= 0 {
		t.Fatalf("third in flight: %+v", r)
	}
	lm.Settle(ctx, &a, 0, 0)
	if c := lm.Admit(ctx); !c.OK {
		t.Fatal("a slot given back was not reused")
	}
	lm.Settle(ctx, &b, 0, 0)
	refused := Admission{}
	lm.Settle(ctx, &refused, 0, 0) // a refusal holds nothing: no slot is freed
	if c := lm.Admit(ctx); !c.OK {
		t.Fatal("second slot not reusable")
	}
	if c := lm.Admit(ctx); c.OK {
		t.Fatal("settling a refusal freed a slot")
	}
}

func TestSharedOneLimitForTwoProxies(t *testing.T) {
	client, prefix := redistest.Client(t)
	// Two proxies: their own Locals and Shared stores, one Redis.
	var fallbacks atomic.Int32
	onFallback := func() { fallbacks.Add(1) }
	lim := Limits{RequestsPerMinute: 10, MaxParallel: 50}
	p1 := NewLimiter("team", lim, NewLocal(nil), NewShared(client, prefix, redisguard.New(redisguard.Options{Timeout: 2 * time.Second})), onFallback)
	p2 := NewLimiter("team", lim, NewLocal(nil), NewShared(client, prefix, redisguard.New(redisguard.Options{Timeout: 2 * time.Second})), onFallback)
	var wg sync.WaitGroup
	var ok atomic.Int32
	admitted := make(chan Admission, 30)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lm := p1
			if i%2 == 1 {
				lm = p2
			}
			a := lm.Admit(context.Background())
			if a.OK {
				ok.Add(1)
				admitted <- a
				return
			}
			if a.Reason != ReasonRequestsPerMinute || a.RetryAfter <= 0 || a.RetryAfter > time.Minute || a.Requests.Remaining != 0 || a.Requests.Limit != 10 {
				t.Errorf("refusal %+v", a)
			}
		}()
	}
	wg.Wait()
	close(admitted)
	if ok.Load() != 10 || fallbacks.Load() != 0 {
		t.Fatalf("admitted %d of 30 across two proxies (fallbacks %d); want 10", ok.Load(), fallbacks.Load())
	}
	// Slots are shared too, and given back.
	par := Limits{MaxParallel: 2}
	q1 := NewLimiter("par", par, NewLocal(nil), NewShared(client, prefix, redisguard.New(redisguard.Options{Timeout: 2 * time.Second})), onFallback)
	q2 := NewLimiter("par", par, NewLocal(nil), NewShared(client, prefix, redisguard.New(redisguard.Options{Timeout: 2 * time.Second})), onFallback)
	ctx := context.Background()
	a, b := q1.Admit(ctx), q2.Admit(ctx)
	if !a.OK || !b.OK {
		t.Fatalf("two slots: %+v %+v", a, b)
	}
	if c := q2.Admit(ctx); c.OK || c.Reason != ReasonMaxParallel {
		t.Fatalf("third slot across proxies: %+v", c)
	}
	q1.Settle(ctx, &a, 0, 0)
	if c := q2.Admit(ctx); !c.OK {
		t.Fatalf("slot given back on another proxy not reused: %+v", c)
	}
}

func TestSharedTokensAndBudget(t *testing.T) {
	client, prefix := redistest.Client(t)
	shared := NewShared(client, prefix, redisguard.New(redisguard.Options{Timeout: 2 * time.Second}))
	lm := NewLimiter("c", Limits{TokensPerMinute: 100, TokensPerDay: 1000, BudgetMicros: 500, Period: Month}, NewLocal(nil), shared, nil)
	ctx := context.Background()
	a := lm.Admit(ctx)
	if !a.OK || a.Tokens.Limit != 100 || a.Tokens.Remaining != 100 || a.Fallback {
		t.Fatalf("first: %+v", a)
	}
	lm.Settle(ctx, &a, 120, 100)
	r := lm.Admit(ctx)
	if r.OK || r.Reason != ReasonTokensPerMinute || r.Tokens.Remaining != 0 || r.RetryAfter <= 0 || r.RetryAfter > time.Minute || r.Tokens.Reset <= 0 {
		t.Fatalf("after 120 tokens: %+v", r)
	}
	other := NewLimiter("d", Limits{BudgetMicros: 500, Period: Month}, NewLocal(nil), shared, nil)
	a = other.Admit(ctx)
	other.Settle(ctx, &a, 1000, 600)
	r = other.Admit(ctx)
	_, renews := Month.bounds(time.Now())
	if r.OK || r.Reason != ReasonBudget || r.SpentMicros != 600 || !r.Renews.Equal(renews) || r.RetryAfter <= 0 {
		t.Fatalf("over budget: %+v", r)
	}
	// Every key expires.
	iter := client.Scan(ctx, 0, "{"+prefix+"*", 100).Iterator()
	n := 0
	for iter.Next(ctx) {
		n++
		if ttl := client.PTTL(ctx, iter.Val()).Val(); ttl <= 0 {
			t.Errorf("key %s has no expiry (%v)", iter.Val(), ttl)
		}
	}
	if n == 0 {
		t.Error("no keys under the prefix")
	}
}

func TestSharedFallsBackToLocal(t *testing.T) {
	// Nothing listens on port 1: every call fails at once.
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer client.Close()
	var fallbacks atomic.Int32
	m := redisguard.NewMetrics(nil)
	g := redisguard.New(redisguard.Options{Timeout: 100 * time.Millisecond, Cooldown: time.Hour, Metrics: m})
	lm := NewLimiter("c", Limits{RequestsPerMinute: 3, MaxParallel: 5}, NewLocal(nil), NewShared(client, "x:", g), func() { fallbacks.Add(1) })
	ok, last := admitN(lm, 5)
	if ok != 3 || last.OK || !last.Fallback {
		t.Fatalf("with Redis down: admitted %d of 5, last %+v; want 3 counted locally", ok, last)
	}
	failures := testutil.ToFloat64(m.Fallbacks.WithLabelValues("error")) + testutil.ToFloat64(m.Fallbacks.WithLabelValues("timeout"))
	if failures != 1 || fallbacks.Load() != 5 {
		t.Errorf("%g Redis failures (want 1: the guard leaves it alone after), %d fallbacks (want 5)", failures, fallbacks.Load())
	}
}

func TestFormatReset(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", time.Second: "1s", 6 * time.Minute: "6m0s", 17*time.Millisecond + 300*time.Microsecond: "17ms"} {
		if got := FormatReset(d); got != want {
			t.Errorf("FormatReset(%v) = %q; want %q", d, got, want)
		}
	}
}
