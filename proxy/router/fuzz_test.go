package router

import (
	"net/http"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
)

func FuzzMatch(f *testing.F) {
	f.Add("/api/users/:id", "/api/users/admin", "/api/users/admin", "GET", "gpt-4o")
	f.Add("/files/*", "/v1/chat/completions", "/files/a/b", "POST", "")
	f.Add("/api/{id:[0-9]+}", "/api/x", "/api/12", "PUT", "claude")
	f.Fuzz(func(t *testing.T, p1, p2, path, method, model string) {
		pat, err1 := route.ParsePattern(p1)
		pat2, err2 := route.ParsePattern(p2)
		if err1 != nil || err2 != nil {
			return
		}
		anyModel, _ := route.ParseGlob("*")
		r := New([]Rule{
			{Pattern: pat, Target: 1},
			{Pattern: pat2, Target: 2, Model: anyModel, Methods: []string{"POST"}},
		}, 0)
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
