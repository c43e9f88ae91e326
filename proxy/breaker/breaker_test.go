package breaker

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manual clock: time moves only on Advance, which runs due timers
// synchronously, in the caller's goroutine.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// pending returns how many timers are armed.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// recorder collects transitions as "from>to".
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) onChange(from, to State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, from.String()+">"+to.String())
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, " ")
}

// complete fills the fields a test leaves zero with usual values (New requires them all).
func complete(c Config) Config {
	if c.Threshold == 0 {
		c.Threshold = 0.5
	}
	if c.Cooldown == 0 {
		c.Cooldown = 30 * time.Second
	}
	if c.Window == 0 {
		c.Window = 10 * time.Second
	}
	if c.MinRequests == 0 {
		c.MinRequests = 5
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = 1
	}
	return c
}

func newTest(t *testing.T, cfg Config) (*Breaker, *fakeClock, *recorder) {
	t.Helper()
	clk := newFakeClock()
	rec := &recorder{}
	b := New(complete(cfg), rec.onChange, WithClock(clk))
	t.Cleanup(b.Stop)
	return b, clk, rec
}

// call runs one admitted call with the given outcome; it fails the test if not admitted.
func call(t *testing.T, b *Breaker, success bool) {
	t.Helper()
	done, ok := b.Allow()
	if !ok {
		t.Fatalf("Allow() refused in state %v", b.State())
	}
	done(success)
}

func wantState(t *testing.T, b *Breaker, want State) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("State() = %v; want %v", got, want)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", Open: "open", HalfOpen: "half_open", 7: "unknown"} {
		if s.String() != want {
			t.Errorf("State(%d).String() = %q; want %q", int(s), s.String(), want)
		}
	}
}

func TestNew(t *testing.T) {
	want := complete(Config{})
	b := New(want, nil)
	defer b.Stop()
	if b.Config() != want {
		t.Errorf("Config() = %+v; want %+v", b.Config(), want)
	}
	if b.State() != Closed || !b.Ready() {
		t.Errorf("new breaker: %v, ready %v", b.State(), b.Ready())
	}
	for _, c := range []Config{{}, complete(Config{Threshold: 1.5}), complete(Config{Cooldown: -1}), complete(Config{HalfOpenProbes: -1})} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%+v) did not panic", c)
				}
			}()
			New(c, nil).Stop()
		}()
	}
}

func TestLifecycle(t *testing.T) {
	b, clk, rec := newTest(t, Config{Threshold: 0.5, Cooldown: 30 * time.Second, Window: 10 * time.Second, MinRequests: 4, HalfOpenProbes: 2})
	call(t, b, true)
	call(t, b, false)
	call(t, b, true)
	wantState(t, b, Closed) // 1/3, and fewer than MinRequests
	call(t, b, false)       // 2/4 = threshold
	wantState(t, b, Open)
	if b.Ready() {
		t.Error("open: Ready() = true")
	}
	if done, ok := b.Allow(); ok || done != nil {
		t.Error("open: Allow() admitted a call")
	}
	clk.Advance(29 * time.Second)
	wantState(t, b, Open)
	clk.Advance(time.Second) // no traffic at all: the timer alone turns it half-open
	wantState(t, b, HalfOpen)
	if !b.Ready() {
		t.Error("half-open: Ready() = false")
	}
	// Two probes at once, no third.
	d1, ok1 := b.Allow()
	d2, ok2 := b.Allow()
	if !ok1 || !ok2 {
		t.Fatal("half-open: probes refused")
	}
	if _, ok := b.Allow(); ok || b.Ready() {
		t.Error("half-open: a third probe was admitted")
	}
	d1(true)
	wantState(t, b, HalfOpen) // one success of two
	if b.Ready() {
		t.Error("half-open: slot freed by a success; probes are counted per phase")
	}
	d2(false) // a failure re-opens
	wantState(t, b, Open)
	clk.Advance(29 * time.Second)
	wantState(t, b, Open) // a new, full cooldown
	clk.Advance(time.Second)
	wantState(t, b, HalfOpen)
	call(t, b, true)
	call(t, b, true)
	wantState(t, b, Closed)
	// The window was reset: three failures are under MinRequests.
	call(t, b, false)
	call(t, b, false)
	call(t, b, false)
	wantState(t, b, Closed)
	want := "closed>open open>half_open half_open>open open>half_open half_open>closed"
	if rec.String() != want {
		t.Errorf("transitions = %q; want %q", rec, want)
	}
}

func TestMinRequests(t *testing.T) {
	b, _, _ := newTest(t, Config{Threshold: 0.1, MinRequests: 10})
	for range 9 {
		call(t, b, false)
	}
	wantState(t, b, Closed)
	call(t, b, false)
	wantState(t, b, Open)
}

func TestThresholdEdge(t *testing.T) {
	tests := []struct {
		threshold float64
		fail, ok  int
		want      State
	}{
		{0.3, 3, 7, Open},      // exactly 0.3
		{0.3, 2, 8, Closed},    // 0.2
		{0.5, 5, 5, Open},      // exactly half
		{0.5, 4, 6, Closed},    // 0.4
		{1.0, 9, 1, Closed},    // 0.9 < 1
		{1.0, 10, 0, Open},     // all failed
		{0.01, 1, 99, Open},    // 1%
		{0.01, 1, 100, Closed}, // 1/101, just under 1%
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v_%d_%d", tt.threshold, tt.fail, tt.ok), func(t *testing.T) {
			b, _, _ := newTest(t, Config{Threshold: tt.threshold, MinRequests: tt.fail + tt.ok})
			// Successes first, so the rate is judged only once all calls are in.
			for range tt.ok {
				call(t, b, true)
			}
			for range tt.fail {
				call(t, b, false)
			}
			wantState(t, b, tt.want)
		})
	}
}

func TestSlidingWindow(t *testing.T) {
	b, clk, _ := newTest(t, Config{Threshold: 0.5, Window: 10 * time.Second, MinRequests: 4})
	call(t, b, false)
	call(t, b, false)
	call(t, b, false)
	clk.Advance(10 * time.Second) // those three slide out
	call(t, b, false)
	call(t, b, true)
	call(t, b, true)
	wantState(t, b, Closed) // 1 of 3 in the window
	clk.Advance(5 * time.Second)
	call(t, b, false) // 2 of 4
	wantState(t, b, Open)
}

func TestWindowBucketsExpire(t *testing.T) {
	b, clk, _ := newTest(t, Config{Threshold: 0.5, Window: 10 * time.Second, MinRequests: 2})
	for i := range 30 {
		call(t, b, i%3 != 2) // one failure in three, after two successes: at most 0.33
		clk.Advance(700 * time.Millisecond)
	}
	wantState(t, b, Closed)
	clk.Advance(time.Hour) // everything expired: one failure plus one success is 0.5
	call(t, b, true)
	wantState(t, b, Closed)
	call(t, b, false)
	wantState(t, b, Open)
}

func TestStaleDoneIgnored(t *testing.T) {
	b, clk, rec := newTest(t, Config{Threshold: 0.5, Cooldown: time.Second, MinRequests: 2, HalfOpenProbes: 1})
	slow, _ := b.Allow() // admitted while closed, ends much later
	call(t, b, false)
	call(t, b, false)
	wantState(t, b, Open)
	slow(true) // from the closed phase: ignored, stays open
	wantState(t, b, Open)
	clk.Advance(time.Second)
	wantState(t, b, HalfOpen)
	slow(false) // still ignored: must not re-open
	wantState(t, b, HalfOpen)
	probe, _ := b.Allow()
	probe(true)
	wantState(t, b, Closed)
	probe(false) // a second call of a half-open done: stale now
	wantState(t, b, Closed)
	slow(false)
	slow(false) // old closed-phase done: not counted in the new window
	wantState(t, b, Closed)
	call(t, b, false)
	wantState(t, b, Closed) // one failure of MinRequests 2
	if want := "closed>open open>half_open half_open>closed"; rec.String() != want {
		t.Errorf("transitions = %q; want %q", rec, want)
	}
}

func TestStop(t *testing.T) {
	b, clk, rec := newTest(t, Config{MinRequests: 1, Cooldown: time.Second})
	call(t, b, false)
	wantState(t, b, Open)
	if clk.pending() != 1 {
		t.Fatalf("%d timers armed; want 1", clk.pending())
	}
	b.Stop()
	if clk.pending() != 0 {
		t.Errorf("%d timers armed after Stop; want 0", clk.pending())
	}
	clk.Advance(time.Hour)
	wantState(t, b, Open)
	if rec.String() != "closed>open" {
		t.Errorf("transitions = %q", rec)
	}
}

// TestRealClock runs the cooldown on the real timer, with a short cooldown and a wait on
// the condition with a deadline.
func TestRealClock(t *testing.T) {
	changes := make(chan string, 10)
	b := New(complete(Config{MinRequests: 1, Cooldown: 20 * time.Millisecond}), func(from, to State) {
		changes <- from.String() + ">" + to.String()
	})
	defer b.Stop()
	done, _ := b.Allow()
	done(false)
	for _, want := range []string{"closed>open", "open>half_open"} {
		select {
		case got := <-changes:
			if got != want {
				t.Fatalf("transition %q; want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %q within 5s", want)
		}
	}
	wantState(t, b, HalfOpen)
}

func TestConcurrent(t *testing.T) {
	clk := newFakeClock()
	var mu sync.Mutex
	var seq []State
	var last = Closed
	bad := ""
	b := New(complete(Config{Threshold: 0.5, MinRequests: 20, Cooldown: time.Second, HalfOpenProbes: 2}), func(from, to State) {
		mu.Lock()
		defer mu.Unlock()
		if from != last && bad == "" {
			bad = fmt.Sprintf("transition from %v while in %v", from, last)
		}
		last = to
		seq = append(seq, to)
	}, WithClock(clk))
	defer b.Stop()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 4000 {
				if done, ok := b.Allow(); ok {
					done(rng.IntN(3) == 0) // two failures in three: it keeps opening
				}
				b.Ready()
				b.State()
				if i%20 == 0 {
					clk.Advance(25 * time.Millisecond) // timers fire in this goroutine
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if bad != "" {
		t.Error(bad)
	}
	if last != b.State() {
		t.Errorf("last transition to %v, State() = %v", last, b.State())
	}
	seen := map[State]int{}
	for _, s := range seq {
		seen[s]++
	}
	if seen[Open] == 0 || seen[HalfOpen] == 0 {
		t.Errorf("transitions %v: the run never opened or never went half-open", seen)
	}
	t.Logf("transitions to: %v", seen)
}

func TestAllowAllocs(t *testing.T) {
	b := New(complete(Config{}), nil)
	defer b.Stop()
	if a := testing.AllocsPerRun(1000, func() {
		done, _ := b.Allow()
		done(true)
	}); a != 0 {
		t.Errorf("Allow/done allocates %.1f times; want 0", a)
	}
}

func BenchmarkAllowDone(b *testing.B) {
	br := New(complete(Config{}), nil)
	defer br.Stop()
	b.ReportAllocs()
	for b.Loop() {
		done, _ := br.Allow()
		done(true)
	}
}

func BenchmarkAllowDoneParallel(b *testing.B) {
	br := New(complete(Config{}), nil)
	defer br.Stop()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, _ := br.Allow()
			done(true)
		}
	})
}

func BenchmarkReady(b *testing.B) {
	br := New(complete(Config{}), nil)
	defer br.Stop()
	b.ReportAllocs()
	for b.Loop() {
		br.Ready()
	}
}
