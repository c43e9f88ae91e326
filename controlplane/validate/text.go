package validate

import (
	"sort"
	"strings"
	"unicode"
)

// choices formats a set of valid values for a message: `a, b or c`.
func choices(set []string) string {
	if len(set) == 1 {
		return set[0]
	}
	return strings.Join(set[:len(set)-1], ", ") + " or " + set[len(set)-1]
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}

// isToken reports whether s is an RFC 9110 token (header names, methods).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func strOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func u32Or(p *uint32, def uint32) uint32 {
	if p == nil {
		return def
	}
	return *p
}
