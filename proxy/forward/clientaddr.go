package forward

import (
	"net/netip"
	"strings"
)

// The client's address. A request's peer is the client unless the forward lists the peer
// among its trusted_proxies (load balancers in front of it); then the client is the
// rightmost address of X-Forwarded-For that is not itself a trusted proxy: each trusted hop
// appends the address it received the request from, so everything left of the first
// untrusted entry (from the right) was written by the client and proves nothing. An entry
// that is not an address stops the walk at the trusted hop that wrote it. When every entry
// is trusted, the leftmost is the client. This address is what `ratelimit.key: ip` counts
// and what the access log shows.

// clientAddress returns the client's IP address as text; see above. It is worked out once
// per request.
func (ex *exchange) clientAddress() string {
	if !ex.clientKnown {
		ex.client, ex.clientForwarded = clientAddr(ex.r.RemoteAddr, ex.r.Header["X-Forwarded-For"], ex.fw.TrustedProxies)
		ex.clientKnown = true
	}
	return ex.client
}

// clientAddr finds the client of a request from its peer (a RemoteAddr), its
// X-Forwarded-For values and the trusted proxies. forwarded reports whether the address
// came from X-Forwarded-For.
func clientAddr(remoteAddr string, xff []string, trusted []netip.Prefix) (ip string, forwarded bool) {
	peer := clientIP(remoteAddr)
	if len(trusted) == 0 || len(xff) == 0 {
		return peer, false
	}
	hop, err := netip.ParseAddr(peer)
	if err != nil || !trustedAddr(trusted, hop.WithZone("").Unmap()) {
		return peer, false
	}
	hop = hop.WithZone("").Unmap()
	nearest := hop // the closest trusted hop seen so far
	for i := len(xff) - 1; i >= 0; i-- {
		rest := xff[i]
		for rest != "" {
			item := rest
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				item, rest = rest[j+1:], rest[:j]
			} else {
				rest = ""
			}
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			a, ok := parseHop(item)
			if !ok {
				return nearest.String(), nearest != hop
			}
			if !trustedAddr(trusted, a) {
				return a.String(), true
			}
			nearest = a
		}
	}
	return nearest.String(), nearest != hop
}

// parseHop parses one X-Forwarded-For entry: an address, with or without a port
// ("192.0.2.1", "192.0.2.1:4711", "2001:db8::1", "[2001:db8::1]:4711").
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone("").Unmap(), true
}

func trustedAddr(trusted []netip.Prefix, a netip.Addr) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientLog is the access log's view of the client: client is the peer's host:port, or the
// address X-Forwarded-For names; peer is the peer's host:port for a forwarded request, else
// "".
func (ex *exchange) clientLog() (client, peer string) {
	if len(ex.fw.TrustedProxies) == 0 {
		return ex.r.RemoteAddr, ""
	}
	if ex.clientAddress(); ex.clientForwarded {
		return ex.client, ex.r.RemoteAddr
	}
	return ex.r.RemoteAddr, ""
}
