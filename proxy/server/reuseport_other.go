//go:build !linux

package server

import "syscall"

// reusePort does nothing outside Linux: listeners are plain, and a moved or re-timed forward
// on the same address cannot be reopened before its old listener closes.
func reusePort(network, address string, c syscall.RawConn) error { return nil }
