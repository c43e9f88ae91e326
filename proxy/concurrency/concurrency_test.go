package concurrency

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/internal/wait"
)

func TestDropExcess(t *testing.T) {
	l := New(2, 2, true, 0)
	ctx := context.Background()
	hold := make(chan struct{})
	var ok, full atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := l.Acquire(ctx)
			if errors.Is(err, ErrQueueFull) {
				full.Add(1)
				return
			}
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			ok.Add(1)
			<-hold
			release()
		}()
	}
	// The six that found the queue full fail without waiting for anyone to release.
	wait.For(t, "6 dropped, 2 in flight, 2 waiting", func() bool {
		return full.Load() == 6 && l.InFlight() == 2 && l.Waiting() == 2
	})
	if got := ok.Load(); got != 2 {
		t.Fatalf("%d acquired while holding; want 2", got)
	}
	close(hold)
	wg.Wait()
	if ok.Load() != 4 || full.Load() != 6 {
		t.Errorf("%d succeeded, %d dropped; want 4 and 6", ok.Load(), full.Load())
	}
	if l.InFlight() != 0 || l.Waiting() != 0 {
		t.Errorf("after: in flight %d, waiting %d; want 0, 0", l.InFlight(), l.Waiting())
	}
}

func TestNoDropExcessAllWait(t *testing.T) {
	l := New(2, 2, false, 0)
	ctx := context.Background()
	var cur, peak atomic.Int32
	acquired := make(chan chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := l.Acquire(ctx)
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			n := cur.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			done := make(chan struct{})
			acquired <- done
			<-done
			cur.Add(-1)
			release()
		}()
	}
	// Let the holders go one at a time; every request gets its turn.
	for i := 0; i < 10; i++ {
		done := <-acquired
		if i == 0 {
			// Both slots are taken before the first is given back.
			wait.For(t, "two holders at once", func() bool { return cur.Load() == 2 })
		}
		if got := l.InFlight(); got > 2 {
			t.Errorf("InFlight %d; want ≤ 2", got)
		}
		close(done)
	}
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d; want 2", p)
	}
	if l.InFlight() != 0 || l.Waiting() != 0 {
		t.Errorf("after: in flight %d, waiting %d", l.InFlight(), l.Waiting())
	}
}

func TestFIFO(t *testing.T) {
	for _, drop := range []bool{false, true} {
		l := New(1, 100, drop, 0)
		ctx := context.Background()
		first, err := l.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		const n = 20
		order := make(chan int, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				release, err := l.Acquire(ctx)
				if err != nil {
					t.Errorf("Acquire %d: %v", i, err)
					return
				}
				order <- i
				release()
			}()
			wait.For(t, "waiter queued", func() bool { return l.Waiting() == i+1 })
		}
		first()
		wg.Wait()
		close(order)
		want := 0
		for got := range order {
			if got != want {
				t.Fatalf("drop=%v: waiter %d got the slot in turn %d", drop, got, want)
			}
			want++
		}
	}
}

func TestQueueTimeout(t *testing.T) {
	l := New(1, 1, true, 20*time.Millisecond)
	ctx := context.Background()
	release, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := l.Acquire(ctx); !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("Acquire: %v; want ErrQueueTimeout", err)
	}
	if took := time.Since(start); took < 20*time.Millisecond {
		t.Errorf("timed out after %v; want ≥ 20ms", took)
	}
	if l.Waiting() != 0 {
		t.Errorf("Waiting %d after timeout; want 0", l.Waiting())
	}
	release()
	if l.InFlight() != 0 {
		t.Errorf("InFlight %d; want 0", l.InFlight())
	}
}

func TestCancelLeavesNothingBehind(t *testing.T) {
	l := New(1, 1000, true, time.Minute)
	hold, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	const n = 500
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := l.Acquire(ctx)
			errs <- err
		}()
	}
	wait.For(t, "all queued", func() bool { return l.Waiting() == n })
	cancel()
	for i := 0; i < n; i++ {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire: %v; want context.Canceled", err)
		}
	}
	if l.Waiting() != 0 || l.head != nil || l.tail != nil {
		t.Fatalf("queue not empty after cancel: waiting %d", l.Waiting())
	}
	wait.For(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base })
	// The freed places are usable: the queue takes a new waiter, and the slot still works.
	got := make(chan error, 1)
	go func() {
		release, err := l.Acquire(context.Background())
		if err == nil {
			release()
		}
		got <- err
	}()
	wait.For(t, "new waiter queued", func() bool { return l.Waiting() == 1 })
	hold()
	if err := <-got; err != nil {
		t.Fatalf("Acquire after cancels: %v", err)
	}
	if l.InFlight() != 0 {
		t.Errorf("InFlight %d; want 0", l.InFlight())
	}
}

func TestCancelledWaiterInTheMiddle(t *testing.T) {
	l := New(1, 2, true, 0)
	bg := context.Background()
	hold, _ := l.Acquire(bg)
	ctx, cancel := context.WithCancel(bg)
	gone := make(chan error, 1)
	go func() { _, err := l.Acquire(ctx); gone <- err }()
	wait.For(t, "first waiter", func() bool { return l.Waiting() == 1 })
	stayed := make(chan error, 1)
	go func() {
		release, err := l.Acquire(bg)
		if err == nil {
			release()
		}
		stayed <- err
	}()
	wait.For(t, "second waiter", func() bool { return l.Waiting() == 2 })
	if _, err := l.Acquire(bg); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third waiter: %v; want ErrQueueFull", err)
	}
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	hold()
	if err := <-stayed; err != nil {
		t.Fatalf("waiter behind a cancelled one: %v", err)
	}
}

func TestDoubleReleaseIsNoOp(t *testing.T) {
	l := New(1, 0, true, 0)
	ctx := context.Background()
	release, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release()
	release()
	if got := l.InFlight(); got != 0 {
		t.Fatalf("InFlight %d after double release; want 0", got)
	}
	r1, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release() // stale: must not free r1's slot
	if _, err := l.Acquire(ctx); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("second holder admitted after a stale release: %v", err)
	}
	r1()
}

func TestNoLimit(t *testing.T) {
	l := New(0, 0, true, 0)
	var rs []func()
	for i := 0; i < 1000; i++ {
		r, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if l.InFlight() != 1000 {
		t.Errorf("InFlight %d; want 1000", l.InFlight())
	}
	for _, r := range rs {
		r()
	}
}

// TestStress mixes grants, timeouts and cancellations and checks the books balance.
func TestStress(t *testing.T) {
	for _, drop := range []bool{false, true} {
		l := New(3, 5, drop, 2*time.Millisecond)
		var cur atomic.Int32
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 300; i++ {
					ctx, cancel := context.WithCancel(context.Background())
					if rand.IntN(4) == 0 {
						cancel()
					}
					release, err := l.Acquire(ctx)
					if err == nil {
						if n := cur.Add(1); n > 3 {
							t.Errorf("%d in flight; want ≤ 3", n)
						}
						runtime.Gosched()
						cur.Add(-1)
						release()
						release()
					}
					cancel()
				}
			}()
		}
		wg.Wait()
		if l.InFlight() != 0 || l.Waiting() != 0 || l.head != nil {
			t.Errorf("drop=%v: in flight %d, waiting %d after the storm", drop, l.InFlight(), l.Waiting())
		}
	}
}

func BenchmarkAcquireUncontended(b *testing.B) {
	l := New(1000, 100, true, time.Second)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		release, err := l.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}

func BenchmarkAcquireParallel(b *testing.B) {
	l := New(4, 1<<20, false, 0)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			release, err := l.Acquire(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			release()
		}
	})
}
