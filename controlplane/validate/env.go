package validate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

const (
	envPrefix = "${env:"
	envSuffix = "}"
)

// IsEnvRef reports whether the whole of s has the form `${env:NAME}`, a reference to an
// environment variable of the proxy that the proxy resolves (see ResolveEnv). It does not
// check NAME; see EnvRefName. Only whole values are references: "Bearer ${env:X}" is not.
func IsEnvRef(s string) bool {
	return len(s) >= len(envPrefix)+len(envSuffix) &&
		strings.HasPrefix(s, envPrefix) && strings.HasSuffix(s, envSuffix)
}

// EnvRefName returns the NAME of a `${env:NAME}` reference and whether NAME is a valid
// environment variable name (a letter or underscore, then letters, digits and underscores).
// For a string that is not a reference it returns "", false.
func EnvRefName(s string) (name string, ok bool) {
	if !IsEnvRef(s) {
		return "", false
	}
	name = s[len(envPrefix) : len(s)-len(envSuffix)]
	return name, validEnvName(name)
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// ResolveEnv replaces, in place, every string value of c (map values and list items
// included) that is a `${env:NAME}` reference with lookup(NAME). It reports every reference
// it cannot resolve, each as a *FieldError of kind ErrInvalid naming the path, e.g.
// `upstreams[0].auth.token: environment variable OPENAI_API_KEY is not set`; such values are
// left unchanged. Resolved values are not scanned again. lookup is typically os.LookupEnv.
func ResolveEnv(c *configv1.Config, lookup func(string) (string, bool)) error {
	_, err := resolveEnv(c, lookup)
	return err
}

// resolveEnv is ResolveEnv; it also returns how many references it met.
func resolveEnv(c *configv1.Config, lookup func(string) (string, bool)) (int, error) {
	if c == nil {
		return 0, nil
	}
	n := 0
	var errs errorList
	walkStrings(c.ProtoReflect(), "", func(path, s string) (string, bool) {
		if !IsEnvRef(s) {
			return "", false
		}
		n++
		name, ok := EnvRefName(s)
		if !ok {
			errs.add(path, ErrInvalid, "%q is not a valid environment variable name", name)
			return "", false
		}
		v, ok := lookup(name)
		if !ok {
			errs.add(path, ErrInvalid, "environment variable %s is not set", name)
			return "", false
		}
		return v, true
	})
	return n, errs.err()
}

// walkStrings calls fn for every string value set in m, in field order (map entries by
// sorted key), with its path. When fn returns true the value is replaced by its result.
func walkStrings(m protoreflect.Message, prefix string, fn func(path, s string) (string, bool)) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		path := joinPath(prefix, fd.TextName())
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.StringKind {
				continue
			}
			mp := m.Mutable(fd).Map()
			var keys []string
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k.String())
				return true
			})
			sort.Strings(keys)
			for _, k := range keys {
				mk := protoreflect.ValueOfString(k).MapKey()
				if v, ok := fn(path+"["+strconv.Quote(k)+"]", mp.Get(mk).String()); ok {
					mp.Set(mk, protoreflect.ValueOfString(v))
				}
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := 0; j < l.Len(); j++ {
				p := fmt.Sprintf("%s[%d]", path, j)
				switch fd.Kind() {
				case protoreflect.StringKind:
					if v, ok := fn(p, l.Get(j).String()); ok {
						l.Set(j, protoreflect.ValueOfString(v))
					}
				case protoreflect.MessageKind, protoreflect.GroupKind:
					walkStrings(l.Get(j).Message(), p, fn)
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if v, ok := fn(path, m.Get(fd).String()); ok {
				m.Set(fd, protoreflect.ValueOfString(v))
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			walkStrings(m.Get(fd).Message(), path, fn)
		}
	}
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}
