package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// shardCount splits the buckets so that concurrent requests for different keys rarely share a
// lock. A power of two.
const shardCount = 64

// Local is an in-process token-bucket limiter with one bucket per key. A bucket that has
// refilled to full is the same as no bucket, so a janitor drops those, and memory stays
// proportional to the keys seen within one refill period (burst/perSecond seconds), however many
// keys come and go. Create it with NewLocal; it is safe for concurrent use. Call Close to stop
// the janitor.
type Local struct {
	rate  float64 // tokens per second; ≤ 0 means no limit
	burst float64
	fill  time.Duration // time for an empty bucket to refill
	now   func() time.Time
	epoch time.Time
	seed  maphash.Seed

	shards [shardCount]shard

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

type shard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	peak    int      // most buckets held since the map was last rebuilt
	_       [32]byte // keep shards on separate cache lines
}

// shrinkMin is the size under which a shard's map is never rebuilt: Go maps do not give memory
// back when entries are deleted, so Sweep rebuilds a map that fell below a quarter of its peak.
const shrinkMin = 1024

// bucket is a token bucket as of its last update.
type bucket struct {
	tokens float64
	last   int64 // nanoseconds since Local.epoch
}

// LocalOption adjusts a Local at construction.
type LocalOption func(*localConfig)

type localConfig struct {
	now   func() time.Time
	sweep time.Duration
}

// WithClock makes the limiter read time from now (tests); nil means time.Now. The clock must
// not go backwards by much: a bucket whose clock runs backwards gets no refill until it catches up.
func WithClock(now func() time.Time) LocalOption {
	return func(c *localConfig) { c.now = now }
}

// WithSweepInterval sets how often the janitor drops full buckets; 0 runs no janitor (call
// Sweep yourself). The default is the refill period, clamped to [1s, 1m].
func WithSweepInterval(d time.Duration) LocalOption {
	return func(c *localConfig) { c.sweep = d }
}

// NewLocal returns a limiter that lets each key make perSecond requests a second on average and
// up to burst at once. burst below 1 counts as 1; perSecond ≤ 0 means no limit at all.
func NewLocal(perSecond float64, burst int, opts ...LocalOption) *Local {
	if burst < 1 {
		burst = 1
	}
	l := &Local{rate: perSecond, burst: float64(burst), seed: maphash.MakeSeed()}
	if perSecond > 0 {
		l.fill = durationFromSeconds(float64(burst) / perSecond)
	}
	cfg := localConfig{now: time.Now, sweep: min(max(l.fill, time.Second), time.Minute)}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	l.now = cfg.now
	l.epoch = l.now()
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	if cfg.sweep > 0 && l.rate > 0 {
		l.stop = make(chan struct{})
		l.done = make(chan struct{})
		go l.janitor(cfg.sweep)
	}
	return l
}

// Allow takes a token from key's bucket if it has one. It does not allocate for a key it
// already holds a bucket for.
func (l *Local) Allow(_ context.Context, key string) (bool, time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	now := int64(l.now().Sub(l.epoch))
	sh := &l.shards[maphash.String(l.seed, key)&(shardCount-1)]
	sh.mu.Lock()
	b := sh.buckets[key]
	if b == nil {
		// A new key starts with a full bucket, less the token it takes now.
		sh.buckets[key] = &bucket{tokens: l.burst - 1, last: now}
		sh.peak = max(sh.peak, len(sh.buckets))
		sh.mu.Unlock()
		return true, 0
	}
	tokens := l.refill(b, now)
	if tokens >= 1 {
		b.tokens = tokens - 1
		sh.mu.Unlock()
		return true, 0
	}
	b.tokens = tokens
	sh.mu.Unlock()
	return false, durationFromSeconds((1 - tokens) / l.rate)
}

// refill brings b up to now and returns its tokens; b.last is updated, b.tokens is not.
func (l *Local) refill(b *bucket, now int64) float64 {
	elapsed := now - b.last
	if elapsed <= 0 {
		return b.tokens
	}
	b.last = now
	return min(l.burst, b.tokens+float64(elapsed)*l.rate/float64(time.Second))
}

// Sweep drops the buckets that have refilled to full, which behave exactly like absent ones.
// The janitor calls it; tests with WithSweepInterval(0) call it directly.
func (l *Local) Sweep() {
	now := int64(l.now().Sub(l.epoch))
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, b := range sh.buckets {
			if b.tokens+float64(now-b.last)*l.rate/float64(time.Second) >= l.burst {
				delete(sh.buckets, k)
			}
		}
		if sh.peak >= shrinkMin && len(sh.buckets) < sh.peak/4 {
			m := make(map[string]*bucket, len(sh.buckets))
			for k, b := range sh.buckets {
				m[k] = b
			}
			sh.buckets, sh.peak = m, len(m)
		}
		sh.mu.Unlock()
	}
}

// Len returns the number of buckets held (keys not known to be full).
func (l *Local) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

func (l *Local) janitor(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Sweep()
		}
	}
}

// Close stops the janitor and waits for it to exit. Allow keeps working afterwards (without
// eviction). Close may be called more than once.
func (l *Local) Close() {
	if l.stop == nil {
		return
	}
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
}
