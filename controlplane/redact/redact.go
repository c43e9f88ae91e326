// Package redact hides the secrets of a configuration before it leaves the control plane
// or a proxy (admin API reads, export, a proxy's /config, and logs through ReplaceAttr,
// which both binaries install in their slog handler), and puts them back when an
// operator sends a redacted configuration in again (Restore), so `export | apply` and
// GET-then-PUT round-trip.
//
// What is secret is not listed here: it is marked in config.proto with the field option
// `(llmproxy.config.v1.secret)`, and every function of this package finds the marks by
// reflection over the message descriptors. A field marked there is hidden, and restored,
// without a change here. The option's value says how to hide it (see configv1.Secret):
// the whole value, only the password of a URL, or a header value when its header name
// looks like a credential (validate.CredentialName). A value that is a `${env:NAME}`
// reference is not a secret and is kept as is; empty values stay empty.
//
// The functions are pure and safe for concurrent use; they never modify their arguments,
// except Restore, which fills in its first argument.
package redact

import (
	"encoding/json"
	"log/slog"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Marker replaces a secret in redacted output.
const Marker = "<redacted>"

// Kind returns how the field fd is hidden, as marked in its proto definition;
// configv1.Secret_SECRET_UNSPECIFIED when it is not a secret.
func Kind(fd protoreflect.FieldDescriptor) configv1.Secret {
	opts, ok := fd.Options().(*descriptorpb.FieldOptions)
	if !ok || opts == nil {
		return configv1.Secret_SECRET_UNSPECIFIED
	}
	return proto.GetExtension(opts, configv1.E_Secret).(configv1.Secret)
}

// Fields returns every field marked as a secret in md and the messages reachable from it,
// each once, depth first in declaration order. Tests use it to cover every secret without
// naming them.
func Fields(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	var out []protoreflect.FieldDescriptor
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			switch {
			case Kind(fd) != configv1.Secret_SECRET_UNSPECIFIED:
				out = append(out, fd)
			case fd.IsMap() && fd.MapValue().Message() != nil:
				walk(fd.MapValue().Message())
			case fd.Message() != nil && !fd.IsMap():
				walk(fd.Message())
			}
		}
	}
	walk(md)
	return out
}

// Config returns a deep copy of c with every secret hidden. Config(nil) is nil.
func Config(c *configv1.Config) *configv1.Config { return Message(c) }

// Message returns a deep copy of m (a config message or any message holding one) with
// every secret hidden. A nil m is returned as is.
func Message[T proto.Message](m T) T {
	if !m.ProtoReflect().IsValid() {
		return m
	}
	out := proto.Clone(m).(T)
	hideIn(out.ProtoReflect())
	return out
}

// hideIn hides, in place, every secret of m and of the messages it holds, those packed in
// a google.protobuf.Any included (an xDS resource, say).
func hideIn(m protoreflect.Message) {
	if m.Descriptor().FullName() == anyName {
		hideInAny(m)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if fd.Message() != nil {
					hideIn(l.Get(i).Message())
				} else if fd.Kind() == protoreflect.StringKind {
					l.Set(i, protoreflect.ValueOfString(hide(m, fd, l.Get(i).String())))
				}
			}
		case fd.IsMap():
			mp := v.Map()
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Message() != nil {
					hideIn(mv.Message())
				} else if fd.MapValue().Kind() == protoreflect.StringKind {
					mp.Set(k, protoreflect.ValueOfString(hide(m, fd, mv.String())))
				}
				return true
			})
		case fd.Message() != nil:
			hideIn(v.Message())
		case fd.Kind() == protoreflect.StringKind:
			if s := hide(m, fd, v.String()); s != v.String() {
				m.Set(fd, protoreflect.ValueOfString(s))
			}
		}
		return true
	})
}

const anyName = "google.protobuf.Any"

// hideInAny hides the secrets of the message packed in an Any, m. A message whose type is
// not linked into the program cannot be inspected, so its bytes are dropped.
func hideInAny(m protoreflect.Message) {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		a.Value = nil
		return
	}
	hideIn(inner.ProtoReflect())
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(inner)
	if err != nil {
		a.Value = nil
		return
	}
	a.Value = b
}

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that logs a protobuf message as JSON with
// its secrets hidden, so a config (or anything holding one) logged by mistake shows no
// secret. Other attributes pass unchanged.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	m, ok := a.Value.Any().(proto.Message)
	if !ok || m == nil || !m.ProtoReflect().IsValid() {
		return a
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(Message(m))
	if err != nil {
		return slog.String(a.Key, Marker)
	}
	return slog.Any(a.Key, json.RawMessage(b))
}

// hide returns s, a value of field fd of message m, as it may be shown.
func hide(m protoreflect.Message, fd protoreflect.FieldDescriptor, s string) string {
	kind := Kind(fd)
	if kind == configv1.Secret_SECRET_UNSPECIFIED || s == "" || validate.IsEnvRef(s) {
		return s
	}
	switch kind {
	case configv1.Secret_SECRET_URL_PASSWORD:
		return URL(s)
	case configv1.Secret_SECRET_HEADER_VALUE:
		if name, ok := headerName(m); ok && !SensitiveHeader(name) {
			return s
		}
	}
	return Marker
}

// headerName returns the `key` field of m, the header a SECRET_HEADER_VALUE belongs to.
func headerName(m protoreflect.Message) (string, bool) {
	fd := m.Descriptor().Fields().ByName("key")
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.IsMap() {
		return "", false
	}
	return m.Get(fd).String(), true
}

// hidden reports whether s shows a secret hidden by this package: Marker itself, or a URL
// whose password is Marker.
func hidden(s string) bool {
	if s == Marker {
		return true
	}
	_, _, pass, _, ok := splitUserinfo(s)
	return ok && pass != nil && *pass == Marker
}

// SensitiveHeader reports whether a header operation on the header name carries a
// credential, so that its value is redacted (validate.CredentialName).
func SensitiveHeader(name string) bool { return validate.CredentialName(name) }

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
