package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
)

// restChecks guards the REST façade before grpc-gateway sees a request:
//
//   - a body larger than limit answers 413 (the gateway would turn the read error into a
//     400), whether Content-Length says so up front or the body runs over while read;
//   - a query parameter the OpenAPI document does not list for the method and path answers
//     400 naming it (the gateway would ignore it, so `POST /api/v1/upstreams?dry_run=true`
//     on an API without dry_run would commit);
//   - PUT /api/v1/config (or /api/v1/pricing) with an empty body answers 400: an empty
//     document is a truncated file or a mistake, never a request to delete everything (send
//     {} with force=true, or []).
type restChecks struct {
	next   http.Handler
	limit  int64
	routes []queryRoute
	log    *slog.Logger
}

// queryRoute is one operation of the OpenAPI document: its method, its path template cut
// into segments, and the query parameters it accepts.
type queryRoute struct {
	method string
	segs   []string
	params []string
}

// newRESTChecks builds the checks from the OpenAPI document doc.
func newRESTChecks(next http.Handler, limit int64, doc []byte, log *slog.Logger) (*restChecks, error) {
	var d struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("read openapi document: %w", err)
	}
	c := &restChecks{next: next, limit: limit, log: log}
	for path, ops := range d.Paths {
		for method, op := range ops {
			r := queryRoute{method: strings.ToUpper(method), segs: strings.Split(path, "/")}
			for _, p := range op.Parameters {
				if p.In == "query" {
					r.params = append(r.params, p.Name)
				}
			}
			slices.Sort(r.params)
			c.routes = append(c.routes, r)
		}
	}
	if len(c.routes) == 0 {
		return nil, errors.New("read openapi document: no paths")
	}
	return c, nil
}

// bodyTooLargeKey is the context key of the flag set when a body ran over the limit.
type bodyTooLargeKey struct{}

// bodyTooLarge reports whether the body of r ran over the REST limit while the gateway
// read it.
func bodyTooLarge(r *http.Request) bool {
	hit, ok := r.Context().Value(bodyTooLargeKey{}).(*atomic.Bool)
	return ok && hit.Load()
}

// flaggedBody records in hit that the limited reader under it refused to read more.
type flaggedBody struct {
	io.ReadCloser
	hit *atomic.Bool
}

func (b flaggedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		b.hit.Store(true)
	}
	return n, err
}

// wholeBodies are the PUTs whose body replaces a whole part of the config, where an empty
// body is refused (not taken for "nothing"), with what to send instead.
var wholeBodies = map[string]string{
	"/api/v1/config":  "takes the whole config; to delete everything, send {} with force=true",
	"/api/v1/pricing": "takes the whole price list; to delete every price, send []",
}

func (c *restChecks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > c.limit {
		c.tooLarge(w)
		return
	}
	if msg := c.unknownQuery(r); msg != "" {
		writeError(w, http.StatusBadRequest, msg, "invalid_argument", nil, c.log)
		return
	}
	hit := &atomic.Bool{}
	r = r.WithContext(context.WithValue(r.Context(), bodyTooLargeKey{}, hit))
	r.Body = flaggedBody{ReadCloser: http.MaxBytesReader(w, r.Body, c.limit), hit: hit}
	if hint, ok := wholeBodies[r.URL.Path]; ok && r.Method == http.MethodPut {
		body, err := io.ReadAll(r.Body)
		switch {
		case hit.Load():
			c.tooLarge(w)
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, "read request body: "+err.Error(), "invalid_argument", nil, c.log)
			return
		case len(bytes.TrimSpace(body)) == 0:
			writeError(w, http.StatusBadRequest, "empty request body: PUT "+r.URL.Path+" "+hint, "invalid_argument", nil, c.log)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	c.next.ServeHTTP(w, r)
}

// tooLarge answers 413 naming the limit.
func (c *restChecks) tooLarge(w http.ResponseWriter) {
	writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", c.limit),
		"resource_exhausted", nil, c.log)
}

// unknownQuery returns the error message for the first query parameter r's operation does
// not accept, or "" when all are accepted or no operation matches (the gateway then answers
// 404 or 405 itself).
func (c *restChecks) unknownQuery(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	route := c.match(r.Method, r.URL.Path)
	if route == nil {
		return ""
	}
	keys := make([]string, 0, len(r.URL.Query()))
	for k := range r.URL.Query() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name := k
		if i := strings.IndexByte(k, '['); i > 0 && strings.HasSuffix(k, "]") {
			name = k[:i] // map entries: labels[key]=value
		}
		if slices.Contains(route.params, name) {
			continue
		}
		accepted := "none"
		if len(route.params) > 0 {
			accepted = strings.Join(route.params, ", ")
		}
		return fmt.Sprintf("unknown query parameter %q for %s %s (accepted: %s)", k, r.Method, r.URL.Path, accepted)
	}
	return ""
}

// match finds the operation of method and path; literal segments beat parameters.
func (c *restChecks) match(method, path string) *queryRoute {
	segs := strings.Split(path, "/")
	var best *queryRoute
	bestLiterals := -1
	for i := range c.routes {
		rt := &c.routes[i]
		if rt.method != method || len(rt.segs) != len(segs) {
			continue
		}
		literals, ok := 0, true
		for j, t := range rt.segs {
			if matched, literal := matchSegment(t, segs[j]); !matched {
				ok = false
				break
			} else if literal {
				literals++
			}
		}
		if ok && literals > bestLiterals {
			best, bestLiterals = rt, literals
		}
	}
	return best
}

// matchSegment matches one path segment against a template segment: a literal, a
// parameter "{x}", or a parameter with a custom verb "{x}:verb".
func matchSegment(tmpl, seg string) (matched, literal bool) {
	if !strings.HasPrefix(tmpl, "{") {
		return tmpl == seg, true
	}
	end := strings.IndexByte(tmpl, '}')
	if end < 0 {
		return false, false
	}
	if verb := tmpl[end+1:]; verb != "" {
		return strings.HasSuffix(seg, verb) && len(seg) > len(verb), false
	}
	return seg != "", false
}
