package mockllm

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxRecords is how many requests a Server remembers when Options.MaxRecords is 0.
const DefaultMaxRecords = 10000

// Record is one API request as the Server received it and, once it ended, how it ended.
type Record struct {
	Seq      uint64      `json:"seq"` // 1, 2, …; never reused, not reset by DELETE /_mock/requests
	Time     time.Time   `json:"time"`
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	RawQuery string      `json:"raw_query"`
	Header   http.Header `json:"headers"`
	Body     string      `json:"body"`
	// Upstream is the Server's name (Options.Name).
	Upstream string `json:"upstream"`
	// Status is the status sent (0 while in flight or when the headers never went out).
	Status int `json:"status"`
	// Done is set when the handler has returned.
	Done bool `json:"done"`
	// Cancelled means the client went away (its request context ended) before the answer was
	// complete.
	Cancelled bool `json:"cancelled"`
	// Aborted means the Server broke the connection on purpose (X-Mock-Break-After).
	Aborted bool `json:"aborted"`
	// Duration is the handler's run time in nanoseconds, once Done.
	Duration time.Duration `json:"duration_ns"`
}

// ring keeps the last len(buf) records.
type ring struct {
	mu   sync.Mutex
	buf  []*Record
	last uint64 // Seq of the newest record
	low  uint64 // records with Seq <= low were cleared
}

func (r *ring) add(rec *Record) {
	r.mu.Lock()
	r.last++
	rec.Seq = r.last
	r.buf[r.last%uint64(len(r.buf))] = rec
	r.mu.Unlock()
}

// finish updates a record under the ring's lock, so readers see consistent copies.
func (r *ring) finish(rec *Record, f func(*Record)) {
	r.mu.Lock()
	f(rec)
	r.mu.Unlock()
}

// since copies the records with Seq > after, oldest first.
func (r *ring) since(after uint64) []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := after + 1
	if n := uint64(len(r.buf)); r.last >= n && first <= r.last-n {
		first = r.last - n + 1
	}
	if first <= r.low {
		first = r.low + 1
	}
	out := make([]Record, 0, r.last+1-min(first, r.last+1))
	for s := first; s <= r.last; s++ {
		if rec := r.buf[s%uint64(len(r.buf))]; rec != nil && rec.Seq == s {
			out = append(out, *rec)
		}
	}
	return out
}

func (r *ring) clear() {
	r.mu.Lock()
	r.low = r.last
	clear(r.buf)
	r.mu.Unlock()
}

func (r *ring) lastSeq() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Stats are a Server's counters since it started or since ResetStats.
type Stats struct {
	Name        string `json:"name"`
	Requests    uint64 `json:"requests"`      // API requests received
	InFlight    int64  `json:"in_flight"`     // API requests being answered now
	MaxInFlight int64  `json:"max_in_flight"` // the most in flight at once
	Cancelled   uint64 `json:"cancelled"`     // requests the client abandoned
	Aborted     uint64 `json:"aborted"`       // connections broken on purpose
	Errors      uint64 `json:"errors"`        // answers with a status ≥ 300
	LastSeq     uint64 `json:"last_seq"`      // Seq of the newest record (for ?since=)
	Connections uint64 `json:"connections"`   // connections accepted since start (when ConnState is hooked)
}

type counters struct {
	connections atomic.Uint64
	requests    atomic.Uint64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	cancelled   atomic.Uint64
	aborted     atomic.Uint64
	errors      atomic.Uint64
}

// enter counts a request in flight and raises the high-water mark.
func (c *counters) enter() {
	c.requests.Add(1)
	n := c.inFlight.Add(1)
	for {
		m := c.maxInFlight.Load()
		if n <= m || c.maxInFlight.CompareAndSwap(m, n) {
			return
		}
	}
}

func (c *counters) leave() { c.inFlight.Add(-1) }

func (c *counters) reset() {
	c.requests.Store(0)
	c.cancelled.Store(0)
	c.aborted.Store(0)
	c.errors.Store(0)
	c.maxInFlight.Store(c.inFlight.Load())
}
