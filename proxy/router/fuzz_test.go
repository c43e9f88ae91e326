package router

import (
	"net/http"
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

func FuzzMatch(f *testing.F) {
	f.Add("/api/users/:id", "/api/users/admin", "/api/users/admin", "GET", "gpt-4o")
	f.Add("/files/*", "/v1/chat/completions", "/files/a/b", "POST", "")
	f.Add("/api/{id:[0-9]+}", "/api/x", "/api/12", "PUT", "claude")
	f.Fuzz(func(t *testing.T, p1, p2, path, method, model string) {
		r, err := New([]Rule{
			{Path: p1, Target: 1},
			{Path: p2, Target: 2, Model: "*", Methods: []string{"POST"}},
		}, 0)
		if err != nil {
			return
		}
		target, pattern := r.Match(method, path, http.Header{"X": {path}}, model)
		switch {
		case target == 0 && pattern != "":
			t.Fatalf("default target with pattern %q", pattern)
		case target == 1 && pattern != p1, target == 2 && pattern != p2:
			t.Fatalf("target %d with pattern %q", target, pattern)
		}
		// A static pattern always matches its own path (rule 1 has no conditions, and a
		// static pattern outranks everything but another static rule for the same path
		// declared earlier, which does not exist here).
		pat, _ := ParsePattern(p1)
		if pat.IsStatic() {
			if target, _ := r.Match(method, p1, nil, model); target != 1 {
				t.Fatalf("static pattern %q: Match(its own path) = %d; want 1", p1, target)
			}
		}
		if target == 1 && !pat.Match(path) {
			t.Fatalf("rule 1 won but %q does not match %q", p1, path)
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
		if checkGlob(glob) != nil || strings.Contains(name, "/") || strings.Contains(glob, "/") {
			return
		}
		want, _ := path.Match(glob, name)
		if got := globMatch(glob, name); got != want {
			t.Fatalf("globMatch(%q, %q) = %v; path.Match says %v", glob, name, got, want)
		}
	})
}
