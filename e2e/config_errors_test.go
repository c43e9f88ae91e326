package e2e

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// sameErrorConfigs are bad configurations each of the three checkers must refuse with the
// same errors. The valid parts borrow from one another, so each case breaks one thing.
var sameErrorConfigs = []struct {
	name  string
	yaml  string
	paths []string // the fields at fault, in the order reported
}{
	{"dangling references", `
http_server:
  forwards:
    - {name: f, port: 3000, default_group: nowhere, routing: [{path: /v1/*, target_group: gone}]}
upstreams:
  - {name: a, url: "http://127.0.0.1:1"}
upstream_groups:
  - {name: g, upstreams: [{name: missing}]}
`, []string{"http_server.forwards[0].default_group", "http_server.forwards[0].routing[0].target_group", "upstream_groups[0].upstreams[0].name"}},
	{"duplicate names and listeners", `
http_server:
  forwards:
    - {name: f, port: 3000, default_group: g}
    - {name: f, port: 3000, default_group: g}
upstreams:
  - {name: a, url: "http://127.0.0.1:1"}
  - {name: a, url: "http://127.0.0.1:2"}
upstream_groups:
  - {name: g, upstreams: [{name: a}]}
`, []string{"http_server.forwards[1].name", "http_server.forwards[1].port", "upstreams[1].name"}},
	{"bad values", `
upstreams:
  - name: a
    url: ftp://a
    auth: {type: bearer}
    breaker: {threshold: 0}
upstream_groups:
  - name: g
    balance: {strategy: fastest}
    upstreams: [{name: a, weight: 0}]
    http_client:
      retry: {retry_on: [teapot]}
`, []string{"upstreams[0].url", "upstreams[0].auth.token", "upstreams[0].breaker.threshold",
		"upstream_groups[0].upstreams[0].weight", "upstream_groups[0].balance.strategy", "upstream_groups[0].http_client.retry.retry_on[0]"}},
	{"route pattern syntax", `
http_server:
  forwards:
    - {name: f, port: 3000, default_group: g, routing: [{path: "/v1/{id:[}", target_group: g}, {path: v1, target_group: g}]}
upstreams:
  - {name: a, url: "http://127.0.0.1:1"}
upstream_groups:
  - {name: g, upstreams: [{name: a}]}
`, []string{"http_server.forwards[0].routing[0].path", "http_server.forwards[0].routing[1].path"}},
	{"missing password, bad body timeout", `
http_server:
  forwards:
    - {name: f, port: 3000, default_group: g, timeout: {body: soon}}
upstreams:
  - {name: a, url: "http://127.0.0.1:1", auth: {type: basic, username: u}}
upstream_groups:
  - {name: g, upstreams: [{name: a}]}
`, []string{"http_server.forwards[0].timeout.body", "upstreams[0].auth.password"}},
}

// TestSameErrorsEverywhere runs llmproxyctl validate -f, llmproxy --config F --test and
// PUT /api/v1/config on a real control plane on each bad config, and checks that all three
// report the same errors: the same paths with the same messages, in the same order.
func TestSameErrorsEverywhere(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), "")
	for _, tc := range sameErrorConfigs {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := harness.WriteFile(t, "bad.yaml", tc.yaml)

			_, stderr, code := cp.ctl(t, "", "validate", "-f", path)
			if code != 4 {
				t.Errorf("llmproxyctl validate: exit %d; want 4\n%s", code, stderr)
			}
			fromCtl := located(t, path, strings.TrimSuffix(stderr, "\n"), "llmproxyctl: ")

			code, _, stderr = runProxy(t, nil, "--config", path, "--test")
			if code != 1 {
				t.Errorf("llmproxy --test: exit %d; want 1\n%s", code, stderr)
			}
			fromProxy := located(t, path, strings.TrimSuffix(stderr, "\nconfiguration is invalid\n"), "")

			f, err := configfile.Parse(path, []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			body, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(f.Config())
			if err != nil {
				t.Fatal(err)
			}
			a := cp.rest(t, "PUT", "/api/v1/config", string(body), true)
			var rest struct {
				Error struct {
					Fields []struct{ Field, Description string } `json:"fields"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(a.body), &rest); a.code != 400 || err != nil {
				t.Fatalf("PUT /api/v1/config: %d %v\n%s", a.code, err, a.body)
			}
			var fromREST []string
			for _, fv := range rest.Error.Fields {
				fromREST = append(fromREST, fv.Field+": "+fv.Description)
			}

			var paths []string
			for _, e := range fromREST {
				paths = append(paths, e[:strings.Index(e, ": ")])
			}
			if !slices.Equal(paths, tc.paths) {
				t.Errorf("PUT reports the paths\n %q; want\n %q", paths, tc.paths)
			}
			if !slices.Equal(fromCtl, fromREST) || !slices.Equal(fromProxy, fromREST) {
				t.Errorf("the errors differ:\nllmproxyctl validate:\n  %s\nllmproxy --test:\n  %s\nPUT /api/v1/config:\n  %s",
					strings.Join(fromCtl, "\n  "), strings.Join(fromProxy, "\n  "), strings.Join(fromREST, "\n  "))
			}
		})
	}
}

var errorCount = regexp.MustCompile(`^\d+ errors:$`)

// located returns the "path: message" of every error line of out, checking that each
// starts with prefix and points into the file at path ("path:LINE:COL: ").
func located(t *testing.T, path, out, prefix string) []string {
	t.Helper()
	where := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `:\d+:\d+: `)
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		l, ok := strings.CutPrefix(l, prefix)
		switch {
		case !ok:
			t.Errorf("line %q does not start with %q", l, prefix)
		case errorCount.MatchString(l):
		case !where.MatchString(l):
			t.Errorf("line %q is not located in %s", l, path)
		default:
			errs = append(errs, where.ReplaceAllString(l, ""))
		}
	}
	return errs
}
