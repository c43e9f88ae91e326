package validate

import (
	"fmt"
	"net/netip"
	"strings"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// serverTLS checks http_server.forwards[].tls: a certificate and its key, both named.
// Whether the files can be read is a fact of each proxy's machine: the proxy checks it when it
// applies the configuration (and NACKs), not here.
func (v *validator) serverTLS(p string, t *configv1.ServerTLS) *ServerTLS {
	if t == nil {
		return nil
	}
	v.filePath(p+".cert", "cert", t.Cert, "tls needs both cert and key")
	v.filePath(p+".key", "key", t.Key, "tls needs both cert and key")
	return &ServerTLS{Cert: t.Cert, Key: t.Key}
}

// clientTLS checks upstream_groups[].http_client.tls and returns its CA file ("" when the
// block is absent).
func (v *validator) clientTLS(p string, t *configv1.ClientTLS) string {
	if t == nil {
		return ""
	}
	v.filePath(p+".ca", "ca", t.Ca, "remove the tls block to trust the system's CAs")
	return t.Ca
}

// filePath checks a file name read by the proxy: required, no control characters.
func (v *validator) filePath(p, field, s, hint string) {
	switch {
	case s == "":
		v.add(p, ErrInvalid, "%s is required (%s)", field, hint)
	case IsEnvRef(s):
	case hasControl(s):
		v.add(p, ErrInvalid, "%s contains control characters", field)
	}
}

// trustedProxies checks http_server.forwards[].trusted_proxies: CIDRs or addresses, each once.
// It returns those that parse.
func (v *validator) trustedProxies(p string, list []string) []netip.Prefix {
	var out []netip.Prefix
	seen := make(map[netip.Prefix]int, len(list))
	for j, s := range list {
		ip := fmt.Sprintf("%s[%d]", p, j)
		if IsEnvRef(s) {
			continue
		}
		pfx, err := ParseTrustedProxy(s)
		if err != nil {
			v.add(ip, ErrInvalid, "%v", err)
			continue
		}
		if k, dup := seen[pfx]; dup {
			v.add(ip, ErrDuplicate, "%s is already listed at %s[%d]", pfx, p, k)
		} else {
			seen[pfx] = j
			out = append(out, pfx)
		}
	}
	return out
}

// ParseTrustedProxy parses one entry of forwards[].trusted_proxies: a CIDR ("10.0.0.0/8",
// "fd00::/8") or a single address ("192.0.2.7", a /32 or /128). Host bits set in a CIDR are
// cleared ("10.1.2.3/8" is 10.0.0.0/8); an IPv4-mapped IPv6 address counts as IPv4.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if pfx, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (want e.g. 10.0.0.0/8 or fd00::/8)", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR (10.0.0.0/8) nor an IP address", s)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), nil
}
