package mockllm

import "errors"

// errSyntax reports a request body the scanner cannot read as a JSON object.
var errSyntax = errors.New("invalid JSON object")

// requestInfo holds what mockllm needs from a request body.
type requestInfo struct {
	model        []byte // the raw JSON string token of "model", quotes included; nil when absent
	stream       bool
	includeUsage bool // stream_options.include_usage
}

// scanRequest reads the top-level fields of a JSON object without reflection or allocation.
// Keys are compared as raw bytes (a key spelled with escapes does not match). It checks the
// structure it walks through, not every detail of JSON (numbers and literals are taken as runs of
// characters), which is all a fake upstream needs.
func scanRequest(b []byte) (requestInfo, error) {
	var info requestInfo
	err := scanObject(b, func(key, val []byte) error {
		switch string(key) {
		case "model":
			if len(val) > 0 && val[0] == '"' {
				info.model = val
			}
		case "stream":
			info.stream = string(val) == "true"
		case "stream_options":
			if len(val) > 0 && val[0] == '{' {
				return scanObject(val, func(k, v []byte) error {
					if string(k) == "include_usage" {
						info.includeUsage = string(v) == "true"
					}
					return nil
				})
			}
		}
		return nil
	})
	return info, err
}

// scanObject calls fn for every top-level key (without quotes) and raw value of the JSON object
// in b, which must hold that object alone (surrounding whitespace allowed).
func scanObject(b []byte, fn func(key, val []byte) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errSyntax
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return trailing(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errSyntax
		}
		ke, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[i+1 : ke-1]
		i = skipSpace(b, ke)
		if i >= len(b) || b[i] != ':' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
		ve, err := skipValue(b, i)
		if err != nil {
			return err
		}
		if err := fn(key, b[i:ve]); err != nil {
			return err
		}
		i = skipSpace(b, ve)
		if i >= len(b) {
			return errSyntax
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return trailing(b, i+1)
		default:
			return errSyntax
		}
	}
}

func trailing(b []byte, i int) error {
	if skipSpace(b, i) != len(b) {
		return errSyntax
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string token starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c < 0x20:
			return 0, errSyntax
		case c == '\\':
			i++
			if i >= len(b) {
				return 0, errSyntax
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return 0, errSyntax
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return 0, errSyntax
					}
				}
				i += 4
			default:
				return 0, errSyntax
			}
		}
	}
	return 0, errSyntax
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errSyntax
	default:
		s := i
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if i == s {
					return 0, errSyntax
				}
				return i, nil
			case '"', '{', '[', ':':
				return 0, errSyntax
			}
			i++
		}
		if i == s {
			return 0, errSyntax
		}
		return i, nil
	}
}
