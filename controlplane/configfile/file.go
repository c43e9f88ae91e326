package configfile

import (
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// File is a configuration file decoded: the model as written and where each of its values
// sits (a line and column, or the environment variable that replaced it), so that errors
// found later, by validation, by a proxy's compile step or by a control plane, can point
// into the file. A File is immutable and safe for concurrent use.
type File struct {
	name      string
	root      *yaml.Node // the document's top node; nil for an empty document
	config    *configv1.Config
	pos       map[string]position
	overrides []Override
}

// Parse decodes data, the bytes of the file called name (name is used in messages only:
// "<stdin>" for standard input). It is the one way in for every reader of a file, so a
// file is read once and what is checked is what is used. On failure it returns the
// errors.Join of every *Error found. Data larger than MaxFileBytes is refused unparsed.
func Parse(name string, data []byte) (*File, error) {
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, err
	}
	c, pos, err := decodeTree(name, root, nil)
	if err != nil {
		return nil, err
	}
	return &File{name: name, root: root, config: c, pos: pos}, nil
}

// Name returns the name given to Parse.
func (f *File) Name() string { return f.name }

// Config returns a copy of the configuration as written: no defaults applied, environment
// overrides (WithEnv) included.
func (f *File) Config() *configv1.Config {
	return proto.Clone(f.config).(*configv1.Config)
}

// Overrides returns the values WithEnv replaced, in the order of their variables' names;
// nil when none.
func (f *File) Overrides() []Override {
	return append([]Override(nil), f.overrides...)
}

// Validate returns a copy of the configuration with defaults applied, or every fault of it
// located in the file (see Locate). The errors keep their *validate.FieldError, so
// validate.Errors and errors.Is(err, validate.ErrReference) work on the result.
func (f *File) Validate() (*configv1.Config, error) {
	c := f.Config()
	validate.ApplyDefaults(c)
	if err := validate.Validate(c); err != nil {
		return nil, f.Locate(err)
	}
	return c, nil
}

// Locate prefixes every field error of err (see validate.Errors) with the file name and,
// when its field (or the nearest enclosing one) is in the file, its line and column, or
// the environment variable it came from:
//
//	config.yaml:14:19: upstream_groups[0].upstreams[0].name: upstream "x" is not defined
//	config.yaml: env LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT: http_server.forwards[0].port: ...
//
// The result is the errors.Join of the located errors, each wrapping its *FieldError.
// Locate(nil) is nil.
func (f *File) Locate(err error) error {
	if err == nil {
		return nil
	}
	fes := validate.Errors(err)
	errs := make([]error, 0, len(fes))
	for _, fe := range fes {
		errs = append(errs, f.locate(fe))
	}
	return errors.Join(errs...)
}

func (f *File) locate(fe *validate.FieldError) error {
	p, ok := lookup(f.pos, fe.Path)
	switch {
	case !ok:
		return fmt.Errorf("%s: %w", f.name, fe)
	case p.env != "":
		return fmt.Errorf("%s: env %s: %w", f.name, p.env, fe)
	default:
		return fmt.Errorf("%s:%d:%d: %w", f.name, p.line, p.column, fe)
	}
}

// lookup finds the position of path, or of its nearest ancestor that is in the file.
func lookup(pos map[string]position, path string) (position, bool) {
	for path != "" {
		if p, ok := pos[path]; ok {
			return p, true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return position{}, false
}
