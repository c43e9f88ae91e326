package router

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
)

// TestRoutingPriority is the priority table: for each path, the pattern that must win
// among the same rule set, declared in an order that differs from priority.
// spec is a rule as a configuration writes it.
type spec struct {
	Path, Model string
	Headers     map[string]string
	Methods     []string
	Target      int
}

// build parses specs and returns their router.
func build(tb testing.TB, specs []spec, defaultTarget int) *Router {
	tb.Helper()
	rules := make([]Rule, 0, len(specs))
	for _, sp := range specs {
		p, err := route.ParsePattern(sp.Path)
		if err != nil {
			tb.Fatal(err)
		}
		ru := Rule{Pattern: p, Headers: sp.Headers, Methods: sp.Methods, Target: sp.Target}
		if sp.Model != "" {
			if ru.Model, err = route.ParseGlob(sp.Model); err != nil {
				tb.Fatal(err)
			}
		}
		rules = append(rules, ru)
	}
	return New(rules, defaultTarget)
}

func TestRoutingPriority(t *testing.T) {
	patterns := []string{
		"/files/*",               // 0
		"/api/*/docs",            // 1
		"/api/users/:id",         // 2
		"/api/users/admin",       // 3
		"/api/items/:id",         // 4
		"/api/items/{id:[0-9]+}", // 5
		"/api/:version/users/{id:[0-9]+}/profile", // 6
		"/api/:a/:b/:c/profile",                   // 7
		"/api/users/:id/history",                  // 8
		"/api/specific-endpoint",                  // 9
		"/api/:x",                                 // 10
		"/api/*",                                  // 11
		"/api/:x/docs",                            // 12
		"/files/:name",                            // 13
		"/*",                                      // 14
		"/v1/:x/:y",                               // 15
		"/v1/*/*",                                 // 16
		"/v1/{x:v[0-9]}/*",                        // 17
		"/v1/chat/completions",                    // 18
		"/p/:a/:b",                                // 19 same rank as 20, declared first
		"/p/:c/:d",                                // 20
	}
	var rules []spec
	for i, p := range patterns {
		rules = append(rules, spec{Path: p, Target: i})
	}
	r := build(t, rules, -1)
	tests := []struct {
		path string
		want string
	}{
		{"/api/users/admin", "/api/users/admin"},                                // static beats param
		{"/api/users/42", "/api/users/:id"},                                     // 2 static > 1 static
		{"/api/items/42", "/api/items/{id:[0-9]+}"},                             // regex beats plain param
		{"/api/items/abc", "/api/items/:id"},                                    // regex fails, plain param
		{"/api/v2/users/42/profile", "/api/:version/users/{id:[0-9]+}/profile"}, // more static
		{"/api/v2/things/42/profile", "/api/:a/:b/:c/profile"},
		{"/api/users/7/history", "/api/users/:id/history"},
		{"/api/specific-endpoint", "/api/specific-endpoint"},
		{"/api/v1/docs", "/api/:x/docs"},  // param beats wildcard, same statics
		{"/api/anything", "/api/:x"},      // param beats wildcard
		{"/api/a/b/c/d", "/api/*"},        // rest
		{"/files/readme", "/files/:name"}, // param beats rest
		{"/files/a/b", "/files/*"},
		{"/files/", "/files/*"},
		{"/files", "/*"},
		{"/", "/*"},
		{"/other/x", "/*"},
		{"/v1/chat/completions", "/v1/chat/completions"},
		{"/v1/v2/x", "/v1/{x:v[0-9]}/*"}, // regex beats params
		{"/v1/chat/x", "/v1/:x/:y"},      // params beat wildcards
		{"/v1/chat/x/y", "/v1/*/*"},      // wildcards only
		{"/p/1/2", "/p/:a/:b"},           // declaration order
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			target, pattern := r.Match("GET", tt.path, nil, "")
			if pattern != tt.want {
				t.Errorf("Match(%q) pattern = %q; want %q", tt.path, pattern, tt.want)
			}
			if target < 0 || patterns[target] != pattern {
				t.Errorf("Match(%q) target = %d, pattern %q: target does not belong to the pattern", tt.path, target, pattern)
			}
		})
	}
}

func TestDefaultTarget(t *testing.T) {
	r := build(t, []spec{{Path: "/v1/chat/completions", Target: 1}, {Path: "/api/:x", Target: 2}}, 7)
	for _, p := range []string{"/", "", "/v1/embeddings", "/api/x/y", "/api"} {
		if target, pattern := r.Match("POST", p, nil, ""); target != 7 || pattern != "" {
			t.Errorf("Match(%q) = %d, %q; want 7, \"\"", p, target, pattern)
		}
	}
	empty := New(nil, 3)
	if target, pattern := empty.Match("GET", "/x", nil, "gpt"); target != 3 || pattern != "" {
		t.Errorf("empty router Match = %d, %q; want 3, \"\"", target, pattern)
	}
	if empty.NeedsModel() {
		t.Error("empty router NeedsModel() = true")
	}
}

func TestConditions(t *testing.T) {
	rules := []spec{
		{Path: "/v1/chat/completions", Model: "gpt-4*", Target: 1},
		{Path: "/v1/chat/completions", Model: "claude-?-*", Headers: map[string]string{"x-tenant": "acme"}, Target: 2},
		{Path: "/v1/chat/completions", Methods: []string{"get"}, Target: 3},
		{Path: "/v1/chat/completions", Model: "openai/*", Target: 4},
		{Path: "/v1/:endpoint/completions", Model: "llama*", Methods: []string{"POST", "PUT"}, Target: 5},
		{Path: "/v1/*", Headers: map[string]string{"X-Tenant": "beta", "X-Tier": "gold"}, Target: 6},
		{Path: "/v1/:x/:y", Model: "[a-c]*", Target: 7},
	}
	r := build(t, rules, 0)
	if !r.NeedsModel() {
		t.Error("NeedsModel() = false")
	}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		method string
		path   string
		h      http.Header
		model  string
		want   int
	}{
		{"model glob", "POST", "/v1/chat/completions", nil, "gpt-4o", 1},
		{"model glob miss falls to default", "POST", "/v1/chat/completions", nil, "gpt-3.5", 0},
		{"model and header", "POST", "/v1/chat/completions", hdr("X-Tenant", "acme"), "claude-3-opus", 2},
		{"header name case-insensitive", "POST", "/v1/chat/completions", http.Header{"X-Tenant": {"acme"}}, "claude-3-opus", 2},
		{"header value exact, falls to /v1/:x/:y", "POST", "/v1/chat/completions", hdr("X-Tenant", "ACME"), "claude-3-opus", 7},
		{"header any value", "POST", "/v1/chat/completions", hdr("X-Tenant", "other", "X-Tenant", "acme"), "claude-3-opus", 2},
		{"header missing", "POST", "/v1/chat/completions", nil, "zeta-3", 0},
		{"method case-insensitive", "GET", "/v1/chat/completions", nil, "", 3},
		{"method miss", "DELETE", "/v1/chat/completions", nil, "", 0},
		{"star crosses slash", "POST", "/v1/chat/completions", nil, "openai/gpt-4o", 4},
		{"empty model never matches glob", "POST", "/v1/chat/completions", nil, "", 0},
		{"static fails, param rule", "POST", "/v1/chat/completions", nil, "llama-3", 5},
		{"param rule method miss, falls to next", "GET", "/v1/text/completions", nil, "llama-3", 0},
		{"param rule method miss, falls to class", "GET", "/v1/text/completions", nil, "bert", 7},
		{"all headers must hold", "POST", "/v1/a/b/c", hdr("X-Tenant", "beta"), "", 0},
		{"all headers hold", "POST", "/v1/a/b/c", hdr("X-Tenant", "beta", "X-Tier", "gold"), "", 6},
		{"rest wildcard with headers beats nothing else", "POST", "/v1/a/b", hdr("X-Tenant", "beta", "X-Tier", "gold"), "zzz", 6},
		{"param beats rest when conditions hold", "POST", "/v1/a/b", hdr("X-Tenant", "beta", "X-Tier", "gold"), "cat", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := r.Match(tt.method, tt.path, tt.h, tt.model); got != tt.want {
				t.Errorf("Match(%s %s, %v, %q) = %d; want %d", tt.method, tt.path, tt.h, tt.model, got, tt.want)
			}
		})
	}
}

func TestMatchAllocs(t *testing.T) {
	r := benchRouter(t)
	h := http.Header{"X-Tenant": {"acme"}}
	cases := []struct{ name, path string }{
		{"static", "/v1/static/25/completions"},
		{"param", "/v1/param25/abc/completions"},
		{"regex", "/v1/regex25/12345"},
		{"wildcard", "/v1/wild25/a/b/c"},
		{"default", "/nowhere/at/all"},
	}
	for _, c := range cases {
		if _, p := r.Match("POST", c.path, h, "gpt-4o"); p == "" && c.name != "default" {
			t.Fatalf("%s: %q did not match", c.name, c.path)
		}
		allocs := testing.AllocsPerRun(200, func() { r.Match("POST", c.path, h, "gpt-4o") })
		if allocs != 0 {
			t.Errorf("%s: Match allocates %.1f times; want 0", c.name, allocs)
		}
	}
}

// benchRouter builds a router with 50 rules: static, param, regex and wildcard, plus
// conditions on some.
func benchRouter(tb testing.TB) *Router {
	tb.Helper()
	var rules []spec
	for i := range 20 {
		rules = append(rules, spec{Path: fmt.Sprintf("/v1/static/%d/completions", i), Target: len(rules)})
	}
	rules = append(rules, spec{Path: "/v1/static/25/completions", Model: "gpt-*", Headers: map[string]string{"x-tenant": "acme"}, Target: len(rules)})
	for i := range 10 {
		rules = append(rules, spec{Path: fmt.Sprintf("/v1/param%d/:id/completions", 20+i), Methods: []string{"POST"}, Target: len(rules)})
	}
	for i := range 10 {
		rules = append(rules, spec{Path: fmt.Sprintf("/v1/regex%d/{id:[0-9]+}", 20+i), Target: len(rules)})
	}
	for i := range 9 {
		rules = append(rules, spec{Path: fmt.Sprintf("/v1/wild%d/*", 20+i), Target: len(rules)})
	}
	if len(rules) != 50 {
		tb.Fatalf("%d rules", len(rules))
	}
	return build(tb, rules, -1)
}

func benchMatch(b *testing.B, path string) {
	r := benchRouter(b)
	h := http.Header{"X-Tenant": {"acme"}, "Content-Type": {"application/json"}}
	if _, p := r.Match("POST", path, h, "gpt-4o"); p == "" {
		b.Fatalf("%q did not match", path)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Match("POST", path, h, "gpt-4o")
	}
}

func BenchmarkMatchStatic(b *testing.B)   { benchMatch(b, "/v1/static/25/completions") }
func BenchmarkMatchParam(b *testing.B)    { benchMatch(b, "/v1/param25/abc/completions") }
func BenchmarkMatchRegex(b *testing.B)    { benchMatch(b, "/v1/regex25/12345") }
func BenchmarkMatchWildcard(b *testing.B) { benchMatch(b, "/v1/wild25/a/b/c") }

// TestMatchAgainstReference compares Match with the obvious implementation (try every
// rule in priority order) on random rule sets and paths.
func TestMatchAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	segs := []string{"v1", "v2", "chat", "a", ":p", "{r:[0-9]+}", "{s:v[0-9]}", "*", "1", ""}
	pathSegs := []string{"v1", "v2", "chat", "a", "1", "42", "x", ""}
	randPath := func(from []string, max int) string {
		var b strings.Builder
		for range 1 + rng.IntN(max) {
			b.WriteString("/")
			b.WriteString(from[rng.IntN(len(from))])
		}
		return b.String()
	}
	hits := 0
	for round := range 300 {
		var rules []spec
		var pats []*route.Pattern
		for i := range 1 + rng.IntN(12) {
			p, err := route.ParsePattern(randPath(segs, 4))
			if err != nil {
				continue
			}
			ru := spec{Path: p.String(), Target: i}
			if rng.IntN(4) == 0 {
				ru.Methods = []string{"POST"}
			}
			rules = append(rules, ru)
			pats = append(pats, p)
		}
		r := build(t, rules, -1)
		// Reference: static rules in declaration order, then dynamic by comparePriority.
		order := make([]int, len(rules))
		for i := range order {
			order[i] = i
		}
		cmpRule := func(a, b int) int {
			sa, sb := pats[a].IsStatic(), pats[b].IsStatic()
			switch {
			case sa && !sb:
				return -1
			case sb && !sa:
				return 1
			case sa && sb:
				return a - b
			}
			return comparePriority(&rule{pat: pats[a], order: a}, &rule{pat: pats[b], order: b})
		}
		slices.SortStableFunc(order, cmpRule)
		for range 30 {
			path := randPath(pathSegs, 5)
			method := []string{"GET", "POST"}[rng.IntN(2)]
			want, wantPat := -1, ""
			for _, i := range order {
				if pats[i].Match(path) && (rules[i].Methods == nil || method == "POST") {
					want, wantPat = rules[i].Target, rules[i].Path
					break
				}
			}
			got, gotPat := r.Match(method, path, nil, "")
			if want >= 0 {
				hits++
			}
			if got != want || gotPat != wantPat {
				t.Fatalf("round %d: rules %v: Match(%s %q) = %d %q; reference says %d %q",
					round, rules, method, path, got, gotPat, want, wantPat)
			}
		}
	}
	if hits < 500 {
		t.Errorf("only %d of 9000 paths matched a rule; the test exercises too little", hits)
	}
}
