package quota

import (
	"sync"
	"time"
)

// Local keeps one consumer's counters in the process: the store of a proxy without Redis,
// and Redis's stand-in while it is away. Its counts outlive configuration changes (the
// proxy keeps one Local per consumer name). The zero value is not usable; use NewLocal.
type Local struct {
	now func() time.Time

	mu       sync.Mutex
	req      buckets // requests, 1-second steps
	tokm     buckets // tokens, 1-second steps
	tokd     buckets // tokens, 24-minute steps
	parallel int64
	spend    int64     // micro-USD spent in the period starting at periodAt
	periodAt time.Time // start of the spend's period (zero: none yet)
	period   Period
}

// NewLocal returns an empty Local reading time from now (nil: time.Now).
func NewLocal(now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{now: now, req: buckets{step: minuteStep}, tokm: buckets{step: minuteStep}, tokd: buckets{step: dayStep}}
}

// buckets is a sliding window of 60 steps: slot i%60 holds the count of step i when idx
// says it is that step's.
type buckets struct {
	step time.Duration
	idx  [steps]int64
	n    [steps]int64
}

// stepOf is the step holding t.
func (b *buckets) stepOf(t time.Time) int64 { return t.UnixNano() / int64(b.step) }

// used is the window's sum at step cur.
func (b *buckets) used(cur int64) int64 {
	var sum int64
	for s := range b.n {
		if b.idx[s] > cur-steps && b.idx[s] <= cur {
			sum += b.n[s]
		}
	}
	return sum
}

func (b *buckets) add(cur, v int64) {
	s := cur % steps
	if b.idx[s] != cur {
		b.idx[s], b.n[s] = cur, 0
	}
	b.n[s] += v
}

// expiry is when the count of step j leaves the window.
func (b *buckets) expiry(j int64) time.Time { return time.Unix(0, (j+steps)*int64(b.step)) }

// state returns the window's usage at now and the time until it holds nothing.
func (b *buckets) state(now time.Time) window {
	cur := b.stepOf(now)
	w := window{used: b.used(cur)}
	for j := cur; j > cur-steps; j-- {
		if s := j % steps; b.idx[s] == j && b.n[s] > 0 {
			w.reset = b.expiry(j).Sub(now)
			break
		}
	}
	return w
}

// retryAfter is the time until the window's usage falls below limit.
func (b *buckets) retryAfter(now time.Time, limit int64) time.Duration {
	cur := b.stepOf(now)
	sum := b.used(cur)
	for j := cur - steps + 1; j <= cur; j++ {
		if s := j % steps; b.idx[s] == j {
			sum -= b.n[s]
			if sum < limit {
				return b.expiry(j).Sub(now)
			}
		}
	}
	return 0
}

// admit decides on one request under l, counting it when admitted.
func (c *Local) admit(l Limits) Admission {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var a Admission
	req, tokm, tokd := c.req.state(now), c.tokm.state(now), c.tokd.state(now)
	spent := c.spent(l.Period, now)
	refuse := func(r Reason, after time.Duration) Admission {
		a.Reason, a.RetryAfter = r, max(after, time.Millisecond)
		a.fill(l, req.used, req.reset, tokm, tokd)
		return a
	}
	if l.BudgetMicros > 0 {
		a.SpentMicros = spent
		_, a.Renews = l.Period.bounds(now)
	}
	switch {
	case l.MaxParallel > 0 && c.parallel >= l.MaxParallel:
		return refuse(ReasonMaxParallel, time.Second)
	case l.RequestsPerMinute > 0 && req.used >= l.RequestsPerMinute:
		return refuse(ReasonRequestsPerMinute, c.req.retryAfter(now, l.RequestsPerMinute))
	case l.TokensPerMinute > 0 && tokm.used >= l.TokensPerMinute:
		return refuse(ReasonTokensPerMinute, c.tokm.retryAfter(now, l.TokensPerMinute))
	case l.TokensPerDay > 0 && tokd.used >= l.TokensPerDay:
		return refuse(ReasonTokensPerDay, c.tokd.retryAfter(now, l.TokensPerDay))
	case l.BudgetMicros > 0 && spent >= l.BudgetMicros:
		return refuse(ReasonBudget, a.Renews.Sub(now))
	}
	a.OK = true
	if l.RequestsPerMinute > 0 {
		c.req.add(c.req.stepOf(now), 1)
		req = c.req.state(now)
	}
	if l.MaxParallel > 0 {
		c.parallel++
		a.local = true
	}
	a.fill(l, req.used, req.reset, tokm, tokd)
	return a
}

// spent returns the spend of the period holding now, forgetting an older period's.
func (c *Local) spent(p Period, now time.Time) int64 {
	start, _ := p.bounds(now)
	if !c.periodAt.Equal(start) || c.period != p {
		c.periodAt, c.period, c.spend = start, p, 0
	}
	return c.spend
}

// charge records a request's tokens and spend.
func (c *Local) charge(l Limits, tokens, spendMicros int64) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if tokens > 0 {
		if l.TokensPerMinute > 0 {
			c.tokm.add(c.tokm.stepOf(now), tokens)
		}
		if l.TokensPerDay > 0 {
			c.tokd.add(c.tokd.stepOf(now), tokens)
		}
	}
	if spendMicros > 0 && l.BudgetMicros > 0 {
		c.spent(l.Period, now)
		c.spend += spendMicros
	}
}

// release gives a parallel slot back.
func (c *Local) release() {
	c.mu.Lock()
	c.parallel = max(0, c.parallel-1)
	c.mu.Unlock()
}
