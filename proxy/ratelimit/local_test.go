package ratelimit

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func newTestLocal(rate float64, burst int) (*Local, *fakeClock) {
	c := newFakeClock()
	return NewLocal(rate, burst, WithClock(c.Now), WithSweepInterval(0)), c
}

func TestLocalBurstThenRate(t *testing.T) {
	l, clock := newTestLocal(5, 2)
	defer l.Close()
	ctx := context.Background()

	// Ten at once: exactly the burst gets through.
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := l.Allow(ctx, "10.0.0.1"); ok {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 2 {
		t.Fatalf("burst of 10: %d allowed; want 2", got)
	}
	ok, retry := l.Allow(ctx, "10.0.0.1")
	if ok || retry != 200*time.Millisecond {
		t.Fatalf("empty bucket: ok=%v retryAfter=%v; want false 200ms", ok, retry)
	}

	// Then five a second: one request every 10ms for 3 seconds gets 15 through.
	n := 0
	for i := 0; i < 300; i++ {
		clock.Advance(10 * time.Millisecond)
		if ok, _ := l.Allow(ctx, "10.0.0.1"); ok {
			n++
		}
	}
	if n != 15 {
		t.Errorf("3s at 100 req/s: %d allowed; want 15", n)
	}
	// Other keys are independent.
	if ok, _ := l.Allow(ctx, "10.0.0.2"); !ok {
		t.Error("another key was refused")
	}
}

func TestLocalRetryAfter(t *testing.T) {
	tests := []struct {
		rate  float64
		burst int
		after time.Duration // time since the bucket emptied
		want  time.Duration
	}{
		{rate: 5, burst: 1, after: 0, want: 200 * time.Millisecond},
		{rate: 5, burst: 1, after: 150 * time.Millisecond, want: 50 * time.Millisecond},
		{rate: 0.5, burst: 3, after: 0, want: 2 * time.Second},
		{rate: 3, burst: 1, after: 0, want: 333333334 * time.Nanosecond}, // rounded up
	}
	for _, tt := range tests {
		l, clock := newTestLocal(tt.rate, tt.burst)
		for i := 0; i < tt.burst; i++ {
			if ok, _ := l.Allow(context.Background(), "k"); !ok {
				t.Fatalf("rate %v burst %d: request %d refused", tt.rate, tt.burst, i)
			}
		}
		clock.Advance(tt.after)
		ok, got := l.Allow(context.Background(), "k")
		if ok || got != tt.want {
			t.Errorf("rate %v burst %d after %v: ok=%v retryAfter=%v; want false %v", tt.rate, tt.burst, tt.after, ok, got, tt.want)
		}
		clock.Advance(got)
		if ok, _ := l.Allow(context.Background(), "k"); !ok {
			t.Errorf("rate %v burst %d: refused after waiting retryAfter", tt.rate, tt.burst)
		}
	}
}

func TestLocalNoLimit(t *testing.T) {
	l := NewLocal(0, 1)
	defer l.Close()
	for i := 0; i < 100; i++ {
		if ok, _ := l.Allow(context.Background(), "k"); !ok {
			t.Fatal("perSecond 0 refused a request")
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestLocalEvictsIdleBuckets fills 100k keys, lets them refill, and checks the buckets and
// their memory go away.
func TestLocalEvictsIdleBuckets(t *testing.T) {
	const keys = 100_000
	l, clock := newTestLocal(5, 2) // refills in 400ms
	defer l.Close()
	ctx := context.Background()
	base := heapInUse()
	for i := 0; i < keys; i++ {
		l.Allow(ctx, "192.168."+strconv.Itoa(i))
	}
	if got := l.Len(); got != keys {
		t.Fatalf("Len %d; want %d", got, keys)
	}
	peak := heapInUse()

	clock.Advance(100 * time.Millisecond) // 1.5 of 2 tokens: nothing may go
	l.Allow(ctx, "recent")
	l.Sweep()
	if got := l.Len(); got != keys+1 {
		t.Fatalf("after a partial refill Len %d; want %d", got, keys+1)
	}
	clock.Advance(100 * time.Millisecond) // the 100k have 2 tokens now, "recent" 1.5
	l.Sweep()
	if got := l.Len(); got != 1 {
		t.Fatalf("after a full refill Len %d; want 1", got)
	}
	after := heapInUse()
	if peak <= base || (after > base && after-base > (peak-base)/4) {
		t.Errorf("heap in use: %d KiB before, %d KiB with %d keys, %d KiB after eviction; want the keys' memory back",
			base>>10, peak>>10, keys, after>>10)
	}
	// An evicted key behaves like a new one: a full burst.
	for i := 0; i < 2; i++ {
		if ok, _ := l.Allow(ctx, "192.168.7"); !ok {
			t.Fatal("evicted key did not start with a full bucket")
		}
	}
}

func TestLocalJanitorAndClose(t *testing.T) {
	before := runtime.NumGoroutine()
	clock := newFakeClock()
	l := NewLocal(5, 2, WithClock(clock.Now), WithSweepInterval(time.Millisecond))
	l.Allow(context.Background(), "k")
	clock.Advance(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for l.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("janitor did not evict a full bucket")
		}
		time.Sleep(time.Millisecond)
	}
	l.Close()
	l.Close() // idempotent
	// Close waited for the janitor; other tests' goroutines may still be winding down.
	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %d after Close; want ≤ %d", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkLocalAllow(b *testing.B) {
	ctx := context.Background()
	b.Run("existing-key", func(b *testing.B) {
		l := NewLocal(1e9, 1000)
		defer l.Close()
		l.Allow(ctx, "203.0.113.7")
		b.ReportAllocs()
		for b.Loop() {
			l.Allow(ctx, "203.0.113.7")
		}
	})
	b.Run("parallel-1k-keys", func(b *testing.B) {
		l := NewLocal(1e9, 1000)
		defer l.Close()
		keys := make([]string, 1024)
		for i := range keys {
			keys[i] = "198.51.100." + strconv.Itoa(i)
			l.Allow(ctx, keys[i])
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				l.Allow(ctx, keys[i&1023])
				i++
			}
		})
	})
}
