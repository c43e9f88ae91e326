// Package balancer picks one upstream among a group's members by a strategy: RoundRobin,
// WeightedRoundRobin, Random, ResponseAware, Failover or LeastBusy. The configuration names
// the strategies (controlplane/validate.Strategy owns the names); the proxy's config package
// maps each name to its constructor here.
//
// A Picker is built once per compiled configuration from the group's members; each member
// carries a *Stats, which belongs to the upstream rather than to the configuration and so
// survives configuration swaps (the proxy keeps it in its registry). Pickers never see
// breakers or retries: the caller passes a skip function that hides the members it cannot
// use right now (open breaker, already tried).
package balancer

import (
	"math"
	"sync/atomic"
	"time"
)

// Alpha is the weight of a new sample in the latency and success-rate moving averages.
const Alpha = 0.2

// minSuccessRate bounds the success rate used as a divisor, so an upstream that fails
// everything scores 1/minSuccessRate times worse instead of infinitely worse.
const minSuccessRate = 0.05

// Stats are the live counters of one upstream: requests in flight, an exponentially
// weighted moving average (EWMA) of latency and of the success rate. All methods are
// lock-free and safe for concurrent use. The zero value is ready to use (no samples yet);
// NewStats additionally makes Begin allocation-free.
type Stats struct {
	inFlight atomic.Int64
	// latency is the EWMA latency in nanoseconds as float64 bits; 0 means no sample yet.
	latency atomic.Uint64
	// failure is the EWMA failure rate (1 - success rate) as float64 bits; the zero value,
	// 0.0, is the optimistic start: no failures seen.
	failure atomic.Uint64
	// end caches s.End as a func value, so Begin returns it without allocating.
	end func(latency time.Duration, ok bool)
	// throttledUntil is the UnixNano until which the upstream asked not to be sent
	// requests (a 429's Retry-After); 0 when it did not.
	throttledUntil atomic.Int64
}

// Throttle records that the upstream asked for no requests until t (a 429 with
// Retry-After). A later time replaces an earlier one; an earlier one is ignored.
func (s *Stats) Throttle(t time.Time) {
	until := t.UnixNano()
	for {
		old := s.throttledUntil.Load()
		if old >= until || s.throttledUntil.CompareAndSwap(old, until) {
			return
		}
	}
}

// Throttling reports whether a Throttle period was recorded and not yet seen to be over:
// one atomic load, for callers that then read the clock only when it says yes.
func (s *Stats) Throttling() bool { return s.throttledUntil.Load() != 0 }

// Throttled reports whether the upstream is inside its Throttle period at now (UnixNano);
// a period seen to be over is forgotten.
func (s *Stats) Throttled(now int64) bool {
	until := s.throttledUntil.Load()
	if until == 0 {
		return false
	}
	if now < until {
		return true
	}
	s.throttledUntil.CompareAndSwap(until, 0)
	return false
}

// NewStats returns empty Stats.
func NewStats() *Stats {
	s := &Stats{}
	s.end = s.End
	return s
}

// Begin counts a request as in flight and returns the func to call exactly once when it
// ends; the func is s.End (call either, not both). It allocates only on a Stats not made
// by NewStats.
func (s *Stats) Begin() (end func(latency time.Duration, ok bool)) {
	s.inFlight.Add(1)
	if s.end != nil {
		return s.end
	}
	return s.End
}

// End ends a request begun with Begin: in flight goes down by one, ok feeds the success
// rate and latency feeds the latency average. Latency is whatever the caller measures
// (for streams, time to response headers is the useful figure). A failure's latency is
// recorded only when it is above the average: a timeout makes an upstream look slow, but
// a refused connection, however fast, never makes it look fast.
func (s *Stats) End(latency time.Duration, ok bool) {
	s.inFlight.Add(-1)
	x := 0.0
	if !ok {
		x = 1
	}
	updateEWMA(&s.failure, x, false)
	ns := float64(latency)
	if ns < 1 {
		ns = 1 // 0 means "no sample"
	}
	if ok {
		updateEWMA(&s.latency, ns, true)
		return
	}
	for {
		old := s.latency.Load()
		if old != 0 && ns <= math.Float64frombits(old) {
			return
		}
		if s.latency.CompareAndSwap(old, math.Float64bits(ewma(math.Float64frombits(old), ns, old == 0))) {
			return
		}
	}
}

// updateEWMA folds x into the average stored in v; when seedEmpty, an empty average (0
// bits) takes x as is.
func updateEWMA(v *atomic.Uint64, x float64, seedEmpty bool) {
	for {
		old := v.Load()
		next := ewma(math.Float64frombits(old), x, seedEmpty && old == 0)
		if v.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

func ewma(avg, x float64, seed bool) float64 {
	if seed {
		return x
	}
	return Alpha*x + (1-Alpha)*avg
}

// InFlight returns the number of requests begun and not yet ended.
func (s *Stats) InFlight() int64 { return s.inFlight.Load() }

// Latency returns the EWMA latency, and false when there is no sample yet.
func (s *Stats) Latency() (time.Duration, bool) {
	b := s.latency.Load()
	if b == 0 {
		return 0, false
	}
	return time.Duration(math.Float64frombits(b)), true
}

// SuccessRate returns the EWMA success rate in [0, 1]; 1 before any sample.
func (s *Stats) SuccessRate() float64 {
	return 1 - math.Float64frombits(s.failure.Load())
}

// latencyNS returns the EWMA latency in nanoseconds, 0 when unsampled.
func (s *Stats) latencyNS() float64 { return math.Float64frombits(s.latency.Load()) }
