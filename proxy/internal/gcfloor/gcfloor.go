// Package gcfloor keeps the garbage collector's heap goal at or above a floor.
//
// Go's collector sets its next goal at twice the live heap (GOGC=100). A proxy's live heap is
// small (a few MiB) while it allocates quickly (a few KiB per request), so at thousands of
// requests a second it collects dozens of times a second, and the collector becomes one of
// the largest costs of a request. With a floor, the goal is never below it: a proxy whose
// live heap is 5 MiB and whose floor is 64 MiB collects about every 59 MiB allocated instead
// of every 5 MiB. Once the live heap passes half the floor, GOGC=100 applies as usual, so
// the floor bounds the extra memory (garbage held between collections) at the floor.
//
// The floor is applied by setting GOGC after every collection from the live heap it
// measured (runtime/metrics), the way Uber's and others' GC tuners do; memory limits
// (GOMEMLIMIT) still apply on top.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// basePercent is GOGC's default, the least the floor ever sets.
const basePercent = 100

// maxPercent bounds GOGC when the live heap is tiny (a proxy just started).
const maxPercent = 2000

// Percent returns the GOGC that puts the next heap goal at floor bytes, or basePercent when
// Go's default goal is there already. The goal is live + (live + roots) × GOGC/100, where
// roots are the goroutine stacks and globals the collector scans (Go 1.18 on).
func Percent(live, roots, floor uint64) int {
	work := live + roots
	if work == 0 {
		return maxPercent
	}
	if floor <= live+work {
		return basePercent
	}
	p := (floor - live) * 100 / work
	return int(min(p, maxPercent))
}

// Start applies the floor (bytes) after every collection until stop is called; stop restores
// GOGC=100. Only one floor should run in a process (it sets a process-wide setting). A
// memory limit (GOMEMLIMIT) caps the floor at half of it.
func Start(floor uint64) (stop func()) {
	if limit := debug.SetMemoryLimit(-1); limit > 0 && uint64(limit)/2 < floor {
		floor = uint64(limit) / 2
	}
	s := &tuner{floor: floor, last: -1}
	s.sample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	s.tune()
	s.arm()
	return func() {
		s.stopped.Store(true)
		debug.SetGCPercent(basePercent)
	}
}

type tuner struct {
	floor   uint64
	last    int
	sample  []metrics.Sample
	stopped atomic.Bool
}

// sentinel is garbage whose finalizer runs after each collection that finds it
// unreachable, that is after every cycle (it holds a pointer, so it is not tiny-allocated).
type sentinel struct{ t *tuner }

// arm leaves a new sentinel for the next collection.
func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{t: t}, func(s *sentinel) {
		if s.t.stopped.Load() {
			return
		}
		s.t.tune()
		s.t.arm()
	})
}

// tune sets GOGC from the live heap the last collection measured. It runs on the
// finalizer goroutine, one call at a time.
func (t *tuner) tune() {
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	if p := Percent(v[0], v[1]+v[2], t.floor); p != t.last {
		t.last = p
		debug.SetGCPercent(p)
	}
}
