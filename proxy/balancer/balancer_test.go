package balancer

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func members(weights ...int) []Member {
	ms := make([]Member, len(weights))
	for i, w := range weights {
		ms[i] = Member{Weight: w, Stats: NewStats()}
	}
	return ms
}

// strategies are the constructors under test, by the names the configuration gives them.
var strategies = []struct {
	name string
	new  func([]Member) Picker
}{
	{"roundrobin", func(ms []Member) Picker { return NewRoundRobin(len(ms)) }},
	{"weighted_roundrobin", func(ms []Member) Picker { return NewWeightedRoundRobin(ms) }},
	{"random", func(ms []Member) Picker { return NewRandom(len(ms)) }},
	{"response_aware", func(ms []Member) Picker { return NewResponseAware(ms) }},
	{"failover", func(ms []Member) Picker { return NewFailover(len(ms)) }},
	{"least_busy", func(ms []Member) Picker { return NewLeastBusy(ms) }},
}

func mustNew(t testing.TB, strategy string, ms []Member) Picker {
	t.Helper()
	for _, s := range strategies {
		if s.name == strategy {
			return s.new(ms)
		}
	}
	t.Fatalf("no strategy %q", strategy)
	return nil
}

func skipSet(idx ...int) func(int) bool {
	return func(i int) bool {
		for _, j := range idx {
			if i == j {
				return true
			}
		}
		return false
	}
}

func count(p Picker, n, picks int, skip func(int) bool) []int {
	got := make([]int, n)
	for range picks {
		i := p.Pick(skip)
		if i < 0 {
			panic("Pick = -1")
		}
		got[i]++
	}
	return got
}

func TestStatsRequired(t *testing.T) {
	for _, s := range []string{"response_aware", "least_busy"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s over a member without Stats did not panic", s)
				}
			}()
			mustNew(t, s, []Member{{Stats: NewStats()}, {}})
		}()
	}
}

func TestAllSkipped(t *testing.T) {
	for _, st := range strategies {
		s := st.name
		t.Run(s, func(t *testing.T) {
			p := mustNew(t, s, members(1, 2, 3))
			if got := p.Pick(func(int) bool { return true }); got != -1 {
				t.Errorf("Pick(all skipped) = %d; want -1", got)
			}
			if got := p.Pick(skipSet(0, 2)); got != 1 {
				t.Errorf("Pick(only 1 left) = %d; want 1", got)
			}
			if got := p.Pick(nil); got < 0 || got > 2 {
				t.Errorf("Pick(nil) = %d", got)
			}
		})
	}
}

func TestRoundRobin(t *testing.T) {
	p := mustNew(t, "roundrobin", members(5, 1, 1))
	var seq []int
	for range 6 {
		seq = append(seq, p.Pick(nil))
	}
	if fmt.Sprint(seq) != "[0 1 2 0 1 2]" {
		t.Errorf("sequence = %v; want [0 1 2 0 1 2]", seq)
	}
	// With member 1 skipped, the other two share evenly.
	if got := count(p, 3, 100, skipSet(1)); got[0] != 50 || got[2] != 50 || got[1] != 0 {
		t.Errorf("with 1 skipped: %v; want [50 0 50]", got)
	}
}

func TestWeightedRoundRobin(t *testing.T) {
	p := mustNew(t, "weighted_roundrobin", members(1, 2, 3))
	var seq []int
	for range 12 {
		seq = append(seq, p.Pick(nil))
	}
	got := make([]int, 3)
	run := 0
	for k, i := range seq {
		got[i]++
		if k > 0 && i == seq[k-1] {
			run++
		} else {
			run = 1
		}
		if i == 2 && run >= 3 {
			t.Errorf("heaviest member picked 3 times in a row: %v", seq)
		}
	}
	if fmt.Sprint(got) != "[2 4 6]" {
		t.Errorf("12 picks = %v (sequence %v); want [2 4 6]", got, seq)
	}
	if fmt.Sprint(seq[:6]) != "[2 1 0 2 1 2]" {
		t.Errorf("first six = %v; want smooth [2 1 0 2 1 2] (first max wins ties, as nginx)", seq[:6])
	}
	// Skipping the heaviest: the others share 1:2.
	p = mustNew(t, "weighted_roundrobin", members(1, 2, 3))
	if got := count(p, 3, 30, skipSet(2)); fmt.Sprint(got) != "[10 20 0]" {
		t.Errorf("with 2 skipped: %v; want [10 20 0]", got)
	}
	// Weight 0 means 1.
	p = mustNew(t, "weighted_roundrobin", members(0, 1))
	if got := count(p, 2, 10, nil); fmt.Sprint(got) != "[5 5]" {
		t.Errorf("weights 0,1: %v; want [5 5]", got)
	}
}

func TestRandom(t *testing.T) {
	p := mustNew(t, "random", members(1, 1, 1, 1))
	const picks = 40000
	got := count(p, 4, picks, skipSet(3))
	if got[3] != 0 {
		t.Errorf("skipped member picked %d times", got[3])
	}
	for i := range 3 {
		// Expect 13333 each; the standard deviation is about 94, so ±1000 never fails
		// by chance.
		if got[i] < picks/3-1000 || got[i] > picks/3+1000 {
			t.Errorf("member %d: %d picks of %d; want about %d (%v)", i, got[i], picks, picks/3, got)
		}
	}
}

func TestFailover(t *testing.T) {
	p := mustNew(t, "failover", members(1, 1, 1))
	tests := []struct {
		skip []int
		want int
	}{
		{nil, 0}, {[]int{0}, 1}, {[]int{0, 1}, 2}, {[]int{1}, 0}, {[]int{1, 2}, 0}, {[]int{0, 1, 2}, -1},
	}
	for _, tt := range tests {
		for range 3 {
			if got := p.Pick(skipSet(tt.skip...)); got != tt.want {
				t.Errorf("skip %v: Pick = %d; want %d", tt.skip, got, tt.want)
			}
		}
	}
}

func TestLeastBusy(t *testing.T) {
	ms := members(1, 1)
	p := mustNew(t, "least_busy", ms)
	ms[0].Stats.Begin()
	ms[0].Stats.Begin()
	for range 100 {
		if got := p.Pick(nil); got != 1 {
			t.Fatalf("Pick = %d; want the idle member 1", got)
		}
	}
	// Three members, one busy: the busy one loses every comparison it is drawn into,
	// so it is never picked.
	ms = members(1, 1, 1)
	p = mustNew(t, "least_busy", ms)
	ms[1].Stats.Begin()
	got := count(p, 3, 3000, nil)
	if got[1] != 0 || got[0] < 1200 || got[2] < 1200 {
		t.Errorf("picks = %v; want member 1 never and the others about 1500 each", got)
	}
}

func TestResponseAware(t *testing.T) {
	ms := members(1, 1)
	p := mustNew(t, "response_aware", ms)
	// No samples: both get traffic (ties shared round robin).
	if got := count(p, 2, 100, nil); got[0] < 40 || got[1] < 40 {
		t.Errorf("unsampled picks = %v; want both used", got)
	}
	for range 5 {
		ms[0].Stats.Begin()(100*time.Millisecond, true)
		ms[1].Stats.Begin()(400*time.Millisecond, true)
	}
	got := count(p, 2, 1600, nil)
	if got[0] < 1400 {
		t.Errorf("picks = %v; want the faster member 0 preferred", got)
	}
	if got[1] == 0 {
		t.Errorf("picks = %v; want the slower member still probed", got)
	}
	// Load shifts traffic: with 4 in flight, member 0 scores 100ms×5 > 400ms×1.
	for range 4 {
		ms[0].Stats.Begin()
	}
	busy := count(p, 2, 160, nil)
	if busy[1] < 140 {
		t.Errorf("with member 0 busy: %v; want member 1 preferred", busy)
	}
	for range 4 {
		ms[0].Stats.End(100*time.Millisecond, true)
	}
	// Failures lower the success rate: 0.8^k until member 0 scores worse than member 1.
	for range 10 {
		ms[0].Stats.Begin()(time.Millisecond, false)
	}
	if l, _ := ms[0].Stats.Latency(); l != 100*time.Millisecond {
		t.Errorf("fast failures changed latency to %v; want 100ms kept", l)
	}
	if got := count(p, 2, 160, nil); got[1] < 140 {
		t.Errorf("member 0 failing: %v; want member 1 preferred", got)
	}
}

func TestResponseAwareNewMemberGetsTraffic(t *testing.T) {
	ms := members(1, 1)
	p := mustNew(t, "response_aware", ms)
	for range 5 {
		ms[0].Stats.Begin()(200*time.Millisecond, true)
	}
	// Member 1 has no sample: it is scored with member 0's latency, and wins when member 0
	// is busy.
	ms[0].Stats.Begin()
	if got := count(p, 2, 15, nil); got[1] != 15 {
		t.Errorf("picks = %v; want all on the unsampled, idle member 1", got)
	}
}

func TestStats(t *testing.T) {
	s := NewStats()
	if _, ok := s.Latency(); ok {
		t.Error("Latency sampled before any sample")
	}
	if s.SuccessRate() != 1 {
		t.Errorf("SuccessRate() = %v; want 1", s.SuccessRate())
	}
	end := s.Begin()
	if s.InFlight() != 1 {
		t.Errorf("InFlight() = %d; want 1", s.InFlight())
	}
	end(100*time.Millisecond, true)
	if l, _ := s.Latency(); l != 100*time.Millisecond {
		t.Errorf("first sample: Latency() = %v; want 100ms (seeded)", l)
	}
	s.Begin()
	s.End(200*time.Millisecond, true)
	if l, _ := s.Latency(); l != 120*time.Millisecond {
		t.Errorf("Latency() = %v; want 120ms (0.2×200 + 0.8×100)", l)
	}
	s.Begin()
	s.End(time.Second, false) // slow failure counts
	if l, _ := s.Latency(); l != 296*time.Millisecond {
		t.Errorf("Latency() = %v; want 296ms", l)
	}
	if r := s.SuccessRate(); r < 0.79 || r > 0.81 {
		t.Errorf("SuccessRate() = %v; want 0.8", r)
	}
	if s.InFlight() != 0 {
		t.Errorf("InFlight() = %d; want 0", s.InFlight())
	}
	var zero Stats
	zero.Begin()(time.Second, true)
	if l, ok := zero.Latency(); !ok || l != time.Second {
		t.Errorf("zero Stats: Latency() = %v, %v", l, ok)
	}
}

func TestConcurrent(t *testing.T) {
	for _, st := range strategies {
		s := st.name
		t.Run(s, func(t *testing.T) {
			ms := members(1, 2, 3, 4)
			p := mustNew(t, s, ms)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					skip := skipSet(g % 4)
					for range 2000 {
						i := p.Pick(skip)
						if i < 0 || i == g%4 {
							t.Errorf("Pick = %d with %d skipped", i, g%4)
							return
						}
						ms[i].Stats.Begin()(time.Duration(i+1)*time.Millisecond, i != 3)
					}
				})
			}
			wg.Wait()
			for i, m := range ms {
				if m.Stats.InFlight() != 0 {
					t.Errorf("member %d: InFlight() = %d after all ended", i, m.Stats.InFlight())
				}
			}
		})
	}
}

func TestLargeGroup(t *testing.T) {
	// More than 64 members takes the slow path of the eligible set.
	ws := make([]int, 100)
	for i := range ws {
		ws[i] = 1
	}
	for _, st := range strategies {
		s := st.name
		t.Run(s, func(t *testing.T) {
			p := mustNew(t, s, members(ws...))
			skip := func(i int) bool { return i != 70 && i != 90 }
			for range 50 {
				if i := p.Pick(skip); i != 70 && i != 90 {
					t.Fatalf("Pick = %d; want 70 or 90", i)
				}
			}
		})
	}
	p := mustNew(t, "roundrobin", members(ws...))
	if got := count(p, 100, 1000, nil); got[0] != 10 || got[99] != 10 {
		t.Errorf("roundrobin over 100: first %d, last %d; want 10 each", got[0], got[99])
	}
}

func TestPickAllocs(t *testing.T) {
	skip := skipSet(1)
	for _, st := range strategies {
		s := st.name
		p := mustNew(t, s, members(1, 2, 3, 4))
		if a := testing.AllocsPerRun(100, func() { p.Pick(skip) }); a != 0 {
			t.Errorf("%s: Pick allocates %.1f times; want 0", s, a)
		}
	}
	st := NewStats()
	if a := testing.AllocsPerRun(100, func() { st.Begin()(time.Millisecond, true) }); a != 0 {
		t.Errorf("Begin/end allocates %.1f times; want 0", a)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, st := range strategies {
		s := st.name
		b.Run(s, func(b *testing.B) {
			ms := members(1, 2, 3, 4, 5, 6, 7, 8)
			for i, m := range ms {
				m.Stats.Begin()(time.Duration(i+1)*time.Millisecond, true)
			}
			p := mustNew(b, s, ms)
			skip := func(i int) bool { return i == 3 }
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p.Pick(skip)
				}
			})
		})
	}
}

func BenchmarkStatsBeginEnd(b *testing.B) {
	s := NewStats()
	b.ReportAllocs()
	for b.Loop() {
		s.Begin()(time.Millisecond, true)
	}
}

func TestStatsThrottle(t *testing.T) {
	s := NewStats()
	t0 := time.Unix(1000, 0)
	if s.Throttling() || s.Throttled(t0.UnixNano()) {
		t.Fatal("new Stats throttled")
	}
	s.Throttle(t0.Add(30 * time.Second))
	s.Throttle(t0.Add(10 * time.Second)) // an earlier end does not shorten the period
	if !s.Throttling() || !s.Throttled(t0.Add(29*time.Second).UnixNano()) {
		t.Fatal("not throttled 29s into a 30s Retry-After")
	}
	if s.Throttled(t0.Add(30 * time.Second).UnixNano()) {
		t.Fatal("still throttled when the period is over")
	}
	if s.Throttling() {
		t.Error("a period seen to be over is not forgotten")
	}
}
