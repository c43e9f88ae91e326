package validate

import "net"

// listenAddress checks the address a listener binds: an IP address. A host name is refused
// rather than resolved: what it resolves to may not be an address of the machine (the bind
// fails on every proxy and the revision is refused forever), or may change between proxies.
func (v *validator) listenAddress(p, a string) {
	if net.ParseIP(a) == nil {
		v.add(p, ErrInvalid, "%q is not an IP address: a listener binds an IP address "+
			"(0.0.0.0 for every IPv4 interface, :: for every interface, 127.0.0.1 for loopback only)", a)
	}
}
