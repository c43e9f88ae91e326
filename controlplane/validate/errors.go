package validate

import (
	"errors"
	"fmt"
)

// Kinds of field errors. A *FieldError unwraps to its Kind, so errors.Is(err, ErrDuplicate)
// holds for a duplicate name anywhere inside a joined Validate error.
var (
	// ErrInvalid marks a bad value: out of range, malformed, missing or of an unknown kind.
	ErrInvalid = errors.New("invalid value")
	// ErrDuplicate marks a resource name, or a listener address, used twice: a conflict
	// between resources, possibly with one already stored. An item listed twice inside one
	// resource (a group's member, a forward's route path, a retry_on word) is ErrInvalid:
	// the document itself is wrong.
	ErrDuplicate = errors.New("duplicate")
	// ErrReference marks a reference to something that is not defined.
	ErrReference = errors.New("dangling reference")
	// ErrInUse marks the removal of something other parts still reference. Validate itself
	// reports the referrers' side (ErrReference); callers that delete use ErrInUse.
	ErrInUse = errors.New("in use")
	// ErrNotSupported marks a field whose feature the component checking it does not
	// implement (see CheckSupported).
	ErrNotSupported = errors.New("not supported")
)

// FieldError is one fault of a configuration: where it is, what kind it is, and a message
// for people.
type FieldError struct {
	// Path locates the field, e.g. `upstream_groups[1].upstreams[0].name`; empty for the
	// configuration as a whole.
	Path string
	// Kind is one of ErrInvalid, ErrDuplicate, ErrReference, ErrInUse, ErrNotSupported.
	Kind error
	// Msg says what is wrong, e.g. `upstream "x" is not defined`.
	Msg string
}

// Error returns "<path>: <msg>", or just the message when the path is empty.
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Unwrap returns the Kind, so errors.Is(fe, ErrDuplicate) works.
func (e *FieldError) Unwrap() error { return e.Kind }

// Is reports whether target is the error's Kind. It makes errors.Is independent of
// whether Kind is itself wrapped.
func (e *FieldError) Is(target error) bool { return e.Kind != nil && errors.Is(e.Kind, target) }

// Errors flattens err (typically the errors.Join returned by Validate, Load or ResolveEnv,
// possibly wrapped with fmt.Errorf("...: %w")) into its field errors, in order. An error in
// the tree that is not a *FieldError is returned as a FieldError with an empty Path, Kind
// ErrInvalid and its text as Msg. Errors(nil) is nil.
func Errors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		switch x := e.(type) {
		case nil:
		case *FieldError:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, inner := range x.Unwrap() {
				walk(inner)
			}
		default:
			var fe *FieldError
			if !errors.As(e, &fe) {
				out = append(out, &FieldError{Kind: ErrInvalid, Msg: e.Error()})
				return
			}
			if u, ok := e.(interface{ Unwrap() error }); ok {
				walk(u.Unwrap())
				return
			}
			out = append(out, fe)
		}
	}
	walk(err)
	return out
}

// errorList collects field errors during a check.
type errorList struct{ errs []error }

func (l *errorList) add(path string, kind error, format string, args ...any) {
	l.errs = append(l.errs, &FieldError{Path: path, Kind: kind, Msg: fmt.Sprintf(format, args...)})
}

func (l *errorList) err() error { return errors.Join(l.errs...) }
