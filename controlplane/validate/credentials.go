package validate

import (
	"net/url"
	"sort"
	"strings"
)

// credentialWords are the fragments that make a header or query parameter name look like it
// carries a credential.
var credentialWords = []string{"key", "token", "secret", "passw", "pwd", "auth", "cookie", "signature", "credential"}

// CredentialName reports whether a header or query parameter name looks like it carries a
// credential: Authorization, api-key, x-api-key, access_token, sig, and any name containing
// "key", "token", "secret", "passw", "pwd", "auth", "cookie", "signature" or "credential",
// in any case. Redaction hides the values of such headers; upstream URLs may not carry such
// query parameters.
func CredentialName(name string) bool {
	n := strings.ToLower(name)
	if n == "sig" {
		return true
	}
	for _, w := range credentialWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// upstreamURLCredentials refuses credentials written into an upstream URL: a user name or
// password (userinfo) and query parameters whose names look like credentials. The proxy
// does not send userinfo, and a URL is shown in clear in the API, metrics and logs, so the
// secret would leak and still not be used. Messages never echo the values.
func (v *validator) upstreamURLCredentials(p string, u *url.URL) {
	if u.User != nil {
		v.add(p, ErrInvalid, "url must not carry a user name or password (they are not sent, and a url is shown in clear): "+
			"put credentials in auth (type: basic with username and password, or type: bearer with token) or in headers")
	}
	var names []string
	for name := range u.Query() {
		if CredentialName(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		v.add(p, ErrInvalid, "url query parameter %q looks like a credential (a url is shown in clear): "+
			"send it in auth (type: bearer) or in headers (e.g. op: insert, key: api-key), which are kept secret", name)
	}
}

// safeURL returns raw, parsed as u, as it may appear in a message: the password of its
// userinfo and the values of credential-looking query parameters replaced by "xxxxx".
func safeURL(raw string, u *url.URL) string {
	c := *u
	hidden := false
	if c.RawQuery != "" {
		q := c.Query()
		for name, vals := range q {
			if CredentialName(name) {
				for i := range vals {
					vals[i] = "xxxxx"
				}
				hidden = true
			}
		}
		if hidden {
			c.RawQuery = q.Encode()
		}
	}
	if _, has := c.User.Password(); !has && !hidden {
		return raw
	}
	return c.Redacted()
}
