package route

import (
	"path"
	"unicode/utf8"
)

// Glob is a parsed model glob (see the package documentation). It is immutable and safe
// for concurrent use.
type Glob struct{ g string }

// ParseGlob checks the syntax of a model glob; the error is path.Match's
// (path.ErrBadPattern).
func ParseGlob(g string) (*Glob, error) {
	if _, err := path.Match(g, ""); err != nil {
		return nil, err
	}
	return &Glob{g: g}, nil
}

// String returns the glob as given to ParseGlob.
func (g *Glob) String() string { return g.g }

// Match reports whether s matches the glob. Unlike path.Match, "*" and "?" also match "/":
// model names such as "openai/gpt-4o" or "meta-llama/Llama-3.1-8B" are one name, not a
// path, and "*" must cover them. It does not allocate.
func (g *Glob) Match(s string) bool { return globMatch(g.g, s) }

// globMatch matches s against a glob whose syntax is valid.
func globMatch(g, s string) bool {
	px, sx := 0, 0
	starPx, starSx := -1, 0 // last '*' seen and how far it has consumed s
	for px < len(g) || sx < len(s) {
		if px < len(g) {
			switch c := g[px]; c {
			case '*':
				starPx, starSx = px, sx
				px++
				continue
			case '?':
				if sx < len(s) {
					_, w := utf8.DecodeRuneInString(s[sx:])
					px++
					sx += w
					continue
				}
			case '[':
				if sx < len(s) {
					r, w := utf8.DecodeRuneInString(s[sx:])
					if ok, n := matchClass(g[px:], r); ok {
						px += n
						sx += w
						continue
					}
				}
			case '\\':
				if px+1 < len(g) && sx < len(s) && s[sx] == g[px+1] {
					px += 2
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		// Mismatch: let the last '*' swallow one more character and retry.
		if starPx >= 0 && starSx < len(s) {
			_, w := utf8.DecodeRuneInString(s[starSx:])
			starSx += w
			px, sx = starPx+1, starSx
			continue
		}
		return false
	}
	return true
}

// matchClass matches r against the class that starts g ("[...]") and returns whether it
// matched and the class's length in bytes.
func matchClass(g string, r rune) (bool, int) {
	i := 1
	negate := false
	if i < len(g) && g[i] == '^' {
		negate = true
		i++
	}
	matched := false
	readChar := func() rune {
		if g[i] == '\\' {
			i++
		}
		c, w := utf8.DecodeRuneInString(g[i:])
		i += w
		return c
	}
	for i < len(g) && g[i] != ']' {
		lo := readChar()
		hi := lo
		if i < len(g) && g[i] == '-' {
			i++
			hi = readChar()
		}
		if lo <= r && r <= hi {
			matched = true
		}
	}
	return matched != negate, i + 1
}
