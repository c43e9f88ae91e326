package balancer

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Member is one upstream of a group as the picker sees it.
type Member struct {
	// Weight is used by WeightedRoundRobin only; below 1 means 1.
	Weight int
	// Stats are the upstream's live counters; required by ResponseAware and LeastBusy,
	// ignored by the others (nil allowed there).
	Stats *Stats
}

// Picker chooses a member for one request attempt.
type Picker interface {
	// Pick returns the index of the chosen member, or -1 when skip hides every member.
	// skip(i) reports whether member i must not be chosen now (nil: none is skipped);
	// it may be called any number of times per Pick, including not at all for some i.
	// Pick is safe for concurrent use and does not allocate.
	Pick(skip func(i int) bool) int
}

var (
	_ Picker = (*RoundRobin)(nil)
	_ Picker = (*WeightedRoundRobin)(nil)
	_ Picker = (*Random)(nil)
	_ Picker = (*ResponseAware)(nil)
	_ Picker = (*Failover)(nil)
	_ Picker = (*LeastBusy)(nil)
)

// The constructors below copy members; their order is the index space of Pick. Weights
// below 1 count as 1.

// NewRoundRobin returns a RoundRobin over n members.
func NewRoundRobin(n int) *RoundRobin { return &RoundRobin{n: n} }

// NewWeightedRoundRobin returns a WeightedRoundRobin over members by their weights.
func NewWeightedRoundRobin(members []Member) *WeightedRoundRobin {
	p := &WeightedRoundRobin{weight: make([]int, len(members)), current: make([]int, len(members))}
	for i, m := range members {
		p.weight[i] = max(m.Weight, 1)
	}
	return p
}

// NewRandom returns a Random over n members.
func NewRandom(n int) *Random { return &Random{n: n} }

// NewFailover returns a Failover over n members.
func NewFailover(n int) *Failover { return &Failover{n: n} }

// NewResponseAware returns a ResponseAware over members; every member's Stats is required.
func NewResponseAware(members []Member) *ResponseAware {
	return &ResponseAware{members: withStats(members)}
}

// NewLeastBusy returns a LeastBusy over members; every member's Stats is required.
func NewLeastBusy(members []Member) *LeastBusy { return &LeastBusy{members: withStats(members)} }

// withStats copies members, refusing one without Stats: that is a bug of the caller.
func withStats(members []Member) []Member {
	ms := make([]Member, len(members))
	for i, m := range members {
		if m.Stats == nil {
			panic(fmt.Sprintf("balancer: member %d has no Stats", i))
		}
		ms[i] = m
	}
	return ms
}

// eligible is the set of members not skipped, taken with one call of skip per member.
// Up to 64 members it is a bit mask; beyond that it asks skip again when walking.
type eligible struct {
	mask  uint64
	count int
	n     int
	skip  func(int) bool // set only when n > 64
}

func scan(skip func(int) bool, n int) eligible {
	e := eligible{n: n}
	if n > 64 {
		e.skip = skip
		for i := 0; i < n; i++ {
			if skip == nil || !skip(i) {
				e.count++
			}
		}
		return e
	}
	for i := 0; i < n; i++ {
		if skip == nil || !skip(i) {
			e.mask |= 1 << uint(i)
		}
	}
	e.count = bits.OnesCount64(e.mask)
	return e
}

func (e *eligible) has(i int) bool {
	if e.n > 64 {
		return e.skip == nil || !e.skip(i)
	}
	return e.mask&(1<<uint(i)) != 0
}

// nth returns the index of the k-th (0-based) eligible member, k < count; -1 if the set
// changed under a large group's skip function and there is no k-th any more.
func (e *eligible) nth(k int) int {
	if e.n > 64 {
		for i := 0; i < e.n; i++ {
			if e.has(i) {
				if k == 0 {
					return i
				}
				k--
			}
		}
		return -1
	}
	m := e.mask
	for ; k > 0; k-- {
		m &= m - 1
	}
	if m == 0 {
		return -1
	}
	return bits.TrailingZeros64(m)
}

// RoundRobin cycles through the members not skipped, each in turn: with one member
// skipped, the others still share evenly (the skipped one's turns are not all handed to
// its neighbour).
type RoundRobin struct {
	n    int
	next atomic.Uint64
}

// Pick implements Picker.
func (p *RoundRobin) Pick(skip func(i int) bool) int {
	e := scan(skip, p.n)
	if e.count == 0 {
		return -1
	}
	c := p.next.Add(1) - 1
	return e.nth(int(c % uint64(e.count)))
}

// PickWithout implements Rotator: it chooses as Pick would for the next request, but
// leaves the rotation where it is.
func (p *RoundRobin) PickWithout(skip func(i int) bool) int {
	e := scan(skip, p.n)
	if e.count == 0 {
		return -1
	}
	return e.nth(int(p.next.Load() % uint64(e.count)))
}

// Rotator is implemented by pickers that keep a rotation (RoundRobin). PickWithout chooses a
// member without moving the rotation on: a retry of one request must not take the turn of
// the next request, or with one failing member every first attempt would land on it.
type Rotator interface {
	PickWithout(skip func(i int) bool) int
}

var _ Rotator = (*RoundRobin)(nil)

// WeightedRoundRobin is smooth weighted round robin as nginx does it: each pick, every
// member not skipped adds its weight to its current score, the highest score wins (the
// first on ties) and gives back the total. Weights 1:2:3 over 12 picks give exactly 2, 4
// and 6, interleaved (c b a c b c). Skipped members take no part in that pick. A short
// mutex guards the scores.
type WeightedRoundRobin struct {
	mu      sync.Mutex
	weight  []int
	current []int
}

// Pick implements Picker.
func (p *WeightedRoundRobin) Pick(skip func(i int) bool) int {
	e := scan(skip, len(p.weight)) // outside the lock: skip may take its own locks
	if e.count == 0 {
		return -1
	}
	p.mu.Lock()
	best, total := -1, 0
	for i, w := range p.weight {
		if !e.has(i) {
			continue
		}
		p.current[i] += w
		total += w
		if best < 0 || p.current[i] > p.current[best] {
			best = i
		}
	}
	if best >= 0 {
		p.current[best] -= total
	}
	p.mu.Unlock()
	return best
}

// Random picks uniformly among the members not skipped.
type Random struct{ n int }

// Pick implements Picker.
func (p *Random) Pick(skip func(i int) bool) int {
	e := scan(skip, p.n)
	if e.count == 0 {
		return -1
	}
	return e.nth(rand.IntN(e.count))
}

// Failover picks the first member not skipped, in declaration order: traffic goes back to
// an earlier member as soon as it is usable again.
type Failover struct{ n int }

// Pick implements Picker.
func (p *Failover) Pick(skip func(i int) bool) int {
	for i := 0; i < p.n; i++ {
		if skip == nil || !skip(i) {
			return i
		}
	}
	return -1
}

// LeastBusy uses the power of two choices: it draws two distinct members at random among
// those not skipped and picks the one with fewer requests in flight (with two members it
// always compares both).
type LeastBusy struct{ members []Member }

// Pick implements Picker.
func (p *LeastBusy) Pick(skip func(i int) bool) int {
	e := scan(skip, len(p.members))
	switch e.count {
	case 0:
		return -1
	case 1:
		return e.nth(0)
	}
	a := rand.IntN(e.count)
	b := rand.IntN(e.count - 1)
	if b >= a {
		b++
	}
	i, j := e.nth(a), e.nth(b)
	if i < 0 || j < 0 {
		return max(i, j)
	}
	if p.members[j].Stats.InFlight() < p.members[i].Stats.InFlight() {
		return j
	}
	return i
}

// probeEvery is how often ResponseAware ignores scores and goes round robin, so that a
// member that was slow once is measured again and can win back its traffic.
const probeEvery = 16

// ResponseAware picks the member with the lowest score, latency × (in flight + 1) /
// success rate, using the members' EWMA latency and success rate. A member without a
// latency sample is scored with the lowest latency seen among the others (1ns when none
// has one), so new upstreams get traffic at once. Equal scores are shared round robin.
// One pick in 16 is round robin regardless of scores, to keep measuring the others.
type ResponseAware struct {
	members []Member
	next    atomic.Uint64
}

// Pick implements Picker.
func (p *ResponseAware) Pick(skip func(i int) bool) int {
	n := len(p.members)
	e := scan(skip, n)
	if e.count == 0 {
		return -1
	}
	c := p.next.Add(1) - 1
	if c%probeEvery == probeEvery-1 {
		return e.nth(int((c / probeEvery) % uint64(e.count)))
	}
	known := math.Inf(1)
	for i := 0; i < n; i++ {
		if e.has(i) {
			if l := p.members[i].Stats.latencyNS(); l > 0 && l < known {
				known = l
			}
		}
	}
	if math.IsInf(known, 1) {
		known = 1
	}
	best, bestScore := -1, math.Inf(1)
	start := int(c % uint64(n))
	for k := 0; k < n; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		if !e.has(i) {
			continue
		}
		s := p.members[i].Stats
		l := s.latencyNS()
		if l == 0 {
			l = known
		}
		score := l * float64(s.InFlight()+1) / max(s.SuccessRate(), minSuccessRate)
		if score < bestScore {
			best, bestScore = i, score
		}
	}
	return best
}
