// Package breaker is a circuit breaker for one upstream.
//
// Closed, every call is allowed and its outcome is counted in a sliding window. When the
// failure rate over the window reaches the threshold, with at least MinRequests calls in
// it, the breaker opens: calls are refused. After Cooldown it turns half-open by itself,
// with or without traffic: up to HalfOpenProbes calls are let through as probes. When all
// of them succeed the breaker closes (with an empty window); the first failure re-opens it
// for a new cooldown.
//
// Every admitted call must report its outcome exactly once through the done func Allow
// returned. Outcomes of calls admitted in an earlier phase (a slow call that ends after
// the breaker opened, closed again, ...) are ignored: each phase has its own generation.
package breaker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// State is a breaker state. Its numeric value (0, 1, 2) is what a metrics gauge shows.
type State int32

// The breaker states.
const (
	Closed   State = iota // calls pass, outcomes counted
	Open                  // calls refused until the cooldown ends
	HalfOpen              // a limited number of probe calls pass
)

// String returns "closed", "open" or "half_open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "unknown"
}

// buckets is the number of slots of the sliding window.
const buckets = 10

// Config is a breaker's configuration. It is comparable, so it can be part of a registry
// key. Every field is required: the configuration's defaults and ranges belong to the
// configuration contract (controlplane/validate), which gives the proxy complete, checked
// values.
type Config struct {
	// Threshold is the failure rate (failures / calls, 0-1) that opens the breaker.
	Threshold float64
	// Cooldown is how long the breaker stays open before turning half-open.
	Cooldown time.Duration
	// Window is the sliding window over which the failure rate is computed, kept as 10
	// buckets of Window/10 each.
	Window time.Duration
	// MinRequests is the fewest calls in the window before the rate is judged.
	MinRequests int
	// HalfOpenProbes is how many probe calls run at once while half-open, and how many
	// successes close the breaker.
	HalfOpenProbes int
}

// check reports what makes c unusable, if anything.
func (c Config) check() error {
	switch {
	case !(c.Threshold > 0 && c.Threshold <= 1):
		return fmt.Errorf("threshold %v is not in (0, 1]", c.Threshold)
	case c.Cooldown <= 0, c.Window <= 0:
		return fmt.Errorf("cooldown %v and window %v must be positive", c.Cooldown, c.Window)
	case c.MinRequests < 1, c.HalfOpenProbes < 1:
		return fmt.Errorf("min requests %d and half-open probes %d must be at least 1", c.MinRequests, c.HalfOpenProbes)
	}
	return nil
}

// Clock is the time source of a breaker; tests inject a fake one with WithClock.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d and returns a func that cancels the
	// call (reporting whether it did, as time.Timer.Stop).
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// Option configures a Breaker beyond its Config.
type Option func(*Breaker)

// WithClock makes the breaker use c instead of the real clock.
func WithClock(c Clock) Option { return func(b *Breaker) { b.clock = c } }

// phase is one stretch of a single state. Every transition installs a new phase, so a
// done func, bound to the phase that admitted its call, can tell whether it is stale.
type phase struct {
	state State
	gen   uint64
	// done is the func Allow hands out in this phase (one allocation per phase, none per
	// call).
	done func(success bool)
	// probes counts probe slots taken (half-open); successes counts probes that
	// succeeded.
	probes    atomic.Int32
	successes atomic.Int32
}

type bucket struct {
	epoch       int64 // which Window/10 slice of time the counts belong to
	total, fail int64
}

// Breaker is a circuit breaker. All methods are safe for concurrent use. Allow and Ready
// are lock-free; done funcs and transitions take a short mutex.
type Breaker struct {
	cfg      Config
	onChange func(from, to State)
	clock    Clock
	slot     int64 // bucket length in nanoseconds

	cur atomic.Pointer[phase]

	mu        sync.Mutex // guards everything below and every transition
	window    [buckets]bucket
	stopTimer func() bool
	stopped   bool
}

// New returns a closed breaker. onChange, if not nil, is called on every transition with
// the old and new states, in order, synchronously, while the breaker's lock is held: it
// may call State and Ready but must not call a done func or Stop. New panics when a field of
// cfg is out of range (a zero field included): that is a bug of the caller.
func New(cfg Config, onChange func(from, to State), opts ...Option) *Breaker {
	if err := cfg.check(); err != nil {
		panic("breaker.New: " + err.Error())
	}
	b := &Breaker{cfg: cfg, onChange: onChange, clock: realClock{}}
	for _, o := range opts {
		o(b)
	}
	b.slot = max(int64(b.cfg.Window/buckets), 1)
	b.cur.Store(b.newPhase(Closed, 0))
	return b
}

// Config returns the configuration in force, defaults applied.
func (b *Breaker) Config() Config { return b.cfg }

func (b *Breaker) newPhase(s State, gen uint64) *phase {
	ph := &phase{state: s, gen: gen}
	switch s {
	case Closed:
		ph.done = func(ok bool) { b.closedDone(ph, ok) }
	case HalfOpen:
		ph.done = func(ok bool) { b.probeDone(ph, ok) }
	}
	return ph
}

// State returns the current state.
func (b *Breaker) State() State { return b.cur.Load().state }

// Ready reports whether Allow would admit a call now: closed, or half-open with a free
// probe slot. It changes nothing.
func (b *Breaker) Ready() bool {
	ph := b.cur.Load()
	switch ph.state {
	case Closed:
		return true
	case HalfOpen:
		return int(ph.probes.Load()) < b.cfg.HalfOpenProbes
	}
	return false
}

// Allow asks to make a call. When ok, the call may go ahead and done must be called
// exactly once with its outcome (success false for connect errors, timeouts and 5xx);
// when half-open, the call takes one of the probe slots. When not ok (open, or no probe
// slot free), done is nil. Allow does not allocate.
func (b *Breaker) Allow() (done func(success bool), ok bool) {
	ph := b.cur.Load()
	switch ph.state {
	case Closed:
		return ph.done, true
	case HalfOpen:
		for {
			n := ph.probes.Load()
			if int(n) >= b.cfg.HalfOpenProbes {
				return nil, false
			}
			if ph.probes.CompareAndSwap(n, n+1) {
				return ph.done, true
			}
		}
	}
	return nil, false
}

// Stop cancels the pending cooldown timer, if any, and keeps any further one from being
// set: call it when the upstream is removed. An open breaker stays open after Stop.
func (b *Breaker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.stopTimer != nil {
		b.stopTimer()
		b.stopTimer = nil
	}
}

// closedDone records the outcome of a call admitted while closed and opens the breaker
// when the window's failure rate reaches the threshold.
func (b *Breaker) closedDone(ph *phase, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur.Load() != ph {
		return // admitted in an earlier phase
	}
	// Read the clock under the lock: times then only grow, and a bucket is never reset
	// by a sample older than the one that claimed it.
	epoch := b.clock.Now().UnixNano() / b.slot
	bk := &b.window[epoch%buckets]
	if bk.epoch != epoch {
		*bk = bucket{epoch: epoch}
	}
	bk.total++
	if !ok {
		bk.fail++
	}
	var total, fail int64
	for i := range b.window {
		if w := &b.window[i]; w.epoch > epoch-buckets && w.epoch <= epoch {
			total += w.total
			fail += w.fail
		}
	}
	if total >= int64(b.cfg.MinRequests) && float64(fail)/float64(total) >= b.cfg.Threshold {
		b.transition(ph, Open)
	}
}

// probeDone records a probe's outcome: a failure re-opens the breaker, the last needed
// success closes it.
func (b *Breaker) probeDone(ph *phase, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur.Load() != ph {
		return
	}
	if !ok {
		b.transition(ph, Open)
		return
	}
	if int(ph.successes.Add(1)) >= b.cfg.HalfOpenProbes {
		b.transition(ph, Closed)
	}
}

// cooldownOver turns an open breaker half-open, if it is still in the phase that set the
// timer.
func (b *Breaker) cooldownOver(ph *phase) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur.Load() != ph || b.stopped {
		return
	}
	b.stopTimer = nil
	b.transition(ph, HalfOpen)
}

// transition moves from phase from to state to. b.mu must be held and from must be the
// current phase.
func (b *Breaker) transition(from *phase, to State) {
	next := b.newPhase(to, from.gen+1)
	if b.stopTimer != nil {
		b.stopTimer()
		b.stopTimer = nil
	}
	switch to {
	case Closed:
		b.window = [buckets]bucket{}
	case Open:
		if !b.stopped {
			b.stopTimer = b.clock.AfterFunc(b.cfg.Cooldown, func() { b.cooldownOver(next) })
		}
	}
	b.cur.Store(next)
	if b.onChange != nil {
		b.onChange(from.state, to)
	}
}
