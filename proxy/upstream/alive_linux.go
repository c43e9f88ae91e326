package upstream

import (
	"net"
	"syscall"
)

// alive reports whether an idle connection can take a request: the upstream has not closed
// it and sent nothing unasked. One non-blocking peek at the socket: net/http's Transport
// learns the same from a goroutine per connection blocked reading it.
func alive(nc net.Conn) bool {
	for {
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: nothing to read, the connection is open and quiet. n == 0: the upstream
		// closed it. n > 0: it sent bytes nobody asked for; an error: it is broken.
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && open
}
