package forward

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// copyBufSize is the relay buffer size.
const copyBufSize = 32 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// streamBufSize is the relay buffer of event streams and unknown-length answers while
// their data flows (a burst); they wait for more in a streamWaitSize buffer.
const streamBufSize = 4 << 10

var streamBufPool = sync.Pool{New: func() any { b := make([]byte, streamBufSize); return &b }}

// streamWaitSize is the buffer a stream waits in for the upstream's next event (relay.go):
// an event usually fits; a read that fills it moves the stream to a streamBufSize buffer
// until the burst is over.
const streamWaitSize = 512

var streamWaitPool = sync.Pool{New: func() any { return new([streamWaitSize]byte) }}

// maxPooledBody is the largest request-body buffer returned to the pool; bigger ones are
// left to the garbage collector so the pool does not pin rare large bodies.
const maxPooledBody = 1 << 20

var bodyBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// replayable is a request body read into memory so that every attempt sends the same
// bytes. Readers handed to the transport are counted: the buffer returns to the pool only
// when the transport closed every one of them (it may still write a body after RoundTrip
// returned).
//
// A small body with a Content-Length (up to maxSmallBody) is read into its own slice
// instead (mem): its readers are io.NopCloser(*bytes.Reader), which net/http recognises as
// in-memory and sends in the same write as the request headers (one syscall and one
// packet instead of two); such a slice is never pooled, as the transport does not report
// when it has finished with it.
type replayable struct {
	buf  *bytes.Buffer
	mem  []byte
	open atomic.Int32
}

// maxSmallBody is the largest Content-Length read into an unpooled slice.
const maxSmallBody = 64 << 10

// maxEarlyBody is the largest Content-Length read whole before a concurrency slot is
// taken (admission.go); larger declared bodies stream to the attempt.
const maxEarlyBody = 1 << 20

func (b *replayable) data() []byte {
	if b.buf == nil {
		return b.mem
	}
	return b.buf.Bytes()
}

// reader returns a fresh reader over the body.
func (b *replayable) reader() io.ReadCloser {
	if b.buf == nil {
		return io.NopCloser(bytes.NewReader(b.mem))
	}
	b.open.Add(1)
	return &replayReader{parent: b, r: bytes.NewReader(b.buf.Bytes())}
}

// release returns the buffer to the pool when no reader is still open.
func (b *replayable) release() {
	if b.buf == nil {
		b.mem = nil
		return
	}
	if b.open.Load() == 0 && b.buf.Cap() <= maxPooledBody {
		b.buf.Reset()
		bodyBufPool.Put(b.buf)
	}
	b.buf = nil
}

type replayReader struct {
	parent *replayable
	r      *bytes.Reader
	closed atomic.Bool
}

func (r *replayReader) Read(p []byte) (int, error) { return r.r.Read(p) }

func (r *replayReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.parent.open.Add(-1)
	}
	return nil
}

// readBody reads rc whole into a pooled buffer, or into its own slice when sizeHint, the
// Content-Length (or -1), is at most maxSmallBody.
func readBody(rc io.Reader, sizeHint int64) (*replayable, error) {
	if sizeHint > 0 && sizeHint <= maxSmallBody {
		mem := make([]byte, sizeHint)
		if _, err := io.ReadFull(rc, mem); err != nil {
			return nil, err
		}
		return &replayable{mem: mem}, nil
	}
	buf := bodyBufPool.Get().(*bytes.Buffer)
	if sizeHint > 0 && sizeHint < 64<<20 {
		buf.Grow(int(sizeHint) + 1)
	}
	if _, err := buf.ReadFrom(rc); err != nil {
		buf.Reset()
		if buf.Cap() <= maxPooledBody {
			bodyBufPool.Put(buf)
		}
		return nil, err
	}
	return &replayable{buf: buf}, nil
}

// idleBody bounds the silence between reads of an upstream answer: a timer armed before
// each Read and stopped after it calls onIdle(errIdleTimeout) (which cancels the attempt)
// when a Read waits longer than d. idleBodies are pooled with their timers, so a request
// creates no timer and no closure of its own; one whose timer fired is not reused (its
// callback may still be running).
type idleBody struct {
	rc     io.ReadCloser
	t      *time.Timer
	d      time.Duration
	onIdle func(cause error)
	fired  bool
}

var idleBodyPool = sync.Pool{New: func() any {
	b := new(idleBody)
	b.t = time.AfterFunc(time.Hour, b.fire)
	b.t.Stop()
	return b
}}

func newIdleBody(rc io.ReadCloser, d time.Duration, onIdle func(cause error)) *idleBody {
	b := idleBodyPool.Get().(*idleBody)
	b.rc, b.d, b.onIdle = rc, d, onIdle
	return b
}

// fire is the timer's callback; Reset, which arms the timer, orders the fields it reads.
func (b *idleBody) fire() { b.onIdle(errIdleTimeout) }

func (b *idleBody) Read(p []byte) (int, error) {
	b.t.Reset(b.d)
	n, err := b.rc.Read(p)
	if !b.t.Stop() {
		b.fired = true
	}
	return n, err
}

// Close closes the answer's body and returns b to the pool; b must not be used after.
func (b *idleBody) Close() error {
	err := b.rc.Close()
	if !b.fired {
		b.rc, b.onIdle = nil, nil
		idleBodyPool.Put(b)
	}
	return err
}

// errBodyTimeout is the error of a request-body read that ran past forwards[].timeout.body.
var errBodyTimeout = errors.New("request body not received within the forward's body timeout")

// timedBody bounds the reading of a request body by a deadline on the client's connection
// (http.ResponseController.SetReadDeadline), set once when the body is wrapped: a Read
// blocked past it fails, and the body reports errBodyTimeout from then on. Nothing needs
// clearing when the body ends in time: net/http clears the connection's read deadline when
// it starts its own read of the connection after the body (HTTP/1), and the deadline of an
// HTTP/2 stream only ends a body not yet at its end. Reads may come from the transport's
// goroutine.
type timedBody struct {
	rc      io.ReadCloser
	expired atomic.Bool
}

func newTimedBody(rc io.ReadCloser, w http.ResponseWriter, d time.Duration) *timedBody {
	deadline := time.Now().Add(d)
	// net/http's own writer has the method; others go through a ResponseController. A
	// writer that cannot bound reads (ErrNotSupported) leaves the body unbounded.
	if rd, ok := w.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = rd.SetReadDeadline(deadline)
	} else {
		_ = http.NewResponseController(w).SetReadDeadline(deadline)
	}
	return &timedBody{rc: rc}
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && (b.expired.Load() || isTimeout(err)) {
		b.expired.Store(true)
		err = errBodyTimeout
	}
	return n, err
}

func (b *timedBody) Close() error { return b.rc.Close() }

// timedOut reports whether the body ran past its deadline.
func (b *timedBody) timedOut() bool { return b != nil && b.expired.Load() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
