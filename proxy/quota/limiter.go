package quota

import (
	"context"
	"time"
)

// Limiter holds one consumer to its Limits. It is built with each configuration (the
// numbers may change) over the consumer's long-lived Local store and the proxy's Shared
// store. A Limiter is immutable and safe for concurrent use.
type Limiter struct {
	name   string
	limits Limits
	local  *Local
	shared *Shared // nil: no Redis
	// OnFallback, when set, hears every decision or charge made locally because Redis
	// could not be asked.
	onFallback func()
}

// NewLimiter returns the Limiter of consumer name under l, counting in shared when it is
// not nil and in local otherwise (and whenever shared fails). onFallback may be nil.
func NewLimiter(name string, l Limits, local *Local, shared *Shared, onFallback func()) *Limiter {
	return &Limiter{name: name, limits: l, local: local, shared: shared, onFallback: onFallback}
}

// Limits returns the limits the Limiter enforces.
func (lm *Limiter) Limits() Limits { return lm.limits }

// Admit decides whether a request may start, and counts it when it may. An admitted request
// must be given to Settle exactly once.
func (lm *Limiter) Admit(ctx context.Context) Admission {
	if lm.shared != nil {
		a, err := lm.shared.admit(ctx, lm.name, lm.limits, lm.local.now())
		if err == nil {
			return a
		}
		lm.fellBack()
		a = lm.local.admit(lm.limits)
		a.Fallback = true
		return a
	}
	return lm.local.admit(lm.limits)
}

// Settle ends an admitted request: it charges tokens and spendMicros (micro-USD) and gives
// back the request's parallel slot. A refused admission is ignored. When Redis cannot be
// asked, the charge is made locally and the Redis slot is left to its lease.
func (lm *Limiter) Settle(ctx context.Context, a *Admission, tokens, spendMicros int64) {
	if !a.OK || !lm.limits.charges() {
		return
	}
	if a.local {
		lm.local.release()
	}
	if a.shared && lm.shared != nil {
		if tokens <= 0 && spendMicros <= 0 && a.ticket == "" {
			return
		}
		err := lm.shared.settle(ctx, lm.name, lm.limits, a.ticket, tokens, spendMicros, lm.local.now())
		if err == nil {
			return
		}
		lm.fellBack()
	}
	lm.local.charge(lm.limits, tokens, spendMicros)
}

func (lm *Limiter) fellBack() {
	if lm.onFallback != nil {
		lm.onFallback()
	}
}

// FormatReset spells a Quota's Reset as OpenAI's x-ratelimit-reset-* headers do: "1s",
// "6m0s", "17ms" (a Go duration, to the millisecond).
func FormatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return d.Round(time.Millisecond).String()
}
