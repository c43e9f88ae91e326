// Package route is the syntax and meaning of a route's conditions, as the configuration
// writes them: path patterns (routing[].path) and model globs (routing[].model). It is part
// of the configuration contract: the control plane checks routes with it and every proxy
// matches requests with it, so the two cannot disagree on what a pattern means. It is a
// leaf: it imports only the standard library.
//
// # Patterns
//
// A pattern starts with "/" and is a list of segments separated by "/":
//
//	/v1/chat/completions          static segments, matched byte for byte
//	/api/users/:id                ":name" matches one non-empty segment
//	/api/items/{id:[0-9]+}        "{name:regex}" matches one segment the regex matches whole
//	/api/{id}                     "{name}" is the same as ":name"
//	/api/*/docs                   "*" in the middle matches one non-empty segment
//	/files/*                      "*" as the last segment matches the rest of the path
//
// A segment that starts with ":" or "{" is a parameter; ":" elsewhere in a segment is an
// ordinary character ("/v1/models/gemini:generateContent" is static). "*" must be a whole
// segment. Parameter names are letters, digits and "_", unique within a pattern. Regexes use
// Go's RE2 syntax and are anchored to the whole segment; they are compiled once, by
// ParsePattern.
//
// # Slashes
//
// Matching is exact about slashes: "/v1/models" and "/v1/models/" are different paths, and
// a pattern ending in "/" matches only paths ending in "/". Empty segments ("//") are not
// allowed in patterns, and parameters and middle wildcards never match an empty segment.
// A trailing "*" matches everything after its slash, including nothing: "/files/*" matches
// "/files/", "/files/a" and "/files/a/b" but not "/files"; "/*" matches every path.
//
// Paths are matched as given: the caller passes the request's path without its query
// (http.Request.URL.Path). The empty path is treated as "/".
//
// # Priority
//
// When several patterns match a path, the most specific wins, in this order: a fully static
// pattern; the pattern with more static segments; more regex parameters; fewer wildcards;
// more segments (longer). ComparePriority orders dynamic patterns so; among equals the rule
// declared first wins (the router's part).
//
// # Model globs
//
// A model glob has path.Match's syntax: "*" any run of characters, "?" one character,
// "[...]" a class ("[^...]" negated, "a-z" ranges), "\" escapes. Unlike path.Match, "*" and
// "?" also match "/": model names such as "openai/gpt-4o" are one name, not a path.
package route

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
)

// ErrInvalidPattern is what every error of ParsePattern is (errors.Is).
var ErrInvalidPattern = errors.New("invalid route pattern")

// PatternError describes why a route pattern was refused.
type PatternError struct {
	// Pattern is the pattern as given.
	Pattern string
	// Reason says what is wrong, e.g. `unclosed "{" at offset 5`.
	Reason string
	// Err is the underlying error, e.g. from regexp.Compile; may be nil.
	Err error
}

// Error returns `invalid route pattern "<pattern>": <reason>`.
func (e *PatternError) Error() string {
	return fmt.Sprintf("invalid route pattern %q: %s", e.Pattern, e.Reason)
}

// Is reports whether target is ErrInvalidPattern.
func (e *PatternError) Is(target error) bool { return target == ErrInvalidPattern }

// Unwrap returns the underlying error, if any.
func (e *PatternError) Unwrap() error { return e.Err }

type segKind uint8

const (
	segStatic segKind = iota // literal text
	segParam                 // :name or {name}
	segRegex                 // {name:re}
	segAny                   // * in the middle: one segment
	segRest                  // * at the end: the rest
)

type segment struct {
	kind segKind
	lit  string         // segStatic: the text
	name string         // segParam, segRegex: the parameter name
	re   *regexp.Regexp // segRegex: anchored regex
}

// Pattern is a parsed route pattern. It is immutable and safe for concurrent use.
type Pattern struct {
	raw     string
	segs    []segment
	prefix  []string // the leading static segments' text
	nStatic int
	nRegex  int
	nParam  int
	nWild   int
}

// String returns the pattern as given to ParsePattern.
func (p *Pattern) String() string { return p.raw }

// IsStatic reports whether the pattern has no parameters and no wildcards, so it matches
// exactly one path: itself.
func (p *Pattern) IsStatic() bool { return p.nStatic == len(p.segs) }

// Params returns the parameter names in order of appearance (wildcards have none).
func (p *Pattern) Params() []string {
	var names []string
	for _, s := range p.segs {
		if s.kind == segParam || s.kind == segRegex {
			names = append(names, s.name)
		}
	}
	return names
}

// StaticPrefix returns the text of the pattern's leading static segments: "/v1/:x/*" gives
// ["v1"], "/v1/models/" gives ["v1", "models", ""] (a trailing slash is an empty last
// segment). The caller must not modify the slice.
func (p *Pattern) StaticPrefix() []string { return p.prefix }

// ComparePriority orders two patterns by specificity, the more specific first (negative
// when a outranks b): more static segments, more regex parameters, fewer wildcards, more
// segments. It returns 0 for patterns of equal rank; the rule declared first wins those. A
// fully static pattern matches only itself and outranks every other pattern matching that
// path, which callers check before ranking the others with ComparePriority.
func ComparePriority(a, b *Pattern) int {
	if c := cmp.Compare(b.nStatic, a.nStatic); c != 0 {
		return c
	}
	if c := cmp.Compare(b.nRegex, a.nRegex); c != 0 {
		return c
	}
	if c := cmp.Compare(a.nWild, b.nWild); c != 0 {
		return c
	}
	return cmp.Compare(len(b.segs), len(a.segs))
}

// Match reports whether path matches the pattern. It does not allocate.
func (p *Pattern) Match(path string) bool {
	if path == "" {
		path = "/"
	}
	if p.IsStatic() {
		return path == p.raw
	}
	return p.match(path)
}

// match walks path segment by segment without splitting it.
func (p *Pattern) match(path string) bool {
	pos := 0
	for i := range p.segs {
		s := &p.segs[i]
		if pos >= len(path) || path[pos] != '/' {
			return false
		}
		pos++
		if s.kind == segRest {
			return true
		}
		end := strings.IndexByte(path[pos:], '/')
		if end < 0 {
			end = len(path)
		} else {
			end += pos
		}
		seg := path[pos:end]
		switch s.kind {
		case segStatic:
			if seg != s.lit {
				return false
			}
		case segParam, segAny:
			if seg == "" {
				return false
			}
		case segRegex:
			if seg == "" || !s.re.MatchString(seg) {
				return false
			}
		}
		pos = end
	}
	return pos == len(path)
}

// ParsePattern parses a route pattern (see the package documentation for the syntax). The
// error, a *PatternError, names the problem: empty pattern, missing leading "/", empty
// segment, "*" not a whole segment, unclosed "{", bad or empty regex (quoted), bad or
// duplicate parameter name.
func ParsePattern(p string) (*Pattern, error) {
	fail := func(err error, format string, args ...any) (*Pattern, error) {
		return nil, &PatternError{Pattern: p, Reason: fmt.Sprintf(format, args...), Err: err}
	}
	if p == "" {
		return fail(nil, "empty pattern")
	}
	if p[0] != '/' {
		return fail(nil, `must start with "/"`)
	}
	pat := &Pattern{raw: p}
	seen := map[string]bool{}
	addName := func(name string, off int) error {
		if !validName(name) {
			if name == "" {
				return fmt.Errorf("empty parameter name at offset %d", off)
			}
			return fmt.Errorf("bad parameter name %q at offset %d (letters, digits and _ only)", name, off)
		}
		if seen[name] {
			return fmt.Errorf("duplicate parameter name %q", name)
		}
		seen[name] = true
		return nil
	}
	i := 1 // start of the current segment, just after its '/'
	for {
		if i < len(p) && p[i] == '{' {
			end, err := closingBrace(p, i)
			if err != nil {
				return fail(nil, "%s", err)
			}
			if end+1 < len(p) && p[end+1] != '/' {
				return fail(nil, `"}" at offset %d must end the segment`, end)
			}
			body := p[i+1 : end]
			name, re, hasRe := strings.Cut(body, ":")
			if err := addName(name, i+1); err != nil {
				return fail(nil, "%s", err)
			}
			if !hasRe {
				pat.segs = append(pat.segs, segment{kind: segParam, name: name})
				pat.nParam++
			} else {
				if re == "" {
					return fail(nil, "empty regex for parameter %q", name)
				}
				// Compile alone first: the error then quotes the user's text, and a regex
				// valid on its own has balanced parentheses, so the anchored form below
				// cannot be escaped by something like "a)|(b".
				if _, err := regexp.Compile(re); err != nil {
					return fail(err, "bad regex %q for parameter %q: %v", re, name, regexErrText(err))
				}
				rx, err := regexp.Compile(`^(?:` + re + `)$`)
				if err != nil {
					return fail(err, "bad regex %q for parameter %q: %v", re, name, regexErrText(err))
				}
				pat.segs = append(pat.segs, segment{kind: segRegex, name: name, re: rx})
				pat.nRegex++
			}
			i = end + 1
		} else {
			end := strings.IndexByte(p[i:], '/')
			if end < 0 {
				end = len(p)
			} else {
				end += i
			}
			seg := p[i:end]
			last := end == len(p)
			switch {
			case seg == "" && !last:
				return fail(nil, "empty segment at offset %d", i)
			case seg == "":
				// "/" alone, or a trailing slash: an empty last segment.
				pat.segs = append(pat.segs, segment{kind: segStatic})
				pat.nStatic++
			case seg == "*":
				if last {
					pat.segs = append(pat.segs, segment{kind: segRest})
				} else {
					pat.segs = append(pat.segs, segment{kind: segAny})
				}
				pat.nWild++
			case strings.Contains(seg, "*"):
				return fail(nil, `"*" must be a whole segment, got %q`, seg)
			case seg[0] == ':':
				if err := addName(seg[1:], i+1); err != nil {
					return fail(nil, "%s", err)
				}
				pat.segs = append(pat.segs, segment{kind: segParam, name: seg[1:]})
				pat.nParam++
			case strings.ContainsAny(seg, "{}"):
				return fail(nil, `"{" must start a segment and "}" end it, got %q`, seg)
			default:
				pat.segs = append(pat.segs, segment{kind: segStatic, lit: seg})
				pat.nStatic++
			}
			i = end
		}
		if i >= len(p) {
			break
		}
		i++ // skip '/'; a trailing '/' leaves an empty last segment
	}
	for _, sg := range pat.segs {
		if sg.kind != segStatic {
			break
		}
		pat.prefix = append(pat.prefix, sg.lit)
	}
	return pat, nil
}

// closingBrace returns the index of the '}' that closes the '{' at open, honouring nested
// braces (regex repetitions like {3}), backslash escapes and character classes, inside
// which braces are literal ("[{}]", "[]}]", "[^]}]"). When that finds no end, it tries
// again without classes, so that a typo such as "{id:[0-9}" gets the regex's own error
// rather than "unclosed".
func closingBrace(p string, open int) (int, error) {
	if j, ok := scanBrace(p, open, true); ok {
		return j, nil
	}
	if j, ok := scanBrace(p, open, false); ok {
		return j, nil
	}
	return 0, fmt.Errorf(`unclosed "{" at offset %d`, open)
}

func scanBrace(p string, open int, classes bool) (int, bool) {
	depth := 0
	for j := open; j < len(p); j++ {
		switch p[j] {
		case '\\':
			j++
		case '[':
			if !classes {
				break
			}
			j++
			if j < len(p) && p[j] == '^' {
				j++
			}
			if j < len(p) && p[j] == ']' {
				j++ // a leading ']' is a literal member
			}
			for ; j < len(p) && p[j] != ']'; j++ {
				if p[j] == '\\' {
					j++
				}
			}
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return j, true
			}
		}
	}
	return 0, false
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// regexErrText strips regexp's own "error parsing regexp: " prefix, which would repeat
// what the caller already says.
func regexErrText(err error) string {
	var se *syntax.Error
	if errors.As(err, &se) {
		return fmt.Sprintf("%s: `%s`", se.Code, se.Expr)
	}
	return err.Error()
}
