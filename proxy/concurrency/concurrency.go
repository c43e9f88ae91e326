// Package concurrency bounds the requests in flight to an upstream group, with a FIFO queue of
// waiters in front of the bound (at most max in flight, up to queue waiting, drop_excess,
// queue_timeout).
package concurrency

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrQueueFull is returned at once when no slot is free and the queue is full (only with
	// dropExcess). Its text is the message the proxy answers with.
	ErrQueueFull = errors.New("request dropped: queue is full")
	// ErrQueueTimeout is returned when a request waited queueTimeout without getting a slot.
	ErrQueueTimeout = errors.New("request dropped: queue timeout")
)

// Limiter hands out at most max slots; requests that find none wait in FIFO order.
//
// What happens when no slot is free:
//   - dropExcess: the request waits if fewer than queue requests are waiting, otherwise it gets
//     ErrQueueFull at once (queue 0: every request that finds no free slot is dropped).
//   - not dropExcess: the request always waits — as a request that finds the queue full blocks
//     until there is room in it, and the line is FIFO either way, queue bounds nothing then:
//     waiting is bounded in time by queueTimeout and by the caller's context, not in length.
//
// A waiter gets a slot when one is released (slots are handed over directly, in arrival order),
// ErrQueueTimeout after queueTimeout (0: no timeout), or ctx.Err() when ctx ends. A waiter that
// leaves is unlinked at once: no goroutine, timer or memory stays behind. Waiting runs in the
// caller's goroutine; the Limiter starts none.
//
// A Limiter is safe for concurrent use. Create it with New.
type Limiter struct {
	max          int
	queue        int
	dropExcess   bool
	queueTimeout time.Duration

	mu       sync.Mutex
	inFlight int
	head     *waiter // oldest waiter
	tail     *waiter
	waiting  int

	// Copies of inFlight and waiting for lock-free reads by metrics.
	inFlightGauge atomic.Int64
	waitingGauge  atomic.Int64
}

// waiter is one request in the queue. Its fields are guarded by Limiter.mu.
type waiter struct {
	next, prev *waiter
	ready      chan struct{} // closed when a slot is handed to this waiter
	granted    bool
}

// New returns a Limiter with max slots (max ≤ 0: no limit, Acquire never waits), queue waiting
// places (negative counts as 0), the drop policy and the longest wait (≤ 0: no limit).
func New(max, queue int, dropExcess bool, queueTimeout time.Duration) *Limiter {
	l := &Limiter{max: max, queue: queue, dropExcess: dropExcess, queueTimeout: queueTimeout}
	if l.max <= 0 {
		l.max = math.MaxInt
	}
	if l.queue < 0 {
		l.queue = 0
	}
	if l.queueTimeout < 0 {
		l.queueTimeout = 0
	}
	return l
}

// Acquire takes a slot, waiting for one as described on Limiter. On success release must be
// called once the request is over; calling it again is a no-op, so a deferred release next to an
// early one is safe. On error there is nothing to release.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	l.mu.Lock()
	if l.inFlight < l.max && l.head == nil {
		l.inFlight++
		l.inFlightGauge.Store(int64(l.inFlight))
		l.mu.Unlock()
		return l.releaser(), nil
	}
	if l.dropExcess && l.waiting >= l.queue {
		l.mu.Unlock()
		return nil, ErrQueueFull
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	w := &waiter{ready: make(chan struct{})}
	l.push(w)
	l.mu.Unlock()

	var timeout <-chan time.Time
	if l.queueTimeout > 0 {
		t := time.NewTimer(l.queueTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-w.ready:
		return l.releaser(), nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = ErrQueueTimeout
	}
	l.mu.Lock()
	if w.granted {
		// A slot arrived as we gave up. A client that left hands it on; a timeout that lost the
		// race takes it.
		l.mu.Unlock()
		if err == ErrQueueTimeout {
			return l.releaser(), nil
		}
		l.releaseSlot()
		return nil, err
	}
	l.unlink(w)
	l.mu.Unlock()
	return nil, err
}

// releaser returns the idempotent release function of one slot.
func (l *Limiter) releaser() func() {
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			l.releaseSlot()
		}
	}
}

// releaseSlot gives a slot to the oldest waiter, or frees it.
func (l *Limiter) releaseSlot() {
	l.mu.Lock()
	if w := l.head; w != nil {
		l.unlink(w)
		w.granted = true
		close(w.ready)
	} else {
		l.inFlight--
		l.inFlightGauge.Store(int64(l.inFlight))
	}
	l.mu.Unlock()
}

func (l *Limiter) push(w *waiter) {
	w.prev = l.tail
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	l.waiting++
	l.waitingGauge.Store(int64(l.waiting))
}

func (l *Limiter) unlink(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.next, w.prev = nil, nil
	l.waiting--
	l.waitingGauge.Store(int64(l.waiting))
}

// InFlight returns the number of slots held now.
func (l *Limiter) InFlight() int { return int(l.inFlightGauge.Load()) }

// Waiting returns the number of requests waiting for a slot now (the queue depth).
func (l *Limiter) Waiting() int { return int(l.waitingGauge.Load()) }
