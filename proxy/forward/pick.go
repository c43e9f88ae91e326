package forward

import (
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// Picking: the group's balancer chooses among the members whose breaker is ready, a retry
// preferring one not tried yet; the chosen member's breaker must then grant a slot
// (Allow), which a half-open breaker grants to a limited number of probes.

// memberSet is a set of member indexes.
type memberSet struct {
	small uint64
	big   map[int]bool
}

func (s *memberSet) add(i int) {
	if i < 64 {
		s.small |= 1 << uint(i)
		return
	}
	if s.big == nil {
		s.big = map[int]bool{}
	}
	s.big[i] = true
}

func (s *memberSet) has(i int) bool {
	if i < 64 {
		return s.small&(1<<uint(i)) != 0
	}
	return s.big[i]
}

func (s *memberSet) empty() bool { return s.small == 0 && s.big == nil }

// pick chooses a member that is ready and not rejected, preferring, in this order: one
// neither tried yet nor throttled (it answered 429 with a Retry-After that has not passed,
// balancer.Stats.Throttle), one not throttled, one not tried; -1 when none is ready. A
// throttled member is chosen only when every ready member is: its own 429 then reaches the
// client, rather than an error the proxy would make up.
// A retry leaves a rotating picker's rotation alone (balancer.Rotator), so it does not take
// the next request's turn.
func pick(g *config.Group, tried, rejected *memberSet) int {
	retry := !tried.empty()
	choose := g.Picker.Pick
	if r, ok := g.Picker.(balancer.Rotator); ok && retry {
		choose = r.PickWithout
	}
	c := &candidates{g: g, tried: tried, rejected: rejected, avoidTried: true, avoidThrottled: true}
	skip := c.skip // one func value for every pass
	if i := choose(skip); i >= 0 {
		return i
	}
	if retry {
		c.avoidTried = false
		if i := choose(skip); i >= 0 {
			return i
		}
	}
	if c.now == 0 {
		return -1 // nobody is throttled: nothing more to try
	}
	c.avoidTried, c.avoidThrottled = true, false
	if i := choose(skip); i >= 0 || !retry {
		return i
	}
	c.avoidTried = false
	return choose(skip)
}

// candidates says which members one pass of pick leaves out: always those rejected or
// whose breaker is not ready; those tried and those throttled as the pass asks.
type candidates struct {
	g                          *config.Group
	tried, rejected            *memberSet
	avoidTried, avoidThrottled bool
	now                        int64 // read once, and only when a member is throttled
}

func (c *candidates) skip(i int) bool {
	if c.rejected.has(i) || !c.g.Members[i].Breaker.Ready() || (c.avoidTried && c.tried.has(i)) {
		return true
	}
	if !c.avoidThrottled {
		return false
	}
	st := c.g.Members[i].Stats
	if !st.Throttling() {
		return false
	}
	if c.now == 0 {
		c.now = time.Now().UnixNano()
	}
	return st.Throttled(c.now)
}

// reserve takes a breaker slot on the member chosen for the next attempt (preferred, or
// a fresh pick when preferred is -1), skipping members whose breaker refuses. done must
// be called exactly once with the attempt's outcome (attempt.settle does).
func reserve(g *config.Group, preferred int, tried *memberSet) (i int, done func(bool), ok bool) {
	var rejected memberSet
	i = preferred
	for range len(g.Members) + 1 {
		if i < 0 {
			i = pick(g, tried, &rejected)
			if i < 0 {
				return -1, nil, false
			}
		}
		m := g.Members[i]
		if done, ok := m.Breaker.Allow(); ok {
			return i, done, true
		}
		m.BreakerRejected.Inc()
		rejected.add(i)
		i = -1
	}
	return -1, nil, false
}
