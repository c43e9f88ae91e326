// Package router maps a request (method, path, headers, model) to a route target. The
// syntax and meaning of path patterns and model globs, and the priority among patterns,
// are the configuration contract's (package controlplane/route); this package finds the
// winning rule fast: one map lookup for static paths, a trie of literal prefixes for the
// others, no allocation per request.
//
// When several rules match, the winner is the most specific pattern (route.ComparePriority,
// static patterns first), then the rule declared first. A rule whose conditions (model,
// headers, methods) fail is skipped and the next candidate by priority is tried; when none
// is left the router answers the default target.
package router

import (
	"cmp"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
)

// Rule is one routing rule, as validated configuration gives it. Pattern is required; the
// other conditions are optional and all must hold for the rule to match.
type Rule struct {
	// Pattern is the rule's path pattern.
	Pattern *route.Pattern
	// Model is a glob on the request's model; nil: any model, including none. A glob never
	// matches a request without a model.
	Model *route.Glob
	// Headers are exact matches: header name (case-insensitive) to value (exact, compared
	// with each of the request's values for that name). Empty: any. Names are RFC 9110
	// tokens (validation checks them); another name never matches.
	Headers map[string]string
	// Methods are HTTP methods compared case-insensitively. Empty: any.
	Methods []string
	// Target is what Match returns when this rule wins (e.g. an index into the caller's
	// group table).
	Target int
}

type header struct {
	key   string // canonical MIME form, for direct map lookup
	value string
}

type rule struct {
	pat     *route.Pattern
	model   *route.Glob
	headers []header
	methods []string
	target  int
	order   int // declaration index
	rank    int // position among dynamic rules in priority order (0 = best)
}

// conditions reports whether the request satisfies the rule's model, header and method
// conditions. It does not allocate.
func (r *rule) conditions(method string, h http.Header, model string) bool {
	if len(r.methods) > 0 {
		ok := false
		for _, m := range r.methods {
			if strings.EqualFold(m, method) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, hd := range r.headers {
		ok := false
		for _, v := range h[hd.key] {
			if v == hd.value {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.model != nil && (model == "" || !r.model.Match(model)) {
		return false
	}
	return true
}

// Router maps requests to targets. It is immutable once built and safe for concurrent
// use; build a new one when the configuration changes.
//
// Fully static patterns are found with one map lookup. Dynamic patterns hang in a trie
// keyed by their leading literal segments ("/v1/:x/*" under "v1"); Match walks the
// request path down that trie and, at each node on the way, tries only the rules whose
// literal prefix is exactly that far, best rank first. A rule outranked by the best match
// found so far is never tried, so the result is the same as trying every rule in priority
// order, at the cost of a few map lookups.
type Router struct {
	defaultTarget int
	needsModel    bool
	// static holds fully static patterns by path, rules in declaration order.
	static map[string][]*rule
	// root is the trie of dynamic rules.
	root *node
}

// node is a trie node: the dynamic rules whose literal prefix ends here, best rank
// first, and the children by next literal segment.
type node struct {
	rules    []*rule
	children map[string]*node
}

// New builds a Router over rules; defaultTarget is what Match returns when no rule matches.
func New(rules []Rule, defaultTarget int) *Router {
	r := &Router{
		defaultTarget: defaultTarget,
		static:        map[string][]*rule{},
		root:          &node{},
	}
	var dynamic []*rule
	for i, in := range rules {
		pat := in.Pattern
		if in.Model != nil {
			r.needsModel = true
		}
		ru := &rule{pat: pat, model: in.Model, methods: in.Methods, target: in.Target, order: i}
		for name, v := range in.Headers {
			ru.headers = append(ru.headers, header{key: textproto.CanonicalMIMEHeaderKey(name), value: v})
		}
		// Map order is random; sort so that evaluation order (and cost) is stable.
		slices.SortFunc(ru.headers, func(a, b header) int { return cmp.Compare(a.key, b.key) })
		if pat.IsStatic() {
			r.static[pat.String()] = append(r.static[pat.String()], ru)
		} else {
			dynamic = append(dynamic, ru)
		}
	}
	slices.SortStableFunc(dynamic, func(a, b *rule) int { return comparePriority(a, b) })
	for rank, ru := range dynamic {
		ru.rank = rank
		n := r.root
		for _, lit := range ru.pat.StaticPrefix() {
			child := n.children[lit]
			if child == nil {
				if n.children == nil {
					n.children = map[string]*node{}
				}
				child = &node{}
				n.children[lit] = child
			}
			n = child
		}
		n.rules = append(n.rules, ru) // ranks ascend: the list stays in priority order
	}
	return r
}

// comparePriority orders dynamic rules best first: the more specific pattern, then the rule
// declared earlier.
func comparePriority(a, b *rule) int {
	if c := route.ComparePriority(a.pat, b.pat); c != 0 {
		return c
	}
	return cmp.Compare(a.order, b.order)
}

// NeedsModel reports whether some rule has a Model condition, so the caller must read the
// request body's model before calling Match.
func (r *Router) NeedsModel() bool { return r.needsModel }

// Match returns the target of the best rule (by priority) whose pattern matches path and
// whose conditions hold, and that rule's pattern; or the default target and "" when no
// rule matches. path is the request path without its query; "" is treated as "/". h may
// be nil. Match does not allocate (regexp keeps its matchers in a pool, so a regex
// parameter allocates only when the pool is cold).
func (r *Router) Match(method, path string, h http.Header, model string) (target int, pattern string) {
	if path == "" {
		path = "/"
	}
	for _, ru := range r.static[path] {
		if ru.conditions(method, h, model) {
			return ru.target, ru.pat.String()
		}
	}
	var best *rule
	n, pos := r.root, 0
	for {
		for _, ru := range n.rules {
			if best != nil && ru.rank > best.rank {
				break
			}
			if ru.pat.Match(path) && ru.conditions(method, h, model) {
				best = ru
				break
			}
		}
		if n.children == nil || pos >= len(path) || path[pos] != '/' {
			break
		}
		end := strings.IndexByte(path[pos+1:], '/')
		if end < 0 {
			end = len(path)
		} else {
			end += pos + 1
		}
		if n = n.children[path[pos+1:end]]; n == nil {
			break
		}
		pos = end
	}
	if best != nil {
		return best.target, best.pat.String()
	}
	return r.defaultTarget, ""
}
