package forward

import (
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name          string
		peer          string
		xff           []string
		trusted       []netip.Prefix
		want          string
		wantForwarded bool
	}{
		{"no trusted proxies: the peer, whatever the header says", "203.0.113.9:5000", []string{"198.51.100.1"}, nil, "203.0.113.9", false},
		{"untrusted peer: the header is ignored", "203.0.113.9:5000", []string{"198.51.100.1"}, lb, "203.0.113.9", false},
		{"trusted peer, no header: the peer", "10.1.1.1:5000", nil, lb, "10.1.1.1", false},
		{"trusted peer: the address it appended", "10.1.1.1:5000", []string{"198.51.100.1"}, lb, "198.51.100.1", true},
		{"client-written entries left of the real one are ignored", "10.1.1.1:5000", []string{"1.1.1.1, 2.2.2.2, 198.51.100.1"}, lb, "198.51.100.1", true},
		{"trusted hops are skipped from the right", "10.1.1.1:5000", []string{"1.1.1.1, 198.51.100.1, 10.2.2.2", "10.3.3.3"}, lb, "198.51.100.1", true},
		{"every hop trusted: the leftmost", "10.1.1.1:5000", []string{"10.9.9.9, 10.2.2.2"}, lb, "10.9.9.9", true},
		{"garbage where a trusted hop wrote: that hop", "10.1.1.1:5000", []string{"1.1.1.1, not-an-ip, 10.2.2.2"}, lb, "10.2.2.2", true},
		{"garbage right away: the peer", "10.1.1.1:5000", []string{"unknown"}, lb, "10.1.1.1", false},
		{"entries with ports and IPv6", "[fd00::1]:5000", []string{"[2001:db8::7]:4711, 10.2.2.2:80"}, lb, "2001:db8::7", true},
		{"IPv4-mapped peer counts as IPv4", "[::ffff:10.1.1.1]:5000", []string{"198.51.100.1"}, lb, "198.51.100.1", true},
		{"empty items are skipped", "10.1.1.1:5000", []string{"198.51.100.1, ,"}, lb, "198.51.100.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, fwd := clientAddr(tt.peer, tt.xff, tt.trusted)
			if got != tt.want || fwd != tt.wantForwarded {
				t.Errorf("clientAddr(%q, %q) = %q, %v; want %q, %v", tt.peer, tt.xff, got, fwd, tt.want, tt.wantForwarded)
			}
		})
	}
}
