// Package diff compares two configurations resource by resource: which named resources
// (forwards, upstreams, upstream groups, and whatever named lists the model grows) were
// added, removed or changed, and in each, which fields, with their old and new values.
//
// Resources are found by walking the model, not by a list kept here: a repeated message
// field whose elements have a string `name` is a list of resources of the element's kind
// (its message name in snake case, e.g. "upstream_group"); a singular message field is
// walked the same way, and whatever else it holds is one settings resource named by its
// config path (e.g. "http_server"). A top-level list of unnamed items is one settings
// resource named by its key (e.g. "pricing").
//
// Secrets never appear in a diff: values are read from the redacted form of each config
// (package redact decides what a secret is). A field whose raw values differ but whose
// redacted values are equal is reported with secret=true and no values.
//
// The functions are pure and safe for concurrent use; they never modify their arguments.
package diff

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Actions of a ResourceDiff.
const (
	Added   = "added"
	Removed = "removed"
	Changed = "changed"
)

// Configs returns the resources that differ between old and new, ordered by kind (in the
// order the model declares them) and then by name. Either config may be nil (empty).
func Configs(old, new *configv1.Config) []*adminv1.ResourceDiff {
	rawOld, rawNew := collect(old), collect(new)
	var redOld, redNew resourceSet // built only when something differs
	var out []*adminv1.ResourceDiff
	for _, k := range union(rawOld, rawNew) {
		o, n := rawOld.byKey[k], rawNew.byKey[k]
		if o != nil && n != nil && proto.Equal(o.msg, n.msg) {
			continue
		}
		if redOld.byKey == nil {
			redOld, redNew = collect(redact.Config(old)), collect(redact.Config(new))
		}
		d := &adminv1.ResourceDiff{Kind: k.kind, Name: k.name, Action: Changed}
		switch {
		case o == nil:
			d.Action = Added
		case n == nil:
			d.Action = Removed
		}
		d.Fields = fields(leavesOf(o), leavesOf(n), leavesOf(redOld.byKey[k]), leavesOf(redNew.byKey[k]))
		out = append(out, d)
	}
	return out
}

// Resources returns the resources that differ between old and new as "kind/name" (or
// "kind" for settings), in the order of Configs. Either config may be nil (empty).
func Resources(old, new *configv1.Config) []string {
	a, b := collect(old), collect(new)
	var out []string
	for _, k := range union(a, b) {
		o, n := a.byKey[k], b.byKey[k]
		if o != nil && n != nil && proto.Equal(o.msg, n.msg) {
			continue
		}
		out = append(out, k.String())
	}
	return out
}

// key identifies a resource: its kind and name (empty for settings).
type key struct{ kind, name string }

func (k key) String() string {
	if k.name == "" {
		return k.kind
	}
	return k.kind + "/" + k.name
}

// resource is one resource of a config. msg is the resource message, or for settings a
// message of the enclosing type holding only the fields not walked separately. msg shares
// the config's values and must not be modified.
type resource struct {
	key   key
	order int // position of its kind in the walk of the model
	msg   proto.Message
}

// resourceSet is every resource of one config.
type resourceSet struct {
	byKey map[key]*resource
}

// collect finds the resources of c (nil: none).
func collect(c *configv1.Config) resourceSet {
	set := resourceSet{byKey: map[key]*resource{}}
	if c == nil {
		c = &configv1.Config{}
	}
	kinds := 0
	walk(c.ProtoReflect(), "", &set, &kinds)
	return set
}

// walk adds the resources found in m, whose config path is path ("" for the root). Singular
// message fields that hold resources are walked in turn; every other field of m belongs to
// m's settings resource.
func walk(m protoreflect.Message, path string, set *resourceSet, kinds *int) {
	fds := m.Descriptor().Fields()
	walked := map[protoreflect.FullName]bool{}
	for i := range fds.Len() {
		fd := fds.Get(i)
		switch {
		case fd.IsList() && fd.Message() != nil && nameField(fd.Message()) != nil:
			order := *kinds
			*kinds++
			kind := snake(string(fd.Message().Name()))
			list := m.Get(fd).List()
			for j := range list.Len() {
				item := list.Get(j).Message()
				name := item.Get(nameField(fd.Message())).String()
				set.byKey[key{kind, name}] = &resource{key: key{kind, name}, order: order, msg: item.Interface()}
			}
			walked[fd.FullName()] = true
		case path == "" && fd.IsList() && fd.Message() != nil:
			// A top-level list of unnamed items (pricing) is one settings resource of its own,
			// named by its key.
			order := *kinds
			*kinds++
			if m.Has(fd) {
				kind := string(fd.Name())
				own := m.New()
				own.Set(fd, m.Get(fd))
				set.byKey[key{kind, ""}] = &resource{key: key{kind, ""}, order: order, msg: own.Interface()}
			}
			walked[fd.FullName()] = true
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap() && holdsResources(fd.Message(), nil):
			// Walked even when unset (an empty, read-only message), so kinds are numbered
			// alike in every config.
			walk(m.Get(fd).Message(), join(path, string(fd.Name())), set, kinds)
			walked[fd.FullName()] = true
		}
	}
	order := *kinds
	*kinds++
	if !m.IsValid() {
		return
	}
	// The settings share m's values (nothing here modifies them): no copy of the resources.
	rest, empty := m.New(), true
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if !walked[fd.FullName()] {
			rest.Set(fd, v)
			empty = false
		}
		return true
	})
	if !empty {
		kind := path
		if kind == "" {
			kind = "config"
		}
		set.byKey[key{kind, ""}] = &resource{key: key{kind, ""}, order: order, msg: rest.Interface()}
	}
}

// holdsResources reports whether md has, directly or in singular message fields, a list of
// named messages. seen guards against recursive message types.
func holdsResources(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen == nil {
		seen = map[protoreflect.FullName]bool{}
	}
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		switch {
		case fd.IsList() && fd.Message() != nil && nameField(fd.Message()) != nil:
			return true
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap() && holdsResources(fd.Message(), seen):
			return true
		}
	}
	return false
}

// nameField returns md's string field "name", or nil.
func nameField(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	fd := md.Fields().ByName("name")
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
		return nil
	}
	return fd
}

// union returns the keys of a and b sorted by kind order, then name.
func union(a, b resourceSet) []key {
	order := map[key]int{}
	for _, s := range []resourceSet{a, b} {
		for k, r := range s.byKey {
			order[k] = r.order
		}
	}
	keys := make([]key, 0, len(order))
	for k := range order {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y key) int {
		if c := cmp.Compare(order[x], order[y]); c != 0 {
			return c
		}
		return cmp.Compare(x.name, y.name)
	})
	return keys
}

// leafMap maps a field path inside a resource to its value.
type leafMap map[string]*structpb.Value

func leavesOf(r *resource) leafMap {
	out := leafMap{}
	if r != nil {
		flatten(r.msg.ProtoReflect(), "", out)
	}
	return out
}

// fields lists the paths whose raw values differ, sorted, with values taken from the
// redacted leaves.
func fields(rawOld, rawNew, redOld, redNew leafMap) []*adminv1.FieldDiff {
	paths := map[string]bool{}
	for p := range rawOld {
		paths[p] = true
	}
	for p := range rawNew {
		paths[p] = true
	}
	var out []*adminv1.FieldDiff
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		o, n := rawOld[p], rawNew[p]
		if equal(o, n) {
			continue
		}
		ro, rn := redOld[p], redNew[p]
		f := &adminv1.FieldDiff{Path: p, Old: ro, New: rn}
		if !equal(ro, o) || !equal(rn, n) {
			f.Secret = true
			if equal(ro, rn) {
				f.Old, f.New = nil, nil
			}
		}
		out = append(out, f)
	}
	return out
}

func equal(a, b *structpb.Value) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return proto.Equal(a, b)
}

// flatten adds every set field of m under prefix to out. Lists of messages are keyed by
// the items' name (or path) when every item has a distinct one, by index otherwise; lists
// of scalars are one value; map entries are keyed by their key.
func flatten(m protoreflect.Message, prefix string, out leafMap) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := join(prefix, string(fd.Name()))
		switch {
		case fd.IsList() && fd.Message() != nil:
			list := v.List()
			keys := itemKeys(list, fd.Message())
			for i := range list.Len() {
				flatten(list.Get(i).Message(), p+keys[i], out)
			}
		case fd.IsList():
			vals := make([]*structpb.Value, v.List().Len())
			for i := range vals {
				vals[i] = scalar(fd, v.List().Get(i))
			}
			out[p] = structpb.NewListValue(&structpb.ListValue{Values: vals})
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				kp := p + "[" + strconv.Quote(k.String()) + "]"
				if fd.MapValue().Message() != nil {
					flatten(mv.Message(), kp, out)
				} else {
					out[kp] = scalar(fd.MapValue(), mv)
				}
				return true
			})
		case fd.Message() != nil:
			flatten(v.Message(), p, out)
		default:
			out[p] = scalar(fd, v)
		}
		return true
	})
}

// itemKeys returns the path suffix of every item of a list of messages: `["name"]` when
// every item has a distinct, non-empty name (or, failing that, path), `[i]` otherwise.
func itemKeys(list protoreflect.List, md protoreflect.MessageDescriptor) []string {
	keys := make([]string, list.Len())
	for _, field := range []protoreflect.Name{"name", "path"} {
		fd := md.Fields().ByName(field)
		if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
			continue
		}
		seen := map[string]bool{}
		ok := true
		for i := range list.Len() {
			s := list.Get(i).Message().Get(fd).String()
			if s == "" || seen[s] {
				ok = false
				break
			}
			seen[s] = true
			keys[i] = "[" + strconv.Quote(s) + "]"
		}
		if ok {
			return keys
		}
	}
	for i := range keys {
		keys[i] = fmt.Sprintf("[%d]", i)
	}
	return keys
}

// scalar converts one scalar field value to a JSON value: numbers, strings, booleans,
// enums by name, bytes as hex text.
func scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) *structpb.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return structpb.NewBoolValue(v.Bool())
	case protoreflect.StringKind:
		return structpb.NewStringValue(v.String())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return structpb.NewStringValue(string(ev.Name()))
		}
		return structpb.NewNumberValue(float64(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return structpb.NewNumberValue(float64(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return structpb.NewNumberValue(float64(v.Uint()))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return structpb.NewNumberValue(v.Float())
	case protoreflect.BytesKind:
		return structpb.NewStringValue(fmt.Sprintf("%x", v.Bytes()))
	}
	return structpb.NewStringValue(v.String())
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// snake spells a message name in snake case: UpstreamGroup → "upstream_group".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
