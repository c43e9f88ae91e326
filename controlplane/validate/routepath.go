package validate

// routePathChars refuses characters a route path can never match: a request's path holds
// no query ("?") or fragment ("#"), and no control characters. Inside a "{name:regex}"
// parameter, "?" and "#" belong to the regex and are left to the pattern parser.
func (v *validator) routePathChars(p, path string) {
	if hasControl(path) {
		v.add(p, ErrInvalid, "path contains control characters, which no request path holds")
	}
	depth := 0
	for _, c := range path {
		switch {
		case c == '{':
			depth++
		case c == '}' && depth > 0:
			depth--
		case depth == 0 && c == '?':
			v.add(p, ErrInvalid, "path must not contain \"?\": a route matches the request's path, never its query")
			return
		case depth == 0 && c == '#':
			v.add(p, ErrInvalid, "path must not contain \"#\": a request's path never holds a fragment")
			return
		}
	}
}
