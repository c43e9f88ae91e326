package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// Counter and Gauge are the metric shapes the cache reports to (prometheus.Counter and
// prometheus.Gauge satisfy them).
type (
	Counter interface{ Inc() }
	Gauge   interface{ Set(float64) }
)

type nopMetric struct{}

func (nopMetric) Inc()        {}
func (nopMetric) Set(float64) {}

// Memory is a backend in the proxy's own memory, bounded by a byte budget, built on otter
// (github.com/maypok86/otter/v2): its weight bound evicts by entry size with an admission
// policy (W-TinyLFU) that keeps frequently asked answers over a burst of one-off ones, each
// entry expires at its own TTL, reads take no lock, and a deletion callback runs inside the
// deletion, which keeps the byte count exact.
//
// The bound is strict: Set holds a lock, and before inserting an entry of size s into a
// cache holding more than max−s bytes it lowers the library's maximum to max−s, which evicts
// synchronously, then inserts, then restores the maximum; so Used never exceeds the bound,
// not even between the insert and the eviction. Stores are rare next to lookups (one per
// upstream answer), so the lock costs nothing that matters. Get takes no lock.
type Memory struct {
	c         *otter.Cache[Key, *Entry]
	mu        sync.Mutex // serialises Set and SetMaxBytes
	max       atomic.Uint64
	used      atomic.Int64
	evictions Counter
	bytes     Gauge
	now       func() time.Time
}

// MemoryOptions configure NewMemory. Nil metrics are not reported; nil Now means time.Now.
type MemoryOptions struct {
	MaxBytes  int64
	Evictions Counter // entries evicted to stay within MaxBytes
	Bytes     Gauge   // bytes in use
	Now       func() time.Time
}

// NewMemory returns an empty memory backend holding at most opts.MaxBytes bytes of entries
// (Entry.Size). Close it when it is no longer used (it stops the library's clean-up
// goroutine).
func NewMemory(opts MemoryOptions) (*Memory, error) {
	if opts.MaxBytes <= 0 {
		return nil, errors.New("new memory cache: max bytes must be positive")
	}
	m := &Memory{evictions: opts.Evictions, bytes: opts.Bytes, now: opts.Now}
	if m.evictions == nil {
		m.evictions = nopMetric{}
	}
	if m.bytes == nil {
		m.bytes = nopMetric{}
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.max.Store(uint64(opts.MaxBytes))
	c, err := otter.New(&otter.Options[Key, *Entry]{
		MaximumWeight: uint64(opts.MaxBytes),
		Weigher:       func(_ Key, e *Entry) uint32 { return uint32(e.Size()) },
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[Key, *Entry]) time.Duration {
			return e.Value.TTL
		}),
		OnAtomicDeletion: func(ev otter.DeletionEvent[Key, *Entry]) {
			m.bytes.Set(float64(m.used.Add(-int64(ev.Value.Size()))))
			if ev.Cause == otter.CauseOverflow {
				m.evictions.Inc()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	m.c = c
	return m, nil
}

// Get returns the live entry stored under k, or nil. It never fails and does not allocate.
func (m *Memory) Get(_ context.Context, k Key) (*Entry, error) {
	e, ok := m.c.GetIfPresent(k)
	if !ok || !e.Fresh(m.now()) {
		return nil, nil
	}
	return e, nil
}

// Set stores e under k, evicting others as needed. An entry larger than the whole budget
// is not stored.
func (m *Memory) Set(_ context.Context, k Key, e *Entry) error {
	s := uint64(e.Size())
	m.mu.Lock()
	defer m.mu.Unlock()
	limit := m.max.Load()
	if s > limit {
		return nil
	}
	if uint64(m.used.Load())+s > limit {
		m.c.SetMaximum(limit - s)
		defer m.c.SetMaximum(limit)
	}
	m.bytes.Set(float64(m.used.Add(int64(s))))
	m.c.Set(k, e)
	return nil
}

// SetMaxBytes changes the budget; a lower one evicts at once.
func (m *Memory) SetMaxBytes(n int64) {
	if n <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.max.Store(uint64(n))
	m.c.SetMaximum(uint64(n))
}

// MaxBytes is the current budget.
func (m *Memory) MaxBytes() int64 { return int64(m.max.Load()) }

// Used is the bytes held now (the sum of the stored entries' sizes).
func (m *Memory) Used() int64 { return m.used.Load() }

// Len is the number of entries held (an estimate while writes are in progress).
func (m *Memory) Len() int { return m.c.EstimatedSize() }

// Clear drops every entry (after a purge nothing can address them any more; this returns
// their memory at once instead of waiting for eviction).
func (m *Memory) Clear() { m.c.InvalidateAll() }

// Close drops every entry and stops the library's background clean-up.
func (m *Memory) Close() {
	m.c.InvalidateAll()
	m.c.StopAllGoroutines()
}
