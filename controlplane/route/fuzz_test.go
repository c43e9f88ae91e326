package route

import (
	"path"
	"strings"
	"testing"
)

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{
		"/", "/v1/chat/completions", "/api/users/:id", "/api/items/{id:[0-9]+}", "/api/*/docs",
		"/files/*", "/p/{n:[0-9]{3}}", "/a/{id", "/a//b", "/a/b*", "", "x", "/{a:\\}}", "/a/",
	} {
		f.Add(s, "/api/items/42")
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			if p != nil {
				t.Fatalf("ParsePattern(%q) returned a pattern and an error", pattern)
			}
			return
		}
		if p.String() != pattern {
			t.Fatalf("String() = %q; want %q", p.String(), pattern)
		}
		p.Match(path) // must not panic
		if p.IsStatic() && !p.Match(pattern) {
			t.Fatalf("static pattern %q does not match itself", pattern)
		}
	})
}

// FuzzGlob checks the model glob against path.Match, which it must equal on names
// without "/" (where the two differ by design).
func FuzzGlob(f *testing.F) {
	f.Add("gpt-4*", "gpt-4o")
	f.Add("[a-c]?*", "bert")
	f.Add(`\*[^x]`, "*y")
	f.Fuzz(func(t *testing.T, glob, name string) {
		if func() bool { _, err := ParseGlob(glob); return err != nil }() || strings.Contains(name, "/") || strings.Contains(glob, "/") {
			return
		}
		want, _ := path.Match(glob, name)
		if got := globMatch(glob, name); got != want {
			t.Fatalf("globMatch(%q, %q) = %v; path.Match says %v", glob, name, got, want)
		}
	})
}
