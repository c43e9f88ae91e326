package configfile

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Encode writes c as YAML in the file's schema: snake_case keys in the order of
// config.proto, only the fields that are set (defaults applied by ApplyDefaults are set
// fields), map keys sorted. Decode(Encode(c)) is proto.Equal to c. Encode(nil) is "{}\n".
// It fails on a string that is not valid UTF-8 or a number that is not finite.
func Encode(c *configv1.Config) ([]byte, error) {
	if c == nil {
		c = &configv1.Config{}
	}
	root, err := encodeMessage(c.ProtoReflect(), "")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

func encodeMessage(m protoreflect.Message, path string) (*yaml.Node, error) {
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		p := joinPath(path, string(fd.Name()))
		v, err := encodeField(m.Get(fd), fd, p)
		if err != nil {
			return nil, err
		}
		out.Content = append(out.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(fd.Name())}, v)
	}
	return out, nil
}

func encodeField(v protoreflect.Value, fd protoreflect.FieldDescriptor, path string) (*yaml.Node, error) {
	switch {
	case fd.IsMap():
		out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		mp := v.Map()
		for _, k := range sortedMapKeys(mp) {
			kp := fmt.Sprintf("%s[%q]", path, k.String())
			kn, err := encodeScalar(k.Value(), fd.MapKey(), kp)
			if err != nil {
				return nil, err
			}
			vn, err := encodeValue(mp.Get(k), fd.MapValue(), kp)
			if err != nil {
				return nil, err
			}
			out.Content = append(out.Content, kn, vn)
		}
		return out, nil
	case fd.IsList():
		out := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		l := v.List()
		for i := 0; i < l.Len(); i++ {
			n, err := encodeValue(l.Get(i), fd, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out.Content = append(out.Content, n)
		}
		return out, nil
	default:
		return encodeValue(v, fd, path)
	}
}

func encodeValue(v protoreflect.Value, fd protoreflect.FieldDescriptor, path string) (*yaml.Node, error) {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		return encodeMessage(v.Message(), path)
	}
	return encodeScalar(v, fd, path)
}

func encodeScalar(v protoreflect.Value, fd protoreflect.FieldDescriptor, path string) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.ScalarNode}
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := v.String()
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("encode config: %s: string is not valid UTF-8", path)
		}
		n.Tag, n.Value = "!!str", s
	case protoreflect.BoolKind:
		n.Tag, n.Value = "!!bool", strconv.FormatBool(v.Bool())
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("encode config: %s: number %v is not finite", path, f)
		}
		s := strconv.FormatFloat(f, 'g', -1, 64)
		if fd.Kind() == protoreflect.FloatKind {
			s = strconv.FormatFloat(f, 'g', -1, 32)
		}
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		n.Tag, n.Value = "!!float", s
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByNumber(v.Enum())
		if ev == nil {
			return nil, fmt.Errorf("encode config: %s: unknown enum value %d", path, v.Enum())
		}
		n.Tag, n.Value = "!!str", string(ev.Name())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n.Tag, n.Value = "!!int", strconv.FormatInt(v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n.Tag, n.Value = "!!int", strconv.FormatUint(v.Uint(), 10)
	default:
		return nil, fmt.Errorf("encode config: %s: unsupported field kind %s", path, fd.Kind())
	}
	return n, nil
}
