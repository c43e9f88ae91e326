package configfile

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// EnvPrefix starts the name of every environment override (see File.WithEnv).
const EnvPrefix = "LLMPROXY_"

// SettingVariables are the variables with EnvPrefix that our binaries and tests read for
// their own settings. They are not config paths, and WithEnv leaves them alone. This is
// the one list of them: a binary that reads a new LLMPROXY_ variable adds it here (a test
// of this package finds the names in the source and fails otherwise).
var SettingVariables = []string{
	"LLMPROXY_ADMIN_AUTH_TOKEN",     // control plane and llmproxyctl: admin bearer token
	"LLMPROXY_XDS_AUTH_TOKEN",       // control plane and proxy: ADS bearer token
	"LLMPROXY_REDIS_URL",            // proxy: --redis
	"LLMPROXY_CACHE_LOOKUP_TIMEOUT", // proxy: --cache-lookup-timeout
	"LLMPROXY_SERVER",               // llmproxyctl: --server
	"LLMPROXY_TEST_POSTGRES",        // tests: the PostgreSQL server to use
}

// serviceLinkRE matches the variables Kubernetes puts in every pod for each Service of the
// namespace (unless enableServiceLinks is false), here for a Service named llmproxy or
// llmproxy-…: LLMPROXY_SERVICE_HOST, LLMPROXY_PORT_3000_TCP_ADDR, ... They are not config
// paths either.
var serviceLinkRE = regexp.MustCompile(`^LLMPROXY(_[A-Z0-9]+)*_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$`)

// notConfigPath reports whether the variable name is one of SettingVariables or a
// Kubernetes service link.
func notConfigPath(name string) bool {
	return slices.Contains(SettingVariables, name) || !strings.Contains(name, "__") && serviceLinkRE.MatchString(name)
}

// Override is one value of a file replaced from the environment.
type Override struct {
	// Variable is the environment variable, e.g. "LLMPROXY_UPSTREAMS__0__AUTH__TOKEN".
	Variable string `json:"variable"`
	// Path is the field it replaced, e.g. "upstreams[0].auth.token".
	Path string `json:"path"`
}

// WithEnv returns a copy of f in which LLMProxy's environment overrides are applied:
// every variable of environ ("NAME=value" strings, as os.Environ returns) whose name is
// EnvPrefix followed by a path replaces the value at that path, which the file must set.
// The path's segments are joined by "__", list indexes are numbers, and names match keys
// whatever their case: LLMPROXY_UPSTREAMS__0__AUTH__TOKEN replaces upstreams[0].auth.token,
// LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT replaces http_server.forwards[0].port. The value is
// read as a YAML scalar of the field's type: "8080" for a number, "true" for a boolean,
// anything for a string; an empty value is null (the field becomes unset). To leave a value
// to the environment, write its key with no value (`token:`).
//
// A variable whose path names nothing in the file, or names a mapping or a list, is an
// error naming it: a misspelt override must not be ignored. SettingVariables and the
// variables Kubernetes injects for a Service named llmproxy are skipped.
// Errors in the values themselves, found now or by Validate, name the variable instead of a
// line. On failure it returns nil and the errors.Join of every *Error found.
func (f *File) WithEnv(environ []string) (*File, error) {
	vars := envOverrides(environ)
	if len(vars) == 0 {
		return f, nil
	}
	w := &envWriter{file: f.name, nodes: map[*yaml.Node]string{}}
	root := f.root
	byPath := map[string]string{}
	var overrides []Override
	for _, v := range vars {
		segs := strings.Split(strings.TrimPrefix(v.name, EnvPrefix), "__")
		w.variable, w.value = v.name, v.value
		if slices.Contains(segs, "") {
			w.fail("empty path segment (segments are joined by \"__\")")
			continue
		}
		next, path, ok := w.replace(root, rootMessage, segs, "")
		if !ok {
			continue
		}
		if prev, dup := byPath[path]; dup {
			w.fail("%s is also set by %s", path, prev)
			continue
		}
		byPath[path] = v.name
		root = next
		overrides = append(overrides, Override{Variable: v.name, Path: path})
	}
	// Decode even when some variables named nothing, so that the values of the others are
	// checked too: every error at once.
	c, pos, err := decodeTree(f.name, root, w.nodes)
	if err != nil || len(w.errs) > 0 {
		return nil, errors.Join(append(w.errs, err)...)
	}
	return &File{name: f.name, root: root, config: c, pos: pos, overrides: overrides}, nil
}

type envVar struct{ name, value string }

// envOverrides returns the variables of environ that are overrides, sorted by name; the
// last of several entries for one name wins, as in os.Getenv.
func envOverrides(environ []string) []envVar {
	last := map[string]string{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || notConfigPath(name) {
			continue
		}
		last[name] = value
	}
	out := make([]envVar, 0, len(last))
	for name, value := range last {
		out = append(out, envVar{name, value})
	}
	slices.SortFunc(out, func(a, b envVar) int { return strings.Compare(a.name, b.name) })
	return out
}

var rootMessage = (&configv1.Config{}).ProtoReflect().Descriptor()

// envWriter replaces values of a YAML tree, copying the nodes on the way down so that
// the tree it started from (and anchors shared through aliases) stay as they were.
type envWriter struct {
	file            string
	variable, value string
	nodes           map[*yaml.Node]string // the replacement nodes and their variables
	errs            []error
}

func (w *envWriter) fail(format string, args ...any) {
	w.errs = append(w.errs, &Error{File: w.file, Env: w.variable, Msg: fmt.Sprintf(format, args...)})
}

// replace returns a copy of n, a value of the message desc at path, with the scalar that
// segs names replaced by the variable's value, and the full path of that scalar.
func (w *envWriter) replace(n *yaml.Node, desc protoreflect.MessageDescriptor, segs []string, path string) (*yaml.Node, string, bool) {
	seg := segs[0]
	aliases := keyAliases[desc.FullName()]
	name := protoreflect.Name(strings.ToLower(seg))
	if a, ok := aliases[string(name)]; ok {
		name = a
	}
	fd := desc.Fields().ByName(name)
	if fd == nil {
		w.fail("unknown key %q%s%s", strings.ToLower(seg), in(path), validKeys(desc, aliases))
		return nil, "", false
	}
	fp := joinPath(path, string(fd.Name()))
	n = copyNode(n)
	if n == nil || n.Kind != yaml.MappingNode {
		w.fail("%s is not in the file", fp)
		return nil, "", false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolveAlias(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			continue
		}
		kn := protoreflect.Name(k.Value)
		if a, ok := aliases[k.Value]; ok {
			kn = a
		}
		if kn != fd.Name() {
			continue
		}
		v, p, ok := w.field(n.Content[i+1], fd, segs[1:], fp)
		if ok {
			n.Content[i+1] = v
		}
		return n, p, ok
	}
	w.fail("%s is not in the file; an override replaces a value the file sets (write %q with no value to leave it to the environment)",
		fp, string(fd.Name())+":")
	return nil, "", false
}

// field replaces, in v (the value of the field fd at path), what segs names.
func (w *envWriter) field(v *yaml.Node, fd protoreflect.FieldDescriptor, segs []string, path string) (*yaml.Node, string, bool) {
	switch {
	case fd.IsList():
		if len(segs) == 0 {
			w.fail("%s is a list, not a value", path)
			return nil, "", false
		}
		v = copyNode(v)
		if v == nil || v.Kind != yaml.SequenceNode {
			w.fail("%s is not a list in the file", path)
			return nil, "", false
		}
		i, err := strconv.Atoi(segs[0])
		if err != nil || i < 0 || strconv.Itoa(i) != segs[0] {
			w.fail("%s is a list: %q is not an index", path, segs[0])
			return nil, "", false
		}
		if i >= len(v.Content) {
			w.fail("%s has %d items in the file; there is no index %d", path, len(v.Content), i)
			return nil, "", false
		}
		ip := fmt.Sprintf("%s[%d]", path, i)
		var item *yaml.Node
		var p string
		var ok bool
		if fd.Kind() == protoreflect.MessageKind {
			if len(segs) == 1 {
				w.fail("%s is a mapping, not a value", ip)
				return nil, "", false
			}
			item, p, ok = w.replace(v.Content[i], fd.Message(), segs[1:], ip)
		} else {
			item, p, ok = w.scalar(v.Content[i], segs[1:], ip)
		}
		if ok {
			v.Content[i] = item
		}
		return v, p, ok
	case fd.IsMap():
		if len(segs) == 0 {
			w.fail("%s is a mapping, not a value", path)
			return nil, "", false
		}
		v = copyNode(v)
		if v == nil || v.Kind != yaml.MappingNode {
			w.fail("%s is not a mapping in the file", path)
			return nil, "", false
		}
		at := -1
		for i := 0; i+1 < len(v.Content); i += 2 {
			k := resolveAlias(v.Content[i])
			if k == nil || k.Kind != yaml.ScalarNode || !strings.EqualFold(k.Value, segs[0]) {
				continue
			}
			if at >= 0 {
				w.fail("%q matches several keys of %s (names match whatever their case)", segs[0], path)
				return nil, "", false
			}
			at = i
		}
		if at < 0 {
			w.fail("%s has no key %q in the file", path, segs[0])
			return nil, "", false
		}
		kp := fmt.Sprintf("%s[%q]", path, resolveAlias(v.Content[at]).Value)
		var val *yaml.Node
		var p string
		var ok bool
		if fd.MapValue().Kind() == protoreflect.MessageKind {
			if len(segs) == 1 {
				w.fail("%s is a mapping, not a value", kp)
				return nil, "", false
			}
			val, p, ok = w.replace(v.Content[at+1], fd.MapValue().Message(), segs[1:], kp)
		} else {
			val, p, ok = w.scalar(v.Content[at+1], segs[1:], kp)
		}
		if ok {
			v.Content[at+1] = val
		}
		return v, p, ok
	case fd.Kind() == protoreflect.MessageKind:
		if len(segs) == 0 {
			w.fail("%s is a mapping, not a value", path)
			return nil, "", false
		}
		return w.replace(v, fd.Message(), segs, path)
	default:
		return w.scalar(v, segs, path)
	}
}

// scalar returns the node holding the variable's value in place of v, a scalar at path.
func (w *envWriter) scalar(v *yaml.Node, segs []string, path string) (*yaml.Node, string, bool) {
	old := resolveAlias(v)
	switch {
	case len(segs) > 0:
		w.fail("%s is a value; it has no %q", path, strings.ToLower(segs[0]))
		return nil, "", false
	case old == nil || old.Kind != yaml.ScalarNode:
		w.fail("%s is not a value in the file", path)
		return nil, "", false
	}
	// A plain scalar with no tag: YAML's rules give it its type (number, boolean, null or
	// string), as if it were written in the file without quotes.
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: w.value, Line: old.Line, Column: old.Column}
	w.nodes[n] = w.variable
	return n, path, true
}

// resolveAlias follows aliases; nil for a cycle or a dangling alias.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for hops := 0; n != nil && n.Kind == yaml.AliasNode; hops++ {
		if hops > 100 {
			return nil
		}
		n = n.Alias
	}
	return n
}

// copyNode returns a shallow copy of n (aliases followed) with its own Content slice, or
// nil when n is nil or a broken alias.
func copyNode(n *yaml.Node) *yaml.Node {
	n = resolveAlias(n)
	if n == nil {
		return nil
	}
	c := *n
	c.Anchor = ""
	c.Content = slices.Clone(n.Content)
	return &c
}

// ValueAt returns the text of the scalar at path in c ("upstreams[0].auth.token",
// `routing[0].headers["X-Tenant"]`, the paths of Override and of validation errors), as
// YAML would write it; false when path names no scalar that c sets. Use it on a redacted
// copy to show an override's value without its secret.
func ValueAt(c *configv1.Config, path string) (string, bool) {
	if c == nil {
		return "", false
	}
	m := c.ProtoReflect()
	for path != "" {
		name := path
		if i := strings.IndexAny(path, ".["); i >= 0 {
			name = path[:i]
		}
		path = strings.TrimPrefix(path[len(name):], ".")
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil || !m.Has(fd) {
			return "", false
		}
		v := m.Get(fd)
		var ok bool
		switch {
		case fd.IsList():
			if v, path, ok = listItem(v.List(), path); !ok {
				return "", false
			}
		case fd.IsMap():
			if v, path, ok = mapValue(v.Map(), path); !ok {
				return "", false
			}
		}
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() && fd.MapValue().Kind() != protoreflect.MessageKind {
			if path != "" {
				return "", false
			}
			if fd.IsMap() {
				fd = fd.MapValue()
			}
			n, err := encodeScalar(v, fd, "")
			if err != nil {
				return "", false
			}
			return n.Value, true
		}
		m = v.Message()
		path = strings.TrimPrefix(path, ".")
	}
	return "", false
}

// listItem takes "[N]" off the start of rest and returns the item.
func listItem(l protoreflect.List, rest string) (protoreflect.Value, string, bool) {
	end := strings.IndexByte(rest, ']')
	if !strings.HasPrefix(rest, "[") || end < 0 {
		return protoreflect.Value{}, "", false
	}
	i, err := strconv.Atoi(rest[1:end])
	if err != nil || i < 0 || i >= l.Len() {
		return protoreflect.Value{}, "", false
	}
	return l.Get(i), rest[end+1:], true
}

// mapValue takes `["key"]` off the start of rest and returns the value.
func mapValue(mp protoreflect.Map, rest string) (protoreflect.Value, string, bool) {
	if !strings.HasPrefix(rest, "[") {
		return protoreflect.Value{}, "", false
	}
	key, err := strconv.QuotedPrefix(rest[1:])
	if err != nil || !strings.HasPrefix(rest[1+len(key):], "]") {
		return protoreflect.Value{}, "", false
	}
	k, _ := strconv.Unquote(key)
	v := mp.Get(protoreflect.ValueOfString(k).MapKey())
	if !v.IsValid() {
		return protoreflect.Value{}, "", false
	}
	return v, rest[1+len(key)+1:], true
}
