package store

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// hub fans revision numbers out to watchers. It remembers the newest
// revision it has reported and ignores anything not newer, so every watcher
// sees strictly increasing values. All methods are safe for concurrent use.
type hub struct {
	mu       sync.Mutex
	last     uint64
	watchers map[chan uint64]struct{}
	closed   bool
	done     chan struct{} // closed by closeAll

	// kick asks the poll loop to read the head revision now (buffer 1, so
	// bursts of hints coalesce).
	kick chan struct{}
}

// changes is the part of a store that reports new revisions: a hub and the
// background loops that feed it. Stores embed it for Watch.
type changes struct {
	hub    *hub
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// start creates the hub at revision rev and starts the poll loop over head.
// It returns the context other background loops of the store run under;
// stop cancels it.
func (c *changes) start(rev uint64, interval time.Duration, head func(context.Context) (uint64, error), logger *slog.Logger) context.Context {
	c.hub = newHub(rev)
	bg, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Go(func() { c.hub.poll(bg, interval, head, logger) })
	return bg
}

// Watch implements [Store.Watch].
func (c *changes) Watch(ctx context.Context) <-chan uint64 {
	return c.hub.watch(ctx)
}

// stop ends the background loops, waits for them and closes every watcher.
func (c *changes) stop() {
	c.cancel()
	c.wg.Wait()
	c.hub.closeAll()
}

func newHub(initial uint64) *hub {
	return &hub{
		last:     initial,
		watchers: make(map[chan uint64]struct{}),
		done:     make(chan struct{}),
		kick:     make(chan struct{}, 1),
	}
}

// watch registers a watcher whose channel is closed when ctx is done or the
// hub is closed.
func (h *hub) watch(ctx context.Context) <-chan uint64 {
	ch := make(chan uint64, 1)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		close(ch)
		return ch
	}
	h.watchers[ch] = struct{}{}
	h.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-h.done:
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.watchers[ch]; ok {
			delete(h.watchers, ch)
			close(ch)
		}
	}()
	return ch
}

// publish reports rev to every watcher if it is newer than the last reported
// revision. A watcher whose buffer is full gets its pending value replaced
// (latest wins). It never blocks: only publish sends, under h.mu, so after
// draining there is room.
func (h *hub) publish(rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || rev <= h.last {
		return
	}
	h.last = rev
	for ch := range h.watchers {
		select {
		case <-ch:
		default:
		}
		select {
		case ch <- rev:
		default:
		}
	}
}

// hint asks the poll loop to check the head revision soon.
func (h *hub) hint() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *hub) hasWatchers() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers) > 0
}

// closeAll closes every watcher channel; later watch calls get a closed
// channel.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.done)
	for ch := range h.watchers {
		delete(h.watchers, ch)
		close(ch)
	}
}

// poll reads the head revision every interval (while anyone watches) and
// whenever hinted, and publishes it. It returns when ctx is done. A negative
// interval disables the timer; hints still work. Failures are logged once
// when they start and once when they stop, not at every tick.
func (h *hub) poll(ctx context.Context, interval time.Duration, head func(context.Context) (uint64, error), logger *slog.Logger) {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-h.kick:
		}
		if !h.hasWatchers() {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rev, err := head(qctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				logger.Warn("store: poll head revision failed", "error", err)
				failing = true
			}
			continue
		}
		if failing {
			logger.Info("store: poll head revision recovered", "revision", rev)
			failing = false
		}
		h.publish(rev)
	}
}
