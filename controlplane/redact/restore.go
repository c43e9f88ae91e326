package redact

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Restore puts secrets back into next, in place: wherever a secret field of next shows a
// hidden value (Marker, or a URL whose password is Marker), it takes the value of the same
// field of the same resource in prev.
//
// "The same" is found by identity, not position: list elements are matched by their `name`
// (upstreams, groups), else by their `key` ignoring case (header operations), else by their
// `path` (routes), else by their `id` (a consumer's keys); map values by their key. A secret
// is restored only where it would be sent to the same place as before: the nearest
// enclosing `url` field (the upstream's url for its auth and headers; the outbound proxy's
// own url for its password) must keep its scheme, host and port. Otherwise a stored credential would follow a resource to a new host.
//
// A hidden value that cannot be restored (no such resource or value in prev, or a changed
// destination) is reported, all at once, as *validate.FieldError of kind validate.ErrInvalid
// naming the path in next. prev may be nil (every hidden value is then an error).
func Restore(next, prev *configv1.Config) error {
	if next == nil {
		return nil
	}
	r := &restorer{}
	r.message(next.ProtoReflect(), prev.ProtoReflect(), "", destination{})
	return errors.Join(r.errs...)
}

type restorer struct{ errs []error }

func (r *restorer) fail(path, format string, args ...any) {
	r.errs = append(r.errs, &validate.FieldError{Path: path, Kind: validate.ErrInvalid, Msg: fmt.Sprintf(format, args...)})
}

// destination is where the secrets of a message are sent: the url field nearest to them in
// next and in prev. set is false above the first url field.
type destination struct {
	set        bool
	next, prev string
}

// message restores the secrets of next from prev, its counterpart (possibly invalid: no
// counterpart). path is next's path ("" at the top).
func (r *restorer) message(next, prev protoreflect.Message, path string, dest destination) {
	fields := next.Descriptor().Fields()
	if fd := fields.ByName("url"); fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() && !fd.IsMap() {
		dest = destination{set: true, next: next.Get(fd).String()}
		if prev.IsValid() {
			dest.prev = prev.Get(fd).String()
		}
	}
	// Fields in declaration order, so errors come in the order of the file.
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !next.Has(fd) {
			continue
		}
		v := next.Get(fd)
		p := join(path, string(fd.Name()))
		var old protoreflect.Value
		if prev.IsValid() {
			old = prev.Get(fd)
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			r.list(v.List(), old, p, dest)
		case fd.IsList():
			// A list of secret strings has no identity to match old values by.
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if Kind(fd) != configv1.Secret_SECRET_UNSPECIFIED && hidden(l.Get(i).String()) {
					r.fail(fmt.Sprintf("%s[%d]", p, i), "is %q but a list item cannot be restored: send the secret itself", Marker)
				}
			}
		case fd.IsMap():
			r.mapValues(fd, v.Map(), old, p, dest)
		case fd.Message() != nil:
			var oldMsg protoreflect.Message
			if old.IsValid() {
				oldMsg = old.Message()
			}
			r.message(v.Message(), orInvalid(oldMsg), p, dest)
		case fd.Kind() == protoreflect.StringKind && Kind(fd) != configv1.Secret_SECRET_UNSPECIFIED:
			if s, ok := r.value(fd, v.String(), old, p, dest); ok {
				next.Set(fd, protoreflect.ValueOfString(s))
			}
		}
	}
}

// value returns the restored value of a hidden secret s of field fd and true, or false
// when s is not hidden or cannot be restored (then it records why).
func (r *restorer) value(fd protoreflect.FieldDescriptor, s string, old protoreflect.Value, p string, dest destination) (string, bool) {
	if !hidden(s) {
		return "", false
	}
	var prev string
	if old.IsValid() {
		prev = old.String()
	}
	if prev == "" || hidden(prev) {
		r.fail(p, "the %s is %q but there is no previous value to restore: send the secret itself", what(fd), Marker)
		return "", false
	}
	if dest.set {
		if was, now, same := sameOrigin(dest.prev, dest.next); !same {
			r.fail(p, "the %s is %q but its url now points to %s instead of %s: send the secret itself, "+
				"a stored secret is kept only while the scheme, host and port stay the same", what(fd), Marker, now, was)
			return "", false
		}
	}
	if s == Marker {
		return prev, true
	}
	// A URL whose password is hidden: the new URL with the old password.
	scheme, user, _, rest, _ := splitUserinfo(s)
	_, _, oldPass, _, ok := splitUserinfo(prev)
	if !ok || oldPass == nil || *oldPass == "" {
		r.fail(p, "the %s is %q but there is no previous value to restore: send the secret itself", what(fd), Marker)
		return "", false
	}
	return scheme + "://" + user + ":" + *oldPass + "@" + rest, true
}

// list restores the secrets of a list of messages, matching each element to its
// counterpart in old by identity.
func (r *restorer) list(l protoreflect.List, old protoreflect.Value, p string, dest destination) {
	var index map[string]protoreflect.Message
	if old.IsValid() && l.Len() > 0 {
		index = indexByIdentity(old.List())
	}
	for i := 0; i < l.Len(); i++ {
		el := l.Get(i).Message()
		var match protoreflect.Message
		if id, ok := identity(el); ok {
			match = index[id]
		}
		r.message(el, orInvalid(match), fmt.Sprintf("%s[%d]", p, i), dest)
	}
}

// mapValues restores the secrets of a map's values, matched by map key.
func (r *restorer) mapValues(fd protoreflect.FieldDescriptor, m protoreflect.Map, old protoreflect.Value, p string, dest destination) {
	var oldMap protoreflect.Map
	if old.IsValid() {
		oldMap = old.Map()
	}
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		kp := fmt.Sprintf("%s[%q]", p, k.String())
		var ov protoreflect.Value
		if oldMap != nil && oldMap.Has(k) {
			ov = oldMap.Get(k)
		}
		switch {
		case fd.MapValue().Message() != nil:
			var om protoreflect.Message
			if ov.IsValid() {
				om = ov.Message()
			}
			r.message(v.Message(), orInvalid(om), kp, dest)
		case fd.MapValue().Kind() == protoreflect.StringKind && Kind(fd) != configv1.Secret_SECRET_UNSPECIFIED:
			if s, ok := r.value(fd, v.String(), ov, kp, dest); ok {
				m.Set(k, protoreflect.ValueOfString(s))
			}
		}
		return true
	})
}

// identityFields name the field that identifies a list element, in order of preference;
// keys (header names) compare without case. An element type without any has no
// counterpart.
var identityFields = []struct {
	name       protoreflect.Name
	ignoreCase bool
}{{"name", false}, {"key", true}, {"path", false}, {"id", false}}

// identity returns the identity of a list element: its identity field's value (lower case
// for keys), or false when its type has no identity field.
func identity(el protoreflect.Message) (string, bool) {
	fields := el.Descriptor().Fields()
	for _, id := range identityFields {
		fd := fields.ByName(id.name)
		if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.IsMap() {
			continue
		}
		v := el.Get(fd).String()
		if id.ignoreCase {
			v = strings.ToLower(v)
		}
		return v, true
	}
	return "", false
}

// indexByIdentity maps the identities of old's elements to them, the first one winning.
func indexByIdentity(old protoreflect.List) map[string]protoreflect.Message {
	index := make(map[string]protoreflect.Message, old.Len())
	for i := 0; i < old.Len(); i++ {
		o := old.Get(i).Message()
		if id, ok := identity(o); ok {
			if _, dup := index[id]; !dup {
				index[id] = o
			}
		}
	}
	return index
}

// orInvalid returns m, or an invalid message standing for "no counterpart" when m is nil.
func orInvalid(m protoreflect.Message) protoreflect.Message {
	if m == nil {
		return (*configv1.Config)(nil).ProtoReflect()
	}
	return m
}

// sameOrigin reports whether two URLs have the same scheme, host and port (a missing port
// is the scheme's default), and returns both origins for a message. Text that does not
// parse as a URL (an `${env:NAME}` reference, say) must be equal to match.
func sameOrigin(prev, next string) (was, now string, same bool) {
	po, pok := origin(prev)
	no, nok := origin(next)
	if !pok || !nok {
		return quoteOrigin(prev, po, pok), quoteOrigin(next, no, nok), prev == next
	}
	return po, no, po == no
}

func quoteOrigin(raw, o string, ok bool) string {
	if ok {
		return o
	}
	if validate.IsEnvRef(raw) {
		return raw
	}
	return "an unparsable url"
}

// origin returns "scheme://host:port" of raw, userinfo ignored.
func origin(raw string) (string, bool) {
	if scheme, _, _, rest, ok := splitUserinfo(raw); ok {
		raw = scheme + "://" + rest
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Hostname() == "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = defaultPorts[scheme]
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port), true
}

// defaultPorts are the ports a URL without one uses, by scheme.
var defaultPorts = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}

// what names a secret field for messages: "token", "password", "value", "url's password".
func what(fd protoreflect.FieldDescriptor) string {
	name := strings.ReplaceAll(string(fd.Name()), "_", " ")
	if Kind(fd) == configv1.Secret_SECRET_URL_PASSWORD {
		return name + "'s password"
	}
	return name
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
