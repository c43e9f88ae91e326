package cache

import (
	"context"
	"errors"
	"net/http"
	"sync"
)

// Flights coalesces identical cacheable requests on one proxy: the first request for a key
// (the leader) goes upstream, the others (followers) join its flight and get its answer.
// The zero value is not usable; create it with NewFlights. Safe for concurrent use.
type Flights struct {
	mu sync.Mutex
	m  map[Key]*Flight
}

// NewFlights returns an empty set of flights.
func NewFlights() *Flights { return &Flights{m: map[Key]*Flight{}} }

// Join returns the flight of k, and whether the caller leads it. A leader must end the
// flight: Hit, or Begin then Write… then Complete (then Close), or Fail. A follower must
// call Leave when it is done with the flight. limit is the most bytes of answer the flight
// records to be stored (max_object_bytes).
func (fs *Flights) Join(k Key, limit int) (f *Flight, leader bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.m[k]; f != nil {
		f.mu.Lock()
		f.followers++
		f.mu.Unlock()
		return f, false
	}
	f = &Flight{fs: fs, key: k, limit: limit}
	fs.m[k] = f
	return f, true
}

// FlightStats describe the joinable flights at one instant.
type FlightStats struct {
	// Flights is the number of joinable flights; Followers the followers in them;
	// LeadersGone the flights whose leader's client has left (their answer goes on for the
	// followers).
	Flights, Followers, LeadersGone int
}

// Stats describes the joinable flights now.
func (fs *Flights) Stats() FlightStats {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	st := FlightStats{Flights: len(fs.m)}
	for _, f := range fs.m {
		f.mu.Lock()
		st.Followers += f.followers
		if f.gone {
			st.LeadersGone++
		}
		f.mu.Unlock()
	}
	return st
}

func (fs *Flights) remove(f *Flight) {
	if fs == nil {
		return
	}
	fs.mu.Lock()
	if fs.m[f.key] == f {
		delete(fs.m, f.key)
	}
	fs.mu.Unlock()
}

// NewFlight returns a flight nobody can join: a request that goes upstream on its own
// (no-cache, or a released follower) records its answer through it to store it.
func NewFlight(limit int) *Flight { return &Flight{limit: limit} }

// flightState is where a flight is.
type flightState uint8

const (
	stateWaiting  flightState = iota // the leader has no answer yet
	stateHit                         // the leader found an entry
	stateAnswer                      // the leader is relaying an answer
	stateComplete                    // the answer is complete
	stateFailed                      // the leader failed before the answer: followers go alone
	stateBroken                      // the answer broke off after it began
)

// Outcome is what a follower's Wait found.
type Outcome uint8

// Outcomes of Wait.
const (
	// Released: the leader failed (or answered with something not worth sharing) before
	// its answer began; the follower goes upstream on its own.
	Released Outcome = iota
	// Shared: the follower got an entry (Flight.Entry): a hit the leader found.
	Shared
	// Streaming: the leader's answer has begun; the follower writes Flight.Head and then
	// the body it reads with Read.
	Streaming
)

// ErrBroken is what Read returns when the leader's answer broke off.
var ErrBroken = errors.New("shared answer broke off")

// Flight is one request in flight that identical requests share. Its answer (status, the
// stored headers and the body as it arrives) is kept while anyone needs it: the leader to
// store it, followers to replay it from the start (a follower that arrives mid-stream gets
// what was already sent, then the rest live).
type Flight struct {
	fs    *Flights
	key   Key
	limit int

	mu        sync.Mutex
	changed   chan struct{} // closed at every change; nil while nobody waits
	state     flightState
	entry     *Entry
	status    int
	header    http.Header
	length    int64
	buf       []byte
	overflow  bool // the answer exceeded limit: not storable, not joinable
	followers int
	gone      bool   // the leader's client left
	abandon   func() // called when the leader's client left and no follower remains

	prompt, completion int64 // the answer's usage, set at Complete
}

// notify wakes every waiter. Called with f.mu held.
func (f *Flight) notify() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// wait returns a channel closed at the next change. Called with f.mu held.
func (f *Flight) wait() <-chan struct{} {
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	return f.changed
}

// Hit ends the flight with an entry the leader found: followers are answered with it.
func (f *Flight) Hit(e *Entry) {
	f.fs.remove(f)
	f.mu.Lock()
	f.state, f.entry = stateHit, e
	f.notify()
	f.mu.Unlock()
}

// Begin starts the shared answer: status, the headers followers replay (StoredHeaders) and
// the Content-Length (-1 unknown). Only a 2xx answer should begin; the leader Fails for
// anything else, so followers ask upstream themselves.
func (f *Flight) Begin(status int, header http.Header, length int64) {
	f.mu.Lock()
	f.state, f.status, f.header, f.length = stateAnswer, status, header, length
	f.notify()
	f.mu.Unlock()
}

// Write appends p (copied) to the answer.
func (f *Flight) Write(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buf == nil && f.overflow {
		return // nobody needs the bytes any more
	}
	f.buf = append(f.buf, p...)
	if !f.overflow && len(f.buf) > f.limit {
		// Too large to store; keep it only for the followers already reading it.
		f.overflow = true
		f.fs.remove(f)
	}
	if f.overflow && f.followers == 0 {
		f.buf = nil
	}
	f.notify()
}

// Complete marks the answer complete, with the usage read from it, and returns its body
// and whether it is storable (within the limit). The flight stays joinable (late joiners
// get the whole answer at once) until Close; call Close once the answer is stored, or at
// once.
func (f *Flight) Complete(prompt, completion int64) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = stateComplete
	f.prompt, f.completion = prompt, completion
	f.notify()
	if f.overflow {
		return nil, false
	}
	return f.buf, true
}

// Close makes the flight unjoinable; followers already in it are unaffected.
func (f *Flight) Close() { f.fs.remove(f) }

// Fail ends the flight without an answer to share: followers that have not started are
// released (they go upstream themselves); those reading an answer that began get ErrBroken,
// as the leader's own client sees it break.
func (f *Flight) Fail() {
	f.fs.remove(f)
	f.mu.Lock()
	if f.state == stateAnswer {
		f.state = stateBroken
	} else if f.state == stateWaiting {
		f.state = stateFailed
	}
	f.buf = nil
	f.notify()
	f.mu.Unlock()
}

// LeaderGone records that the leader's client left. It reports whether followers still
// need the answer (the leader should then keep relaying into the flight); when none do,
// it returns false and the flight will not call abandon. abandon, when not nil, is called
// once later if the last follower leaves before the answer completes.
func (f *Flight) LeaderGone(abandon func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.followers == 0 {
		return false
	}
	f.gone, f.abandon = true, abandon
	return true
}

// Followers is the number of followers in the flight now.
func (f *Flight) Followers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.followers
}

// Leave detaches a follower.
func (f *Flight) Leave() {
	f.mu.Lock()
	f.followers--
	var abandon func()
	if f.followers == 0 {
		if f.overflow {
			f.buf = nil
		}
		if f.gone && (f.state == stateWaiting || f.state == stateAnswer) {
			abandon, f.abandon = f.abandon, nil
		}
	}
	f.mu.Unlock()
	if abandon != nil {
		abandon()
	}
}

// Wait blocks a follower until the leader has an outcome to share, or ctx ends (then it
// returns ctx's error).
func (f *Flight) Wait(ctx context.Context) (Outcome, error) {
	f.mu.Lock()
	for f.state == stateWaiting {
		ch := f.wait()
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Released, ctx.Err()
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	switch f.state {
	case stateHit:
		return Shared, nil
	case stateAnswer, stateComplete:
		return Streaming, nil
	case stateBroken:
		// Began and broke before this follower wrote anything: nothing is lost by going
		// upstream.
		return Released, nil
	}
	return Released, nil
}

// Usage is the usage of a complete answer (zero before Complete).
func (f *Flight) Usage() (prompt, completion int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prompt, f.completion
}

// Entry is the entry a Shared outcome shares.
func (f *Flight) Entry() *Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.entry
}

// Head is the answer's status, headers (shared: do not modify) and Content-Length (-1
// unknown), for a Streaming outcome.
func (f *Flight) Head() (int, http.Header, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.header, f.length
}

// Read returns the answer's bytes from offset off on, waiting for some when there are none
// yet. done reports the end of a complete answer (with the last bytes, or none). err is
// ErrBroken when the answer broke off, or ctx's error. The returned slice is shared and
// must not be modified.
func (f *Flight) Read(ctx context.Context, off int) (p []byte, done bool, err error) {
	f.mu.Lock()
	for {
		switch {
		case f.state == stateBroken:
			f.mu.Unlock()
			return nil, false, ErrBroken
		case off < len(f.buf):
			p = f.buf[off:len(f.buf):len(f.buf)]
			done = f.state == stateComplete
			f.mu.Unlock()
			return p, done, nil
		case f.state == stateComplete:
			f.mu.Unlock()
			return nil, true, nil
		}
		ch := f.wait()
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		f.mu.Lock()
	}
}
