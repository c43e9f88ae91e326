package cache

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// maxGauge records the largest value it was ever set to.
type maxGauge struct {
	mu       sync.Mutex
	cur, max float64
}

func (g *maxGauge) Set(v float64) {
	g.mu.Lock()
	g.cur = v
	g.max = max(g.max, v)
	g.mu.Unlock()
}

type countingCounter struct{ n atomic.Int64 }

func (c *countingCounter) Inc() { c.n.Add(1) }

func entryOfSize(size int, ttl time.Duration) *Entry {
	e := &Entry{Status: 200, TTL: ttl, StoredAt: time.Now()}
	e.Body = make([]byte, max(size-e.Size(), 0))
	return e
}

// A long random workload (concurrent stores of random sizes and TTLs, lookups, a purge and
// a budget change midway) never takes the memory backend above its budget, at any instant:
// every value the bytes-in-use gauge ever took is recorded. Chosen instead of a 60-second
// wall-clock run: 4 writers × 12,000 lookups or stores (60% stores) with sizes up to the object cap are
// about 90 times the budget in churn, several seconds under -race, and the same instants a longer
// run would show (a store either fits or evicts first).
func TestMemoryNeverAboveBudget(t *testing.T) {
	const budget = 1 << 20
	const maxObject = 64 << 10
	gauge := &maxGauge{}
	evictions := &countingCounter{}
	m, err := NewMemory(MemoryOptions{MaxBytes: budget, Bytes: gauge, Evictions: evictions})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	ctx := context.Background()
	var wg sync.WaitGroup
	var over atomic.Int64
	stop := make(chan struct{})
	go func() { // an observer sampling Used as fast as it can
		for {
			select {
			case <-stop:
				return
			default:
			}
			if u := m.Used(); u > budget {
				over.Store(u)
			}
			runtime.Gosched()
		}
	}()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := range 12000 {
				var k Key
				k[0], k[1] = byte(rng.IntN(256)), byte(rng.IntN(8))
				switch op := rng.IntN(10); {
				case op < 6:
					ttl := time.Hour
					if rng.IntN(4) == 0 {
						ttl = time.Duration(1+rng.IntN(5)) * time.Millisecond
					}
					m.Set(ctx, k, entryOfSize(300+rng.IntN(maxObject), ttl))
				default:
					m.Get(ctx, k)
				}
				if w == 0 && i == 6000 {
					m.Clear()
				}
				if w == 1 && i == 8000 {
					m.SetMaxBytes(budget / 2)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if o := over.Load(); o != 0 {
		t.Errorf("observer saw %d bytes in use; budget %d", o, budget)
	}
	if gauge.max > budget {
		t.Errorf("bytes in use reached %.0f; budget %d", gauge.max, budget)
	}
	if m.Used() > budget/2 {
		t.Errorf("after lowering the budget to %d: %d bytes in use", budget/2, m.Used())
	}
	if evictions.n.Load() == 0 {
		t.Error("no eviction counted under a workload 90 times the budget")
	}
	// The count is exact: every byte counted in is counted out.
	m.Clear()
	if m.Used() != 0 || gauge.cur != 0 {
		t.Errorf("after Clear: Used %d, gauge %.0f; want 0", m.Used(), gauge.cur)
	}
}

func TestMemoryTTLAndLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	m, err := NewMemory(MemoryOptions{MaxBytes: 10000, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	e := &Entry{Status: 200, Body: []byte("x"), StoredAt: now, TTL: time.Minute}
	m.Set(ctx, Key{1}, e)
	if got, _ := m.Get(ctx, Key{1}); got != e {
		t.Fatalf("Get after Set = %v; want the entry", got)
	}
	now = now.Add(time.Minute)
	if got, _ := m.Get(ctx, Key{1}); got != nil {
		t.Error("an entry past its TTL is still returned")
	}
	if got, _ := m.Get(ctx, Key{2}); got != nil {
		t.Error("Get of an absent key returned an entry")
	}
	big := entryOfSize(20000, time.Hour)
	m.Set(ctx, Key{3}, big)
	if got, _ := m.Get(ctx, Key{3}); got != nil || m.Used() > 10000 {
		t.Errorf("an entry above the budget was stored (used %d)", m.Used())
	}
	if _, err := NewMemory(MemoryOptions{}); err == nil {
		t.Error("NewMemory without a budget: want an error")
	}
}

func TestMemoryGetAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	m, err := NewMemory(MemoryOptions{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	m.Set(ctx, Key{1}, entryOfSize(1000, time.Hour))
	if n := testing.AllocsPerRun(100, func() { m.Get(ctx, Key{1}) }); n != 0 {
		t.Errorf("Get allocates %v times per call; want 0", n)
	}
}
