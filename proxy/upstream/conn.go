package upstream

import (
	"bufio"
	"context"
	"net"
	"time"
)

// conn is a connection to an upstream: idle in its Client's pool, or busy with one
// exchange from the request's write to the end of its answer's body.
type conn struct {
	nc      net.Conn
	addr    string
	reused  bool          // an earlier exchange ended on it
	since   time.Time     // when it went idle
	idleFor time.Duration // how long it was idle before this exchange

	// The exchange's state, reset when it ends.
	br   *bufio.Reader   // pooled; reads the answer
	ctx  context.Context // the request's
	stop func() bool     // unregisters abort from ctx; false once abort ran
	keep bool            // neither side asked to close after this exchange
}

// abort unblocks the exchange's reads and writes when its context ends; the connection is
// then closed when the exchange ends.
func (pc *conn) abort() { pc.nc.SetDeadline(aLongTimeAgo) }

var aLongTimeAgo = time.Unix(1, 0)

// written is the byte count that left on the connection, or -1 when it does not count
// (the proxy's connections do: config.CountingConn); with -1 no write error is taken for one
// before the first byte.
func (pc *conn) written() int64 {
	if w, ok := pc.nc.(interface{ Written() int64 }); ok {
		return w.Written()
	}
	return -1
}

// get returns an idle connection to addr that is still open, or a new one.
func (c *Client) get(ctx context.Context, addr string) (*conn, error) {
	now := time.Now()
	for {
		c.mu.Lock()
		idle := c.pools[addr]
		if len(idle) == 0 {
			c.mu.Unlock()
			break
		}
		pc := idle[len(idle)-1]
		idle[len(idle)-1] = nil
		c.pools[addr] = idle[:len(idle)-1]
		c.mu.Unlock()
		if (c.idle > 0 && now.Sub(pc.since) >= c.idle) || !alive(pc.nc) {
			pc.nc.Close()
			continue
		}
		pc.reused, pc.idleFor = true, now.Sub(pc.since)
		return pc, nil
	}
	nc, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{nc: nc, addr: addr}, nil
}

// put makes pc idle, or closes it when its address has MaxIdlePerHost idle already or the
// Client is closed.
func (c *Client) put(pc *conn) {
	pc.since = time.Now()
	c.mu.Lock()
	idle := c.pools[pc.addr]
	if c.closed || len(idle) >= c.maxIdle {
		c.mu.Unlock()
		pc.nc.Close()
		return
	}
	c.pools[pc.addr] = append(idle, pc)
	if c.idle > 0 && c.sweep == nil {
		c.sweep = time.AfterFunc(c.idle, c.sweepIdle)
	}
	c.mu.Unlock()
}

// sweepIdle closes the connections idle for IdleTimeout and arms itself for the next one
// to expire. Pools are oldest first, so each is cut at its first unexpired connection.
func (c *Client) sweepIdle() {
	now := time.Now()
	var expired []*conn
	var next time.Duration
	c.mu.Lock()
	for addr, idle := range c.pools {
		i := 0
		for i < len(idle) && now.Sub(idle[i].since) >= c.idle {
			i++
		}
		expired = append(expired, idle[:i]...)
		n := copy(idle, idle[i:])
		clear(idle[n:])
		idle = idle[:n]
		if n == 0 {
			delete(c.pools, addr)
			continue
		}
		c.pools[addr] = idle
		if d := c.idle - now.Sub(idle[0].since); next == 0 || d < next {
			next = d
		}
	}
	c.sweep = nil
	if next > 0 {
		c.sweep = time.AfterFunc(next, c.sweepIdle)
	}
	c.mu.Unlock()
	for _, pc := range expired {
		pc.nc.Close()
	}
}
