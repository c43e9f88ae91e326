package router

import (
	"path"
	"unicode/utf8"
)

// checkGlob reports a syntax error in a model glob. The syntax is path.Match's: "*" any
// run of characters, "?" one character, "[...]" a class ("[^...]" negated, "a-z" ranges),
// "\" escapes.
func checkGlob(g string) error {
	_, err := path.Match(g, "")
	return err
}

// globMatch matches s against a glob already checked by checkGlob. Unlike path.Match, "*"
// and "?" also match "/": model names such as "openai/gpt-4o" or
// "meta-llama/Llama-3.1-8B" are one name, not a path, and "*" must cover them. It does
// not allocate.
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
