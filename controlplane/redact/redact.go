// Package redact hides the secrets of a configuration before it leaves the control plane
// or a proxy (admin API reads, export, a proxy's /config), and puts them back when an
// operator sends a redacted configuration in again (Restore), so `export | apply` and
// GET-then-PUT round-trip.
//
// Secrets are: upstreams[].auth.token, upstreams[].auth.password, the password in
// upstream_groups[].http_client.proxy.url, and the value of header operations whose header
// name looks like a credential (Authorization, api-key, x-api-key, any name containing
// "key", "token", "secret", "password", "auth" or "cookie"). A value that is a `${env:NAME}`
// reference is not a secret and is kept as is; empty values stay empty.
//
// The functions are pure and safe for concurrent use; they never modify their arguments.
package redact

import (
	"errors"
	"fmt"
	"strings"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/proto"
)

// Marker replaces a secret in redacted output.
const Marker = "<redacted>"

// Config returns a deep copy of c with every secret replaced by Marker. Config(nil) is nil.
func Config(c *configv1.Config) *configv1.Config {
	if c == nil {
		return nil
	}
	out := proto.Clone(c).(*configv1.Config)
	for _, u := range out.Upstreams {
		redactUpstream(u)
	}
	for _, g := range out.UpstreamGroups {
		if px := g.GetHttpClient().GetProxy(); px != nil {
			px.Url = URL(px.Url)
		}
	}
	return out
}

// Upstream returns a deep copy of u with its secrets replaced by Marker. Upstream(nil) is nil.
func Upstream(u *configv1.Upstream) *configv1.Upstream {
	if u == nil {
		return nil
	}
	out := proto.Clone(u).(*configv1.Upstream)
	redactUpstream(out)
	return out
}

// UpstreamGroup returns a deep copy of g with the password of its outbound proxy URL
// replaced by Marker. UpstreamGroup(nil) is nil.
func UpstreamGroup(g *configv1.UpstreamGroup) *configv1.UpstreamGroup {
	if g == nil {
		return nil
	}
	out := proto.Clone(g).(*configv1.UpstreamGroup)
	if px := out.GetHttpClient().GetProxy(); px != nil {
		px.Url = URL(px.Url)
	}
	return out
}

func redactUpstream(u *configv1.Upstream) {
	if u == nil {
		return
	}
	if a := u.Auth; a != nil {
		a.Token = secret(a.Token)
		a.Password = secret(a.Password)
	}
	for _, h := range u.Headers {
		if h != nil && SensitiveHeader(h.Key) {
			h.Value = secret(h.Value)
		}
	}
}

func secret(s string) string {
	if s == "" || validate.IsEnvRef(s) {
		return s
	}
	return Marker
}

// SensitiveHeader reports whether a header operation on the header name carries a
// credential, so that its value is redacted.
func SensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"key", "token", "secret", "password", "auth", "cookie", "signature"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// URL returns raw with the password of its userinfo replaced by Marker, keeping the rest
// readable: "http://user:pass@proxy:8080" becomes "http://user:<redacted>@proxy:8080". A URL
// without a password is returned unchanged; so are "" and `${env:NAME}` references. Text
// that does not have the shape scheme://[userinfo@]host... but contains "@" is replaced
// whole, since it may hide a credential.
func URL(raw string) string {
	if raw == "" || validate.IsEnvRef(raw) {
		return raw
	}
	scheme, user, pass, rest, ok := splitUserinfo(raw)
	if !ok {
		if strings.Contains(raw, "@") {
			return Marker
		}
		return raw
	}
	if pass == nil || *pass == "" || *pass == Marker {
		return raw
	}
	return scheme + "://" + user + ":" + Marker + "@" + rest
}

// splitUserinfo cuts raw into scheme, user, password (nil if absent) and the text after
// "@". ok is false when raw has no "://" or no userinfo.
func splitUserinfo(raw string) (scheme, user string, pass *string, rest string, ok bool) {
	i := strings.Index(raw, "://")
	if i <= 0 {
		return "", "", nil, "", false
	}
	scheme = raw[:i]
	after := raw[i+3:]
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		end = len(after)
	}
	at := strings.LastIndex(after[:end], "@")
	if at < 0 {
		return "", "", nil, "", false
	}
	userinfo := after[:at]
	rest = after[at+1:]
	if c := strings.IndexByte(userinfo, ':'); c >= 0 {
		p := userinfo[c+1:]
		return scheme, userinfo[:c], &p, rest, true
	}
	return scheme, userinfo, nil, rest, true
}

// Restore puts secrets back into next, in place: wherever next holds Marker in a secret
// field, it copies the value of the same field from the same-named upstream (or group) of
// prev. A secret it cannot restore (no such resource in prev, or prev has no value there)
// is reported, all at once, as *validate.FieldError of kind validate.ErrInvalid naming the
// path in next. prev may be nil (every Marker is then an error).
func Restore(next, prev *configv1.Config) error {
	if next == nil {
		return nil
	}
	var errs []error
	fail := func(path, what string) {
		errs = append(errs, &validate.FieldError{Path: path, Kind: validate.ErrInvalid,
			Msg: fmt.Sprintf("%s is %q but there is no previous value to restore", what, Marker)})
	}
	prevUp := map[string]*configv1.Upstream{}
	for _, u := range prev.GetUpstreams() {
		prevUp[u.GetName()] = u
	}
	for i, u := range next.Upstreams {
		if u == nil {
			continue
		}
		p := fmt.Sprintf("upstreams[%d]", i)
		old := prevUp[u.Name]
		restoreUpstream(u, old, p, fail)
	}
	prevGroup := map[string]*configv1.UpstreamGroup{}
	for _, g := range prev.GetUpstreamGroups() {
		prevGroup[g.GetName()] = g
	}
	for i, g := range next.UpstreamGroups {
		px := g.GetHttpClient().GetProxy()
		if px == nil {
			continue
		}
		p := fmt.Sprintf("upstream_groups[%d].http_client.proxy.url", i)
		old := prevGroup[g.GetName()].GetHttpClient().GetProxy().GetUrl()
		if url, ok := restoreURL(px.Url, old); ok {
			px.Url = url
		} else {
			fail(p, "the proxy password")
		}
	}
	return errors.Join(errs...)
}

// RestoreUpstream is Restore for one upstream (a PUT of a single resource): Marker values
// in next are taken from prev, which may be nil. Paths in errors are relative to the
// upstream, e.g. "auth.token".
func RestoreUpstream(next, prev *configv1.Upstream) error {
	if next == nil {
		return nil
	}
	var errs []error
	fail := func(path, what string) {
		errs = append(errs, &validate.FieldError{Path: path, Kind: validate.ErrInvalid,
			Msg: fmt.Sprintf("%s is %q but there is no previous value to restore", what, Marker)})
	}
	restoreUpstream(next, prev, "", fail)
	return errors.Join(errs...)
}

// RestoreUpstreamGroup is Restore for one group: a Marker password in its outbound proxy
// URL is taken from prev, which may be nil. The error path is "http_client.proxy.url".
func RestoreUpstreamGroup(next, prev *configv1.UpstreamGroup) error {
	px := next.GetHttpClient().GetProxy()
	if px == nil {
		return nil
	}
	if url, ok := restoreURL(px.Url, prev.GetHttpClient().GetProxy().GetUrl()); ok {
		px.Url = url
		return nil
	}
	return &validate.FieldError{Path: "http_client.proxy.url", Kind: validate.ErrInvalid,
		Msg: fmt.Sprintf("the proxy password is %q but there is no previous value to restore", Marker)}
}

func restoreUpstream(u, old *configv1.Upstream, p string, fail func(path, what string)) {
	join := func(s string) string {
		if p == "" {
			return s
		}
		return p + "." + s
	}
	if a := u.Auth; a != nil {
		if a.Token == Marker {
			if v := old.GetAuth().GetToken(); v != "" && v != Marker {
				a.Token = v
			} else {
				fail(join("auth.token"), "the token")
			}
		}
		if a.Password == Marker {
			if v := old.GetAuth().GetPassword(); v != "" && v != Marker {
				a.Password = v
			} else {
				fail(join("auth.password"), "the password")
			}
		}
	}
	for j, h := range u.Headers {
		if h == nil || h.Value != Marker {
			continue
		}
		restored := false
		for _, oh := range old.GetHeaders() {
			if strings.EqualFold(oh.GetKey(), h.Key) && oh.GetValue() != "" && oh.GetValue() != Marker {
				h.Value = oh.GetValue()
				restored = true
				break
			}
		}
		if !restored {
			fail(join(fmt.Sprintf("headers[%d].value", j)), "the header value")
		}
	}
}

// restoreURL restores the password (or the whole URL) of next from prev. It returns false
// when next carries Marker but prev has nothing to give.
func restoreURL(next, prev string) (string, bool) {
	if next == Marker {
		return prev, prev != "" && prev != Marker
	}
	scheme, user, pass, rest, ok := splitUserinfo(next)
	if !ok || pass == nil || *pass != Marker {
		return next, true
	}
	_, _, oldPass, _, ok := splitUserinfo(prev)
	if !ok || oldPass == nil || *oldPass == "" || *oldPass == Marker {
		return next, false
	}
	return scheme + "://" + user + ":" + *oldPass + "@" + rest, true
}
