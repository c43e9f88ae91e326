// Package ratelimit limits request rates per key (a client address, a credential) with token
// buckets: Local keeps them in this process, Redis shares them between proxies.
//
// A bucket holds up to burst tokens and refills at perSecond tokens a second; a request takes
// one token or is refused with the time until one is available. The caller turns that into a
// 429 with a Retry-After header (rounded up to whole seconds).
package ratelimit

import (
	"context"
	"time"
)

// Limiter decides whether a request for key may proceed now. When it may not, retryAfter is how
// long until it would (never negative; zero when ok). Implementations are safe for concurrent use.
type Limiter interface {
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration)
}

var (
	_ Limiter = (*Local)(nil)
	_ Limiter = (*Redis)(nil)
)

// durationFromSeconds converts seconds to a Duration, rounding up to the next nanosecond so a
// caller that waits retryAfter is never early.
func durationFromSeconds(s float64) time.Duration {
	d := time.Duration(s * float64(time.Second))
	if float64(d) < s*float64(time.Second) {
		d++
	}
	return d
}
