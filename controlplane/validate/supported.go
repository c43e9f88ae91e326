package validate

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Feature describes something a configuration can ask for that the proxy does not implement
// (yet). Validate refuses every feature of Unsupported, so the control plane never commits a
// revision that every proxy would refuse.
type Feature struct {
	// Field is the field path without list indexes or map keys, e.g.
	// "upstream_groups.cache.enabled" or "http_server.forwards.ratelimit.scope".
	Field string
	// Value, when not empty, restricts the feature to fields holding that value, written as
	// YAML would ("true", "global", "42"); empty means any value that is set.
	Value string
	// Reason is the message reported, e.g. "response caching is not implemented".
	Reason string
}

// Unsupported returns the features the model describes but the proxy does not implement
// yet. Validate (and so the control plane, llmproxyctl validate and llmproxy --test) refuses
// them with ErrNotSupported and the field's path. The feature's implementation deletes its
// row.
func Unsupported() []Feature {
	return nil
}

var indexRE = regexp.MustCompile(`\[[^\]]*\]`)

// CheckSupported reports, as *FieldError of kind ErrNotSupported joined, every field of c
// that is set and matches one of features. It returns nil when nothing matches or features
// is empty. Example:
//
//	validate.CheckSupported(c, []validate.Feature{
//		{Field: "http_server.forwards.ratelimit.scope", Value: "global", Reason: "global rate limits need --redis"},
//	})
func CheckSupported(c *configv1.Config, features []Feature) error {
	return errors.Join(unsupported(c, features)...)
}

// unsupported is CheckSupported's list of errors.
func unsupported(c *configv1.Config, features []Feature) []error {
	if c == nil || len(features) == 0 {
		return nil
	}
	var errs errorList
	var walk func(m protoreflect.Message, prefix string)
	check := func(p string, val string) {
		generic := indexRE.ReplaceAllString(p, "")
		for _, f := range features {
			if f.Field == generic && (f.Value == "" || f.Value == val) {
				errs.add(p, ErrNotSupported, "%s", f.Reason)
			}
		}
	}
	walk = func(m protoreflect.Message, prefix string) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := joinPath(prefix, fd.TextName())
			switch {
			case fd.IsMap():
				check(p, "")
			case fd.IsList():
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					ip := fmt.Sprintf("%s[%d]", p, i)
					if fd.Kind() == protoreflect.MessageKind {
						walk(l.Get(i).Message(), ip)
					} else {
						check(ip, scalarText(fd, l.Get(i)))
					}
				}
			case fd.Kind() == protoreflect.MessageKind:
				check(p, "")
				walk(v.Message(), p)
			default:
				check(p, scalarText(fd, v))
			}
			return true
		})
	}
	walk(c.ProtoReflect(), "")
	return errs.errs
}

func scalarText(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool())
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	default:
		return fmt.Sprint(v.Interface())
	}
}
