package config

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// Holder publishes the current Runtime. The zero value is ready to use and holds nil.
// Load is one atomic load; Store and Subscribe may be called from any goroutine.
type Holder struct {
	p    atomic.Pointer[Runtime]
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// NewHolder returns a Holder holding rt (which may be nil).
func NewHolder(rt *Runtime) *Holder {
	h := &Holder{}
	if rt != nil {
		h.Store(rt)
	}
	return h
}

// Load returns the current runtime, or nil before the first Store.
func (h *Holder) Load() *Runtime { return h.p.Load() }

// Store makes rt the current runtime, returns the previous one, sets
// llmproxy_config_version when rt.Revision is numeric, and notifies subscribers.
func (h *Holder) Store(rt *Runtime) (old *Runtime) {
	old = h.p.Swap(rt)
	if rt != nil && rt.Metrics != nil {
		if v, err := strconv.ParseFloat(rt.Revision, 64); err == nil {
			rt.Metrics.ConfigVersion.Set(v)
		}
	}
	h.mu.Lock()
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending; receivers Load the latest anyway
		}
	}
	h.mu.Unlock()
	return old
}

// Subscribe returns a channel that receives a value after each Store (bursts coalesce: a
// receiver should Load the latest runtime), and a cancel func that stops the notifications.
func (h *Holder) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[chan struct{}]struct{}{}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}
