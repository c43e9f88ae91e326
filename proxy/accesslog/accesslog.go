// Package accesslog writes the proxy's access log off the request path: one JSON line per
// request (Entry), encoded without reflection, gathered in a bounded set of buffers that
// one goroutine writes to the log's output, as nginx's `access_log … buffer= flush=`.
//
// A buffer is handed to the writing goroutine when the next line does not fit in it, when
// FlushInterval has passed with lines in it, and on Close. A request never waits for the
// output: when every buffer is full or being written (the output cannot keep up), the line
// is dropped and counted (Options.Dropped), as are lines lost to a failed write. Memory is
// bounded by Buffers × BufferSize (a single line longer than a buffer gets one of its own).
//
// The package is a leaf: it imports nothing of the proxy.
package accesslog

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Defaults for the zero fields of Options.
const (
	DefaultBufferSize    = 64 << 10
	DefaultBuffers       = 8
	DefaultFlushInterval = time.Second
)

// Counter counts dropped lines; a prometheus.Counter is one.
type Counter interface {
	Add(float64)
}

// Options configure a Logger. Zero fields take the defaults above.
type Options struct {
	// BufferSize is the size of one buffer; a full buffer is written in one Write.
	BufferSize int
	// Buffers is how many buffers exist (at least 2: one filling while one is written).
	Buffers int
	// FlushInterval bounds how long a line waits in a buffer that is not full.
	FlushInterval time.Duration
	// Dropped counts lines dropped because no buffer was free, the Logger was closed, or
	// the output failed. Nil counts nothing.
	Dropped Counter
	// Logger receives a warning when the output fails (once per run of failures). Nil
	// discards.
	Logger *slog.Logger
}

// chunk is one buffer and the number of lines in it.
type chunk struct {
	b     []byte
	lines int
}

// Logger is a buffered access log. Log may be called from any number of goroutines;
// Close once, after the last requests ended.
type Logger struct {
	out     io.Writer
	size    int
	dropped Counter
	log     *slog.Logger

	mu     sync.Mutex
	cur    *chunk // being filled; nil once closed
	closed bool

	free    chan *chunk // empty buffers
	full    chan *chunk // buffers waiting to be written; room for all of them
	closing chan struct{}
	done    chan struct{}
	flush   time.Duration
	failing bool // the last write failed (writer goroutine only)
}

// scratchPool holds the buffers a line is encoded into before it is copied into the
// current chunk; the encoding runs outside the Logger's lock.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxScratch is the largest scratch buffer returned to the pool.
const maxScratch = 64 << 10

// New returns a Logger writing to out and starts its writing goroutine, which runs until
// Close.
func New(out io.Writer, opts Options) *Logger {
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	switch {
	case opts.Buffers <= 0:
		opts.Buffers = DefaultBuffers
	case opts.Buffers == 1:
		opts.Buffers = 2
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Logger{
		out:     out,
		size:    opts.BufferSize,
		dropped: opts.Dropped,
		log:     opts.Logger,
		free:    make(chan *chunk, opts.Buffers),
		full:    make(chan *chunk, opts.Buffers),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		flush:   opts.FlushInterval,
	}
	l.cur = l.newChunk()
	for range opts.Buffers - 1 {
		l.free <- l.newChunk()
	}
	go l.run()
	return l
}

func (l *Logger) newChunk() *chunk { return &chunk{b: make([]byte, 0, l.size)} }

// Log appends e's line. It never waits for the output: when no buffer has room, the line
// is dropped and counted.
func (l *Logger) Log(e *Entry) {
	sp := scratchPool.Get().(*[]byte)
	line := e.AppendJSON((*sp)[:0])
	ok := l.add(line)
	if cap(line) <= maxScratch {
		*sp = line[:0]
		scratchPool.Put(sp)
	}
	if !ok {
		l.drop(1)
	}
}

// add copies line into the current chunk, handing a chunk without room to the writer;
// false when the line is dropped.
func (l *Logger) add(line []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return false
	}
	if len(l.cur.b)+len(line) > l.size && len(l.cur.b) > 0 && !l.handOffLocked() {
		return false
	}
	l.cur.b = append(l.cur.b, line...)
	l.cur.lines++
	return true
}

// handOffLocked queues the current chunk for writing and takes a free one in its place;
// false when none is free. l.mu is held.
func (l *Logger) handOffLocked() bool {
	select {
	case next := <-l.free:
		l.full <- l.cur // never blocks: full has room for every chunk
		l.cur = next
		return true
	default:
		return false
	}
}

func (l *Logger) drop(n int) {
	if l.dropped != nil {
		l.dropped.Add(float64(n))
	}
}

// run writes the queued chunks, and hands the current one over every flush interval.
func (l *Logger) run() {
	defer close(l.done)
	tick := time.NewTicker(l.flush)
	defer tick.Stop()
	for {
		select {
		case c := <-l.full:
			l.write(c)
		case <-tick.C:
			l.mu.Lock()
			if l.cur != nil && len(l.cur.b) > 0 {
				l.handOffLocked()
			}
			l.mu.Unlock()
		case <-l.closing:
			for {
				select {
				case c := <-l.full:
					l.write(c)
				default:
					return
				}
			}
		}
	}
}

// write writes c to the output and returns it to the free list.
func (l *Logger) write(c *chunk) {
	if _, err := l.out.Write(c.b); err != nil {
		l.drop(c.lines)
		if !l.failing {
			l.log.Warn("access log: write failed; lines are dropped until it works again", "err", err)
		}
		l.failing = true
	} else {
		l.failing = false
	}
	if cap(c.b) > 2*l.size { // grown by a long line: do not keep it
		c.b = make([]byte, 0, l.size)
	}
	c.b, c.lines = c.b[:0], 0
	l.free <- c
}

// Close writes the buffered lines and stops the writing goroutine. It returns ctx's error
// when the output has not taken them before ctx ends (the goroutine then finishes on its
// own). Lines logged after Close are dropped and counted.
func (l *Logger) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	if len(l.cur.b) > 0 {
		l.full <- l.cur // never blocks: full has room for every chunk
	}
	l.cur = nil
	l.mu.Unlock()
	close(l.closing)
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
