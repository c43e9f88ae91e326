// Package configfile reads and writes the YAML configuration file: LLMProxy's config.yaml
// schema plus our extensions, mapped onto the protobuf model (gen/llmproxy/config/v1) by one
// generic walker over the message descriptors, so a field added to config.proto is
// understood here without code.
//
// Decoding is strict: unknown keys, duplicate keys and values of the wrong type are errors,
// each with file:line:column, and every such error is reported at once. Parse reads a file
// once into a File, which keeps where every value sits: File.Validate applies the defaults
// and validates, File.Locate points any later error (a proxy's compile step, a control
// plane's answer) into the file, and File.WithEnv applies LLMProxy's environment overrides.
//
// The functions are pure and safe for concurrent use.
package configfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Error is one fault found while decoding a file, at a position of it. It unwraps to
// validate.ErrInvalid.
type Error struct {
	// File is the file name given to Decode or Load.
	File string
	// Line and Column locate the offending key or value, 1-based; 0 when unknown.
	Line, Column int
	// Env, when not empty, names the environment variable the offending value came from
	// (see File.WithEnv); Line and Column are then 0.
	Env string
	// Path is the field path of the value, e.g. "upstreams[0].breaker.threshold"; empty at
	// the top level or when the fault is in the YAML syntax itself.
	Path string
	// Msg describes the fault, including the path where it helps.
	Msg string
}

// Error returns "file:line:column: msg" (or "file:line: msg", or "file: msg" when the
// position is not known, or "file: env NAME: msg" for a value from the environment).
func (e *Error) Error() string {
	switch {
	case e.Env != "":
		return fmt.Sprintf("%s: env %s: %s", e.File, e.Env, e.Msg)
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
}

// Unwrap returns validate.ErrInvalid: a file that does not decode is an invalid argument.
func (e *Error) Unwrap() error { return validate.ErrInvalid }

// keyAliases maps, per message, an accepted key to the field it spells. LLMProxy's
// releases used both `stream` and `stream_mode` for http_client.stream.
var keyAliases = map[protoreflect.FullName]map[string]protoreflect.Name{
	(&configv1.HttpClient{}).ProtoReflect().Descriptor().FullName(): {"stream_mode": "stream"},
}

const (
	// maxNodes bounds the work on one document, aliases expanded ("billion laughs").
	maxNodes = 1 << 20
	// maxErrors bounds the errors reported for one document.
	maxErrors = 200
)

// Decode parses a YAML document into a configuration: Parse(filename, data).Config().
// filename is used in messages only. An empty document (or one holding only comments or
// null) is the empty configuration. A null value leaves its field unset. On failure it
// returns nil and the errors.Join of every *Error found.
func Decode(filename string, data []byte) (*configv1.Config, error) {
	f, err := Parse(filename, data)
	if err != nil {
		return nil, err
	}
	return f.config, nil
}

// position is where a field's value sits: a line and column of the file, or the
// environment variable that replaced it.
type position struct {
	line, column int
	env          string
}

type decoder struct {
	file  string
	errs  []error
	nodes int
	// pos maps field paths to positions, for errors found after decoding (File.Locate).
	pos map[string]position
	// env maps the nodes that File.WithEnv put in to their variable.
	env map[*yaml.Node]string
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): `)

// parseYAML reads the one YAML document of data and returns its top node, nil for an empty
// document.
func parseYAML(filename string, data []byte) (*yaml.Node, error) {
	if len(data) > MaxFileBytes {
		return nil, tooLarge(filename, int64(len(data)))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxError(filename, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, syntaxError(filename, err)
		}
		return nil, &Error{File: filename, Line: extra.Line, Column: extra.Column,
			Msg: "only one YAML document is allowed"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	return root, nil
}

// decodeTree decodes the top node root (nil: the empty configuration); env marks the nodes
// that came from the environment.
func decodeTree(filename string, root *yaml.Node, env map[*yaml.Node]string) (*configv1.Config, map[string]position, error) {
	d := &decoder{file: filename, pos: map[string]position{}, env: env}
	c := &configv1.Config{}
	if root == nil {
		return c, d.pos, nil
	}
	d.message(root, c.ProtoReflect(), "")
	if len(d.errs) > 0 {
		return nil, nil, errors.Join(d.errs...)
	}
	return c, d.pos, nil
}

// at returns where n sits.
func (d *decoder) at(n *yaml.Node) position {
	if name, ok := d.env[n]; ok {
		return position{env: name}
	}
	return position{line: n.Line, column: n.Column}
}

// syntaxError turns a YAML parser error into an *Error with its line.
func syntaxError(filename string, err error) error {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	return &Error{File: filename, Line: line, Msg: "invalid YAML: " + msg}
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	if len(d.errs) == maxErrors {
		d.errs = append(d.errs, &Error{File: d.file, Msg: "too many errors"})
	}
	if len(d.errs) > maxErrors {
		return
	}
	e := &Error{File: d.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		p := d.at(n)
		e.Line, e.Column, e.Env = p.line, p.column, p.env
	}
	d.errs = append(d.errs, e)
}

// typeError reports a value of the wrong type.
func (d *decoder) typeError(n *yaml.Node, path, want string) {
	where := path
	if where == "" {
		where = "the top level"
	}
	d.fail(n, path, "%s: expected %s, got %s", where, want, describe(n))
}

// resolve follows aliases and counts the work done.
func (d *decoder) resolve(n *yaml.Node) (*yaml.Node, bool) {
	for hops := 0; n != nil && n.Kind == yaml.AliasNode; hops++ {
		if hops > 100 {
			return nil, false
		}
		n = n.Alias
	}
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.fail(n, "", "document too large: more than %d YAML nodes, aliases expanded", maxNodes)
		}
		return nil, false
	}
	return n, n != nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool":
			return "boolean " + n.Value
		case "!!int":
			return "integer " + n.Value
		case "!!float":
			return "number " + n.Value
		case "!!str":
			return "string " + strconv.Quote(n.Value)
		default:
			return fmt.Sprintf("%s %q", n.ShortTag(), n.Value)
		}
	default:
		return "an unexpected node"
	}
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// message decodes a mapping into m.
func (d *decoder) message(n *yaml.Node, m protoreflect.Message, path string) {
	n, ok := d.resolve(n)
	if !ok || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.typeError(n, path, "a mapping")
		return
	}
	desc := m.Descriptor()
	aliases := keyAliases[desc.FullName()]
	type seenKey struct {
		key  *yaml.Node
		name string
	}
	seen := map[protoreflect.Name]seenKey{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		k, ok := d.resolve(k)
		if !ok {
			return
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain names, got %s%s", describe(k), in(path))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.fail(k, path, "merge keys (<<) are not supported%s", in(path))
			continue
		}
		name := protoreflect.Name(k.Value)
		if alias, ok := aliases[k.Value]; ok {
			name = alias
		}
		fd := desc.Fields().ByName(name)
		if fd == nil || !name.IsValid() {
			d.fail(k, path, "unknown key %q%s%s", k.Value, in(path), validKeys(desc, aliases))
			continue
		}
		if prev, dup := seen[name]; dup {
			if prev.name != k.Value {
				d.fail(k, path, "%q and %q%s set the same field; use only %q", prev.name, k.Value, in(path), string(name))
			} else {
				d.fail(k, path, "duplicate key %q%s (first at line %d)", k.Value, in(path), prev.key.Line)
			}
			continue
		}
		seen[name] = seenKey{key: k, name: k.Value}
		d.field(v, m, fd, joinPath(path, string(fd.Name())))
	}
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

// validKeys lists the keys of a message when there are few enough to help.
func validKeys(desc protoreflect.MessageDescriptor, aliases map[string]protoreflect.Name) string {
	fields := desc.Fields()
	if fields.Len() > 10 {
		return ""
	}
	names := make([]string, 0, fields.Len())
	for i := 0; i < fields.Len(); i++ {
		names = append(names, string(fields.Get(i).Name()))
	}
	for a := range aliases {
		names = append(names, a)
	}
	return " (valid keys: " + strings.Join(names, ", ") + ")"
}

// field decodes the value v of the field fd of m.
func (d *decoder) field(v *yaml.Node, m protoreflect.Message, fd protoreflect.FieldDescriptor, path string) {
	d.pos[path] = d.at(v)
	v, ok := d.resolve(v)
	if !ok || isNull(v) {
		return
	}
	switch {
	case fd.IsMap():
		if v.Kind != yaml.MappingNode {
			d.typeError(v, path, "a mapping")
			return
		}
		mp := m.Mutable(fd).Map()
		first := map[string]int{}
		for i := 0; i+1 < len(v.Content); i += 2 {
			kn, ok := d.resolve(v.Content[i])
			if !ok {
				return
			}
			if kn.Kind != yaml.ScalarNode || isNull(kn) {
				d.fail(kn, path, "%s: keys must be strings, got %s", path, describe(kn))
				continue
			}
			if line, dup := first[kn.Value]; dup {
				d.fail(kn, path, "duplicate key %q in %s (first at line %d)", kn.Value, path, line)
				continue
			}
			first[kn.Value] = kn.Line
			kp := fmt.Sprintf("%s[%q]", path, kn.Value)
			key, ok := d.scalar(kn, fd.MapKey(), kp)
			if !ok {
				continue
			}
			vn := v.Content[i+1]
			d.pos[kp] = d.at(vn)
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				elem := mp.NewValue()
				d.message(vn, elem.Message(), kp)
				mp.Set(key.MapKey(), elem)
				continue
			}
			vn, ok = d.resolve(vn)
			if !ok {
				return
			}
			if isNull(vn) {
				d.typeError(vn, kp, kindName(fd.MapValue()))
				continue
			}
			if val, ok := d.scalar(vn, fd.MapValue(), kp); ok {
				mp.Set(key.MapKey(), val)
			}
		}
	case fd.IsList():
		if v.Kind != yaml.SequenceNode {
			d.typeError(v, path, "a list")
			return
		}
		l := m.Mutable(fd).List()
		for i, item := range v.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			d.pos[ip] = d.at(item)
			if fd.Kind() == protoreflect.MessageKind {
				elem := l.NewElement()
				d.message(item, elem.Message(), ip)
				l.Append(elem)
				continue
			}
			item, ok := d.resolve(item)
			if !ok {
				return
			}
			if isNull(item) {
				d.typeError(item, ip, kindName(fd))
				continue
			}
			if val, ok := d.scalar(item, fd, ip); ok {
				l.Append(val)
			}
		}
	case fd.Kind() == protoreflect.MessageKind:
		d.message(v, m.Mutable(fd).Message(), path)
	default:
		if val, ok := d.scalar(v, fd, path); ok {
			m.Set(fd, val)
		}
	}
}

// kindName names the YAML type a scalar field takes.
func kindName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return "a string"
	case protoreflect.BoolKind:
		return "a boolean (true or false)"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return "an integer 0-4294967295"
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "a non-negative integer"
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return "a 32-bit integer"
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return "an integer"
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		return "a number"
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		names := make([]string, 0, values.Len())
		for i := 0; i < values.Len(); i++ {
			names = append(names, string(values.Get(i).Name()))
		}
		return "one of " + strings.Join(names, ", ")
	default:
		return fd.Kind().String()
	}
}

// scalar converts a scalar node to the value of a field of kind fd.Kind().
func (d *decoder) scalar(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) (protoreflect.Value, bool) {
	want := kindName(fd)
	if n.Kind != yaml.ScalarNode {
		d.typeError(n, path, want)
		return protoreflect.Value{}, false
	}
	if fd.Kind() == protoreflect.StringKind {
		// Any scalar is taken as its text: `value: 2023-06-01` and `retry_on: [502]` mean
		// the strings the user wrote.
		if !utf8.ValidString(n.Value) {
			d.fail(n, path, "%s: string is not valid UTF-8", path)
			return protoreflect.Value{}, false
		}
		return protoreflect.ValueOfString(n.Value), true
	}
	var x any
	if err := n.Decode(&x); err != nil {
		d.typeError(n, path, want)
		return protoreflect.Value{}, false
	}
	bad := func() (protoreflect.Value, bool) {
		d.typeError(n, path, want)
		return protoreflect.Value{}, false
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if b, ok := x.(bool); ok {
			return protoreflect.ValueOfBool(b), true
		}
		return bad()
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		var f float64
		switch v := x.(type) {
		case int:
			f = float64(v)
		case int64:
			f = float64(v)
		case uint64:
			f = float64(v)
		case float64:
			f = v
		default:
			return bad()
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			d.fail(n, path, "%s: expected a finite number, got %s", path, n.Value)
			return protoreflect.Value{}, false
		}
		if fd.Kind() == protoreflect.FloatKind {
			return protoreflect.ValueOfFloat32(float32(f)), true
		}
		return protoreflect.ValueOfFloat64(f), true
	case protoreflect.EnumKind:
		if s, ok := x.(string); ok {
			if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
				return protoreflect.ValueOfEnum(ev.Number()), true
			}
		}
		return bad()
	}
	// Integers.
	var neg bool
	var mag uint64
	switch v := x.(type) {
	case int:
		neg, mag = v < 0, absU64(int64(v))
	case int64:
		neg, mag = v < 0, absU64(v)
	case uint64:
		mag = v
	default:
		return bad()
	}
	outOfRange := func() (protoreflect.Value, bool) {
		d.fail(n, path, "%s: %s is out of range (expected %s)", path, n.Value, strings.TrimPrefix(want, "a "))
		return protoreflect.Value{}, false
	}
	switch fd.Kind() {
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if neg {
			return outOfRange()
		}
		if mag > math.MaxUint32 {
			return outOfRange()
		}
		return protoreflect.ValueOfUint32(uint32(mag)), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if neg {
			return outOfRange()
		}
		return protoreflect.ValueOfUint64(mag), true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if (!neg && mag > math.MaxInt32) || (neg && mag > -math.MinInt32) {
			return outOfRange()
		}
		if neg {
			return protoreflect.ValueOfInt32(int32(-int64(mag))), true
		}
		return protoreflect.ValueOfInt32(int32(mag)), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if (!neg && mag > math.MaxInt64) || (neg && mag > 1<<63) {
			return outOfRange()
		}
		if neg {
			return protoreflect.ValueOfInt64(int64(-mag)), true
		}
		return protoreflect.ValueOfInt64(int64(mag)), true
	}
	return bad()
}

func absU64(v int64) uint64 {
	if v < 0 {
		return uint64(-(v + 1)) + 1
	}
	return uint64(v)
}

// sortedMapKeys returns the keys of a protoreflect map in order.
func sortedMapKeys(mp protoreflect.Map) []protoreflect.MapKey {
	keys := make([]protoreflect.MapKey, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}
