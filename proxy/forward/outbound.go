package forward

import (
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// hopHeaders are the hop-by-hop headers a proxy must not forward: RFC 9110 section 7.6.1
// (Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade), RFC 7230
// section 6.1's list, and Proxy-Authenticate / Proxy-Authorization (RFC 9110 sections 11.7.1
// and 11.7.2), which concern the proxy itself. Headers named in Connection are removed too.
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers from h, those listed in its Connection
// header first.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for v != "" {
			var name string
			name, v, _ = strings.Cut(v, ",")
			if name = textproto.TrimString(name); name != "" {
				delete(h, http.CanonicalHeaderKey(name))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// joinURLPath joins the upstream url's path base and the request path reqPath with
// exactly one slash between them, except that when the end of base repeats the start of
// reqPath, whole segments compared, the repeated segments are written once. So a client's
// /v1/chat/completions reaches /v1/chat/completions through a base of "", "/v1" or
// "/v1/chat/completions" alike (LLMProxy's examples write the second, its reference the
// third), and /openai/v1/chat/completions through "/openai", which does not overlap;
// "/v1x" does not overlap "/v1". An empty reqPath gives the base (or "/").
//
// It allocates only the joined string, and nothing when the base is wholly repeated.
func joinURLPath(base, reqPath string) string {
	switch {
	case base == "" || base == "/":
		if reqPath == "" {
			return "/"
		}
		return reqPath
	case reqPath == "":
		return base
	}
	if cut, ok := pathOverlap(base, reqPath); ok {
		if cut == 0 {
			return reqPath
		}
		return base[:cut] + reqPath
	}
	bs := base[len(base)-1] == '/'
	rs := reqPath[0] == '/'
	switch {
	case bs && rs:
		return base + reqPath[1:]
	case !bs && !rs:
		return base + "/" + reqPath
	}
	return base + reqPath
}

// pathOverlap finds the longest run of whole segments that ends base (a trailing slash
// aside) and starts reqPath (which must begin with "/"), and returns the offset in base
// where that run begins.
func pathOverlap(base, reqPath string) (cut int, ok bool) {
	if reqPath[0] != '/' {
		return 0, false
	}
	b := strings.TrimSuffix(base, "/")
	for i := 0; i < len(b)-1; i++ {
		if b[i] != '/' {
			continue
		}
		run := b[i:]
		if strings.HasPrefix(reqPath, run) && (len(reqPath) == len(run) || reqPath[len(run)] == '/') {
			return i, true
		}
	}
	return 0, false
}

// targetURL sets u to the upstream URL for the inbound URL in: the member's scheme, host
// and path prefix, then in's path (joinURLPath), and in's query.
func targetURL(u, base, in *url.URL) {
	*u = url.URL{Scheme: base.Scheme, Host: base.Host, User: base.User, RawQuery: in.RawQuery}
	if in.RawPath == "" && base.RawPath == "" {
		u.Path = joinURLPath(base.Path, in.Path)
		return
	}
	// Escaped paths: join the escaped forms, so that segments are compared as sent
	// ("%2F" is no separator) and reserved characters keep their escaping.
	raw := joinURLPath(base.EscapedPath(), in.EscapedPath())
	p, err := url.PathUnescape(raw)
	if err != nil { // both parts came from parsed URLs: cannot happen
		u.Path = joinURLPath(base.Path, in.Path)
		return
	}
	u.Path, u.RawPath = p, raw
}

// newRequestID returns 32 hex digits from 16 random bytes.
func newRequestID() string {
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(a >> (8 * i))
		b[8+i] = byte(c >> (8 * i))
	}
	return hex.EncodeToString(b[:])
}

// clientIP returns the host part of a RemoteAddr ("1.2.3.4:5678" → "1.2.3.4").
func clientIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

// outboundHeader fills the empty map h with the header sent to member m from the inbound
// header in (which it does not modify): hop-by-hop headers removed, X-Forwarded-For appended, X-Forwarded-Proto
// set, X-Request-Id set (requestID is shared, never modified), the client's key headers
// (Authorization, X-Api-Key, Api-Key) removed when clientKeys (the forward reads keys), the
// member's auth and header ops applied, User-Agent set.
//
// h shares in's value slices (a shallow copy: no slice is allocated); neither this function
// nor net/http modifies a value slice in place — every change here assigns a new slice — so
// in stays intact.
func outboundHeader(h, in http.Header, r *http.Request, g *config.Group, m *config.Member, requestID []string, clientKeys bool) {
	for k, v := range in {
		h[k] = v
	}
	removeHopHeaders(h)
	if ip := clientIP(r.RemoteAddr); ip != "" {
		if prior, ok := h["X-Forwarded-For"]; ok && len(prior) > 0 {
			h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
		} else {
			h["X-Forwarded-For"] = []string{ip}
		}
	}
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = protoHTTPS
	} else {
		h["X-Forwarded-Proto"] = protoHTTP
	}
	h["X-Request-Id"] = requestID
	if clientKeys {
		// The client's key is ours, never the upstream's.
		for _, k := range clientKeyHeaders {
			delete(h, k)
		}
	}
	if m.Auth != "" {
		h["Authorization"] = []string{m.Auth}
	}
	for i := range m.HeaderOps {
		op := &m.HeaderOps[i]
		switch op.Op {
		case config.HeaderInsert:
			if _, ok := h[op.Key]; !ok {
				h[op.Key] = []string{op.Value}
			}
		case config.HeaderReplace:
			h[op.Key] = []string{op.Value}
		case config.HeaderRemove:
			delete(h, op.Key)
		}
	}
	// An empty agent sends no User-Agent (net/http omits an empty value).
	h["User-Agent"] = []string{g.Agent}
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// copyResponseHeader copies the upstream answer's header to dst, hop-by-hop headers
// excepted.
func copyResponseHeader(dst, src http.Header) {
	_, hasConn := src["Connection"]
	for k, vv := range src {
		if isHop(k) {
			continue
		}
		dst[k] = vv
	}
	if hasConn {
		for _, v := range src["Connection"] {
			for v != "" {
				var name string
				name, v, _ = strings.Cut(v, ",")
				if name = textproto.TrimString(name); name != "" {
					delete(dst, http.CanonicalHeaderKey(name))
				}
			}
		}
	}
}

func isHop(k string) bool {
	for _, h := range hopHeaders {
		if h == k {
			return true
		}
	}
	return false
}
