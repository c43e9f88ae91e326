package config

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
)

// CountingConn is an upstream connection that counts the bytes its writes handed to the
// kernel, so an attempt can tell whether any byte of its request left the proxy: the
// difference between Written when the transport gave the attempt the connection
// (httptrace GotConn) and when the attempt failed. Exact for HTTP/1 (one request at a time
// per connection); on an HTTP/2 connection other streams write too, so a difference there
// only says that something was sent.
type CountingConn struct {
	net.Conn
	written atomic.Int64
}

func (c *CountingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// NetConn returns the connection c counts.
func (c *CountingConn) NetConn() net.Conn { return c.Conn }

// Written returns the bytes written so far.
func (c *CountingConn) Written() int64 { return c.written.Load() }

// Counting returns the CountingConn under c (a connection the transport got, possibly
// wrapped in TLS), or nil.
func Counting(c net.Conn) *CountingConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	cc, _ := c.(*CountingConn)
	return cc
}

// countingDialer wraps every connection dial makes in a CountingConn.
func countingDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &CountingConn{Conn: c}, nil
	}
}
