// Package upstream sends the proxy's requests to its upstreams.
//
// A Client is an http.RoundTripper. Requests to cleartext HTTP/1.1 upstreams with their
// bodies in memory, the proxy's common case, are exchanged on the calling goroutine: the
// request written with net/http's own Request.Write, the answer read with its own
// http.ReadResponse, over pooled keep-alive connections. net/http's Transport spends two
// goroutines (readLoop, writeLoop) and two buffers on every connection for the life of the
// connection, and hands every exchange between three goroutines; for an LLM gateway, which
// holds thousands of answers open for minutes, that is most of the memory of an open stream
// and a good part of the CPU of a short request. Here an open stream holds one read buffer
// and no goroutine of its own (the caller's is blocked reading the body), and an idle
// connection holds no buffer at all.
//
// Everything else goes through the fallback http.Transport unchanged: TLS upstreams (which
// may negotiate HTTP/2), outbound proxies, bodies that stream from the client or are large
// (the answer may come back before the body is written), and requests that expect
// 100-continue. No HTTP is parsed or framed here: both directions are net/http's code.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"sync"
	"time"
)

// ErrServerClosedIdle is the error of an exchange on a reused connection that the upstream
// had closed as idle: the connection ended before one byte of an answer. The upstream did
// not read the request. (Its text is net/http's for the same case.)
var ErrServerClosedIdle = errors.New("http: server closed idle connection")

// DialFunc opens a connection to addr ("host:port") on network "tcp".
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Config is a Client's settings.
type Config struct {
	// Dial opens connections to upstreams.
	Dial DialFunc
	// IdleTimeout closes a connection idle for longer; zero keeps idle connections until
	// the upstream closes them.
	IdleTimeout time.Duration
	// MaxIdlePerHost caps the idle connections kept per upstream address; more are closed
	// when their exchange ends. Zero means 1024.
	MaxIdlePerHost int
	// FallbackOnly sends every request through the fallback (an outbound proxy is
	// configured there).
	FallbackOnly bool
	// ReadBufferSize is the buffer an exchange reads its answer through, held from the
	// request's write to the end of the answer's body. Zero means 4 KiB.
	ReadBufferSize int
}

// Client sends requests to upstreams. Its zero value is not usable: see New.
type Client struct {
	fallback http.RoundTripper
	only     bool // Config.FallbackOnly
	dial     DialFunc
	idle     time.Duration
	maxIdle  int
	readers  sync.Pool // *bufio.Reader of the configured size

	mu     sync.Mutex
	pools  map[string][]*conn // idle connections by address, oldest first
	sweep  *time.Timer        // closes expired idle connections; nil when none is armed
	closed bool               // Close was called: keep nothing idle
}

// New returns a Client that sends what it cannot exchange itself through fallback.
func New(cfg Config, fallback http.RoundTripper) *Client {
	c := &Client{
		fallback: fallback,
		only:     cfg.FallbackOnly,
		dial:     cfg.Dial,
		idle:     cfg.IdleTimeout,
		maxIdle:  cfg.MaxIdlePerHost,
		pools:    map[string][]*conn{},
	}
	if c.dial == nil {
		d := &net.Dialer{}
		c.dial = d.DialContext
	}
	if c.maxIdle <= 0 {
		c.maxIdle = 1024
	}
	size := cfg.ReadBufferSize
	if size <= 0 {
		size = 4 << 10
	}
	c.readers.New = func() any { return bufio.NewReaderSize(nil, size) }
	return c
}

// writers are the buffers requests are written through, held only while one is written.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// maxDirectBody is the largest request body the Client writes itself. A body that fits in
// the socket's send buffer is written whole before the answer is read, so an upstream that
// answers early (401, 413) without reading it is still heard; a larger one could block the
// write until the upstream gives up on the connection, and the Transport, which reads the
// answer while it writes, takes it.
const maxDirectBody = 64 << 10

// direct reports whether the Client exchanges req itself: a cleartext HTTP/1.1 request with
// its body in memory (or none) and at most maxDirectBody long, not expecting 100-continue.
func direct(req *http.Request) bool {
	if req.URL.Scheme != "http" || req.ContentLength < 0 || req.ContentLength > maxDirectBody {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	if _, ok := req.Header["Expect"]; ok {
		return false
	}
	return true
}

// Direct reports whether RoundTrip exchanges req itself rather than through the fallback.
// The Client keeps no reference to such a request once RoundTrip has returned (the answer's
// body reads the connection, not the request), so its caller may reuse the request's parts.
func (c *Client) Direct(req *http.Request) bool { return !c.only && direct(req) }

// RoundTrip sends req and returns the answer with its headers read; the body streams from
// the connection. As with net/http's Transport, an error means no answer, the request's
// body is closed, and a request canceled through its context fails with the context's
// cause.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.only || !direct(req) {
		return c.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	trace := httptrace.ContextClientTrace(ctx)
	addr := hostPort(req.URL)
	for retried := false; ; retried = true {
		if trace != nil && trace.GetConn != nil {
			trace.GetConn(addr)
		}
		pc, err := c.get(ctx, addr)
		if err != nil {
			closeBody(req)
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, err
		}
		if trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Conn: pc.nc, Reused: pc.reused, WasIdle: pc.reused, IdleTime: pc.idleFor})
		}
		resp, err := c.exchange(ctx, pc, req, trace)
		if err == nil {
			return resp, nil
		}
		// A reused connection that took not one byte of the request was dead before the
		// request began (the upstream closed it between the liveness check and the
		// write): once, on another connection, as net/http does.
		var nw nothingWritten
		if !retried && pc.reused && errors.As(err, &nw) && ctx.Err() == nil {
			if req.Body == nil || req.Body == http.NoBody {
				continue
			}
			if req.GetBody != nil {
				if req.Body, err = req.GetBody(); err == nil {
					continue
				}
			}
		}
		if nw, ok := err.(nothingWritten); ok {
			err = nw.err
		}
		return nil, err
	}
}

// nothingWritten is an exchange error before one byte of the request left.
type nothingWritten struct{ err error }

func (e nothingWritten) Error() string { return e.err.Error() }
func (e nothingWritten) Unwrap() error { return e.err }

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// hostPort is u's address with the default port made explicit: u.Host itself when it has
// a port (the usual upstream URL), so most requests build no string.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// max1xx bounds the informational answers skipped before the final one, as net/http does.
const max1xx = 5

// exchange writes req on pc and reads the answer's headers. On success pc belongs to the
// answer's body, which releases it; on failure pc is closed.
func (c *Client) exchange(ctx context.Context, pc *conn, req *http.Request, trace *httptrace.ClientTrace) (*http.Response, error) {
	pc.ctx = ctx
	pc.stop = context.AfterFunc(ctx, pc.abort)
	before := pc.written()

	bw := writers.Get().(*bufio.Writer)
	bw.Reset(pc.nc)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	if trace != nil && trace.WroteRequest != nil {
		trace.WroteRequest(httptrace.WroteRequestInfo{Err: err})
	}
	if err != nil {
		c.discard(pc)
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if before >= 0 && pc.written() == before {
			return nil, nothingWritten{err}
		}
		return nil, err
	}

	pc.br = c.readers.Get().(*bufio.Reader)
	pc.br.Reset(pc.nc)
	resp, err := http.ReadResponse(pc.br, req)
	for n := 0; err == nil && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols; n++ {
		if n == max1xx {
			err = errors.New("upstream: too many 1xx informational answers")
			break
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err = trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				break
			}
		}
		resp, err = http.ReadResponse(pc.br, req)
	}
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		err = errors.New("upstream: unexpected 101 Switching Protocols")
	}
	if err != nil {
		c.discard(pc)
		switch {
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case err == io.EOF && pc.reused:
			return nil, ErrServerClosedIdle
		case err == io.EOF:
			return nil, fmt.Errorf("upstream closed the connection before answering: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	pc.keep = !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		c.done(pc, true)
		return resp, nil
	}
	resp.Body = &body{c: c, pc: pc, rc: resp.Body}
	return resp, nil
}

// body is an answer's body: it releases its connection at the end (kept for reuse when the
// body was read to its end and nothing follows it) or on Close (closed).
type body struct {
	c  *Client
	pc *conn
	rc io.ReadCloser

	mu      sync.Mutex
	reading bool // a Read is in rc.Read (outside mu)
	closed  bool // Close was called, or the body ended
	ended   bool // the exchange was ended (done called): pc is not ours any more
}

// Read reads the answer. Close may be called from another goroutine while a Read waits: it
// unblocks the Read (which then fails), and the exchange is ended when that Read returns,
// since the connection's buffer is in use until then.
func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed || b.reading {
		b.mu.Unlock()
		return 0, errBodyClosed
	}
	b.reading = true
	ctx := b.pc.ctx
	b.mu.Unlock()

	n, err := b.rc.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	switch {
	case b.closed:
		// Closed during the Read: the connection was aborted; end the exchange now.
		b.end(false)
		if err == nil {
			err = errBodyClosed
		}
	case err == io.EOF:
		b.closed = true
		b.end(true)
	case err != nil:
		b.closed = true
		b.end(false)
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
	}
	return n, err
}

// end ends the exchange once; mu is held.
func (b *body) end(complete bool) {
	if !b.ended {
		b.ended = true
		b.c.done(b.pc, complete)
	}
}

// errBodyClosed is a read after the body's end or Close.
var errBodyClosed = errors.New("upstream: read on a closed answer body")

// Close releases the connection; a body not read to its end closes it.
func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.reading {
		// Unblock the Read; it ends the exchange when it returns.
		b.pc.nc.SetDeadline(aLongTimeAgo)
		return nil
	}
	b.end(false)
	return nil
}

// done ends pc's exchange: pc goes back to the idle pool when complete says its answer
// was read to the end, both sides allow keep-alive, its context did not cancel it, and
// nothing is left unread; otherwise it is closed.
func (c *Client) done(pc *conn, complete bool) {
	aborted := !pc.stop()
	keep := complete && pc.keep && !aborted && pc.br.Buffered() == 0
	c.clearExchange(pc)
	if !keep {
		pc.nc.Close()
		return
	}
	c.put(pc)
}

// discard closes pc after a failed exchange.
func (c *Client) discard(pc *conn) {
	pc.stop()
	c.clearExchange(pc)
	pc.nc.Close()
}

// clearExchange returns pc's read buffer (if it had one yet) to the pool and forgets the
// ended exchange; pc.stop has been called.
func (c *Client) clearExchange(pc *conn) {
	if pc.br != nil {
		pc.br.Reset(nil)
		c.readers.Put(pc.br)
	}
	pc.br, pc.ctx, pc.stop = nil, nil, nil
}

// CloseIdleConnections closes the idle connections, the fallback's too. The Client stays
// usable and keeps connections idle again, as net/http's Transport does.
func (c *Client) CloseIdleConnections() { c.closeIdle(false) }

// Close is for a Client no configuration uses any more: it closes the idle connections, and
// those of exchanges still running are closed when they end instead of waiting idle for a
// request that will not come. The Client still works (a request on an old runtime may
// retry on it) but keeps nothing idle.
func (c *Client) Close() { c.closeIdle(true) }

func (c *Client) closeIdle(final bool) {
	c.mu.Lock()
	pools := c.pools
	c.pools = map[string][]*conn{}
	c.closed = c.closed || final
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
	c.mu.Unlock()
	for _, idle := range pools {
		for _, pc := range idle {
			pc.nc.Close()
		}
	}
	if f, ok := c.fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}
