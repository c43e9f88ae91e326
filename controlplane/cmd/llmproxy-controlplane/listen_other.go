//go:build !linux

package main

import "net"

// listenConfig is the plain listener configuration outside Linux.
func listenConfig() net.ListenConfig { return net.ListenConfig{} }
