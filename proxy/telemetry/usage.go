package telemetry

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// DefaultUsageNames is the number of distinct names a UsageTable of NewUsageTable(0) keeps.
const DefaultUsageNames = 256

// UsageOther is the name under which a full UsageTable counts names it has no room for.
const UsageOther = "(other)"

// usageIdleCollections is how many consecutive collections without traffic retire a name,
// making room for others.
const usageIdleCollections = 12

// UsageTable counts requests, errors and tokens per name (a requested model, a consumer):
// names whose cardinality the proxy does not control, so they are not Prometheus labels.
// It holds at most its limit of names; the traffic of further names is counted under
// UsageOther. Names without traffic for 12 collections are retired to make room; nothing
// recorded is lost when a name is retired.
//
// Record is safe for concurrent use and takes no lock for a name already in the table: an
// atomic pointer load, a map read and a few atomic adds. Collect must be called by one
// goroutine at a time (the reporter).
type UsageTable struct {
	limit int
	cur   atomic.Pointer[map[string]*usageCounter]
	other *usageCounter

	mu sync.Mutex // serializes changes of cur
}

// usageCounter is one name's counts. The atomics are the running totals; last and idle are
// the collector's own state.
type usageCounter struct {
	name                                 string
	requests, errors, prompt, completion atomic.Uint64
	// writers counts Records adding to the counter right now; retired is set once the
	// counter has left the table. A Record that finds it retired looks the name up again,
	// and the collector reads a retired counter only when no writer is left, so no count
	// is lost.
	writers atomic.Int32
	retired atomic.Bool

	last UsageCounts
	idle int
}

// UsageCounts are the counts of one name over some span.
type UsageCounts struct {
	Requests, Errors, PromptTokens, CompletionTokens uint64
}

// IsZero reports whether nothing was counted.
func (c UsageCounts) IsZero() bool { return c == UsageCounts{} }

// NewUsageTable returns an empty table holding at most limit names (0 selects
// DefaultUsageNames).
func NewUsageTable(limit int) *UsageTable {
	if limit <= 0 {
		limit = DefaultUsageNames
	}
	t := &UsageTable{limit: limit, other: &usageCounter{name: UsageOther}}
	m := map[string]*usageCounter{}
	t.cur.Store(&m)
	return t
}

// Record counts one request of name: failed says it was answered with a status of 500 or
// more; prompt and completion are its tokens (negative values count as 0).
func (t *UsageTable) Record(name string, failed bool, prompt, completion int64) {
	for {
		c := (*t.cur.Load())[name]
		if c == nil {
			c = t.add(name)
		}
		c.writers.Add(1)
		if c.retired.Load() {
			c.writers.Add(-1)
			continue // retired meanwhile: the table no longer holds it
		}
		c.requests.Add(1)
		if failed {
			c.errors.Add(1)
		}
		if prompt > 0 {
			c.prompt.Add(uint64(prompt))
		}
		if completion > 0 {
			c.completion.Add(uint64(completion))
		}
		c.writers.Add(-1)
		return
	}
}

// add returns name's counter, creating it (copy on write) when there is room, else the
// overflow counter.
func (t *UsageTable) add(name string) *usageCounter {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.cur.Load()
	if c := old[name]; c != nil {
		return c
	}
	if len(old) >= t.limit {
		return t.other
	}
	next := make(map[string]*usageCounter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	c := &usageCounter{name: name}
	next[name] = c
	t.cur.Store(&next)
	return c
}

// Collect calls fn with the counts of every name that had traffic since the previous
// Collect (names in no particular order; UsageOther last when it had traffic) and retires
// names idle for a while. Call it from one goroutine at a time.
func (t *UsageTable) Collect(fn func(name string, delta UsageCounts)) {
	var idle []string
	for name, c := range *t.cur.Load() {
		d := c.delta()
		if d.IsZero() {
			c.idle++
			if c.idle >= usageIdleCollections {
				idle = append(idle, name)
			}
			continue
		}
		c.idle = 0
		fn(name, d)
	}
	for _, c := range t.retire(idle) {
		// Wait for the Records that found c before it was retired; they are between two
		// atomic operations, so this ends at once.
		for c.writers.Load() != 0 {
			runtime.Gosched()
		}
		if d := c.delta(); !d.IsZero() {
			fn(c.name, d)
		}
	}
	if d := t.other.delta(); !d.IsZero() {
		fn(UsageOther, d)
	}
}

// retire drops names from the table and marks their counters retired.
func (t *UsageTable) retire(names []string) []*usageCounter {
	if len(names) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.cur.Load()
	next := make(map[string]*usageCounter, len(old))
	for k, v := range old {
		next[k] = v
	}
	out := make([]*usageCounter, 0, len(names))
	for _, n := range names {
		if c := next[n]; c != nil {
			delete(next, n)
			out = append(out, c)
		}
	}
	t.cur.Store(&next)
	for _, c := range out {
		c.retired.Store(true)
	}
	return out
}

// Len returns the number of names held (UsageOther not included).
func (t *UsageTable) Len() int { return len(*t.cur.Load()) }

// delta returns the counts since the previous delta. Collector only.
func (c *usageCounter) delta() UsageCounts {
	now := UsageCounts{
		Requests:         c.requests.Load(),
		Errors:           c.errors.Load(),
		PromptTokens:     c.prompt.Load(),
		CompletionTokens: c.completion.Load(),
	}
	d := UsageCounts{
		Requests:         now.Requests - c.last.Requests,
		Errors:           now.Errors - c.last.Errors,
		PromptTokens:     now.PromptTokens - c.last.PromptTokens,
		CompletionTokens: now.CompletionTokens - c.last.CompletionTokens,
	}
	c.last = now
	return d
}
