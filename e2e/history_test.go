package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of change safety: the revision history, diffs, rollback, and writes
// that wait for the fleet.

// histRevision is one entry of GET /api/v1/revisions.
type histRevision struct {
	Revision   string   `json:"revision"`
	CreateTime string   `json:"create_time"`
	Operation  string   `json:"operation"`
	Resources  []string `json:"resources"`
	Message    string   `json:"message"`
	Actor      string   `json:"actor"`
}

// histDiff is a ConfigDiff as REST returns it.
type histDiff struct {
	BaseRevision string `json:"base_revision"`
	Revision     string `json:"revision"`
	Resources    []struct {
		Kind   string `json:"kind"`
		Name   string `json:"name"`
		Action string `json:"action"`
		Fields []struct {
			Path   string `json:"path"`
			Old    any    `json:"old"`
			New    any    `json:"new"`
			Secret bool   `json:"secret"`
		} `json:"fields"`
	} `json:"resources"`
}

// fields lists "kind/name path" for every field of d.
func (d histDiff) fields() []string {
	var out []string
	for _, r := range d.Resources {
		for _, f := range r.Fields {
			out = append(out, r.Kind+"/"+r.Name+" "+f.Path)
		}
	}
	return out
}

// histRollout is a Rollout as REST returns it.
type histRollout struct {
	Applied  int      `json:"applied"`
	Proxies  int      `json:"proxies"`
	TimedOut bool     `json:"timed_out"`
	Summary  string   `json:"summary"`
	Lagging  []string `json:"lagging"`
	Refused  []struct {
		NodeID string `json:"node_id"`
		Error  string `json:"error"`
	} `json:"refused"`
}

// revisions returns the history through cp, newest first.
func (c *xdsCP) revisions(t *testing.T) []histRevision {
	t.Helper()
	var out struct {
		Revisions []histRevision `json:"revisions"`
	}
	c.do(t, http.MethodGet, "/api/v1/revisions", "", &out)
	return out.Revisions
}

// histLiteralToken is an upstream credential stored in the control plane (not an env
// reference): rollback must restore it from the history, since clients only see it
// redacted.
const histLiteralToken = "sk-e2e-history-literal-token"

const histConfig = `{
  "http_server": {"forwards": [{"name": "main", "address": "127.0.0.1", "port": %d, "default_group": "ga",
    "routing": [{"path": "/v1/chat/completions", "target_group": "ga"}]}]},
  "upstreams": [{"name": "up-a", "url": %q, "auth": {"type": "bearer", "token": %q}}],
  "upstream_groups": [{"name": "ga", "upstreams": [{"name": "up-a"}]}]
}`

// TestHistoryRollback, on SQLite and on PostgreSQL: three writes with messages are listed
// newest first with their operation, resources and message; the diff between the first
// and the third names exactly the changed fields; a rollback to the first makes a new
// revision whose export is byte for byte the first's, and the literal upstream token it
// restores reaches the upstream through a proxy. The history survives a restart and, on
// PostgreSQL, is the same through a second replica.
func TestHistoryRollback(t *testing.T) {
	eachStore(t, testHistoryRollback)
}

func testHistoryRollback(t *testing.T, store string, replicas bool) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, store, grpcAddr, httpAddr, "--history", "50")

	first := cp.write(t, http.MethodPut, "/api/v1/config?message=first", fmt.Sprintf(histConfig, port, mocks["a"].URL, histLiteralToken))
	var export1 json.RawMessage
	cp.do(t, http.MethodGet, "/api/v1/config", "", &export1)
	cp.write(t, http.MethodPost, "/api/v1/upstreams?message=second", fmt.Sprintf(`{"name":"up-b","url":%q}`, mocks["b"].URL))
	third := cp.write(t, http.MethodPut, "/api/v1/upstreams/up-a?message=third",
		fmt.Sprintf(`{"url":%q,"auth":{"type":"bearer","token":"sk-e2e-another-token"}}`, mocks["a"].URL))
	if first != 1 || third != 3 {
		t.Fatalf("revisions %d and %d; want 1 and 3", first, third)
	}

	type entry struct{ rev, op, resources, msg string }
	var got []entry
	for _, r := range cp.revisions(t) {
		got = append(got, entry{r.Revision, r.Operation, strings.Join(r.Resources, ","), r.Message})
		if r.CreateTime == "" || r.Actor != "anonymous" {
			t.Errorf("revision %s: create_time %q, actor %q", r.Revision, r.CreateTime, r.Actor)
		}
	}
	want := []entry{
		{"3", "UpdateUpstream", "upstream/up-a", "third"},
		{"2", "CreateUpstream", "upstream/up-b", "second"},
		{"1", "ApplyConfig", "forward/main,upstream/up-a,upstream_group/ga", "first"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("history:\n got %v\nwant %v", got, want)
	}

	var d histDiff
	cp.do(t, http.MethodGet, "/api/v1/revisions/3/diff?base=1", "", &d)
	if want := []string{"upstream/up-a auth.token", "upstream/up-b name", "upstream/up-b url"}; !slices.Equal(d.fields(), want) {
		t.Errorf("diff 1..3 names %q; want exactly %q", d.fields(), want)
	}
	for _, r := range d.Resources {
		for _, f := range r.Fields {
			if f.Path == "auth.token" && (!f.Secret || f.Old != nil || f.New != nil) {
				t.Errorf("the changed token shows as %+v; want only secret: true", f)
			}
		}
	}
	var rev1 struct {
		Config json.RawMessage `json:"config"`
	}
	cp.do(t, http.MethodGet, "/api/v1/revisions/1", "", &rev1)
	if strings.Contains(string(rev1.Config), histLiteralToken) || !strings.Contains(string(rev1.Config), "<redacted>") {
		t.Errorf("revision 1 as served: %s; want its token redacted", rev1.Config)
	}

	var rb struct {
		Revision string `json:"revision"`
	}
	cp.do(t, http.MethodPost, "/api/v1/revisions/1:rollback?expected_revision=3", "", &rb)
	if rb.Revision != "4" {
		t.Fatalf("rollback made revision %s; want 4", rb.Revision)
	}
	var export4 json.RawMessage
	cp.do(t, http.MethodGet, "/api/v1/config", "", &export4)
	if string(export4) != string(export1) {
		t.Errorf("export after the rollback differs from revision 1's:\n--- 1\n%s\n--- 4\n%s", export1, export4)
	}
	if h := cp.revisions(t)[0]; h.Operation != "RollbackRevision" || h.Message != "rollback to revision 1" {
		t.Errorf("newest entry %+v; want the rollback", h)
	}

	// The literal token came back from the store: a proxy sends it upstream.
	p := xdsStartProxy(t, grpcAddr, "p1", t.TempDir())
	xdsWaitRevision(t, 4, p)
	forward := fmt.Sprintf("http://127.0.0.1:%d", port)
	if got := xdsUpstreamOf(t, forward); got != "a" {
		t.Fatalf("answered by %q; want a", got)
	}
	recs := mocks["a"].requests(t)
	if len(recs) == 0 || recs[len(recs)-1].Header.Get("Authorization") != "Bearer "+histLiteralToken {
		t.Fatalf("upstream saw %v; want the literal token of revision 1", recs)
	}

	// The history survives a restart of the control plane.
	before := cp.revisions(t)
	cp.proc.Stop(xdsWait)
	cp = xdsStartCP(t, store, grpcAddr, httpAddr)
	if after := cp.revisions(t); !slices.EqualFunc(before, after, func(a, b histRevision) bool {
		return a.Revision == b.Revision && a.Message == b.Message && a.CreateTime == b.CreateTime
	}) || len(after) != 4 {
		t.Errorf("history after a restart:\n got %+v\nwant %+v", after, before)
	}
	if !replicas {
		return
	}
	// A second replica on the same PostgreSQL serves the same history and adds to it.
	cp2 := xdsStartCP(t, store, harness.FreeAddr(t), harness.FreeAddr(t))
	cp2.write(t, http.MethodPost, "/api/v1/upstreams?message=from%20the%20second%20replica", fmt.Sprintf(`{"name":"up-c","url":%q}`, mocks["b"].URL))
	h1, h2 := cp.revisions(t), cp2.revisions(t)
	if len(h1) != 5 || !slices.EqualFunc(h1, h2, func(a, b histRevision) bool {
		return a.Revision == b.Revision && a.Message == b.Message && a.Operation == b.Operation
	}) || h1[0].Message != "from the second replica" {
		t.Errorf("histories of two replicas:\n cp1 %+v\n cp2 %+v", h1, h2)
	}
}

// TestWriteWaitsForFleet: a write with wait answers once the proxies applied it ("applied
// on 2 of 2"); with a third proxy that refuses the new revision (it lacks an environment
// variable the config now references), the answer names that proxy and its reason.
func TestWriteWaitsForFleet(t *testing.T) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, xdsBootstrap, map[string]any{
		"Port": port, "A": mocks["a"].URL, "B": mocks["b"].URL,
	}))
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, "sqlite:"+t.TempDir()+"/cp.db", grpcAddr, httpAddr, "--bootstrap", boot)
	const key = "E2E_WAIT_UPSTREAM_KEY"
	xdsStartProxy(t, grpcAddr, "p1", t.TempDir(), key+"=sk-from-env")
	xdsStartProxy(t, grpcAddr, "p2", t.TempDir(), key+"=sk-from-env")
	cp.waitFleet(t, 1, "p1", "p2")

	var resp struct {
		Revision string      `json:"revision"`
		Fleet    histRollout `json:"fleet"`
	}
	cp.do(t, http.MethodPut, "/api/v1/forwards/main/routes/"+xdsRouteID("/v1/chat/completions")+"?wait=20s&message=to%20gb",
		`{"target_group":"gb"}`, &resp)
	if f := resp.Fleet; f.Applied != 2 || f.Proxies != 2 || f.TimedOut || f.Summary != "applied on 2 of 2 proxies" {
		t.Fatalf("route change with wait: %+v; want applied on 2 of 2 proxies", f)
	}
	if s := cp.proxies(t); s["p1"].AckedRevision != resp.Revision || s["p2"].AckedRevision != resp.Revision {
		t.Errorf("fleet status %+v; want both at revision %s when the answer came", s, resp.Revision)
	}

	// p3 lacks the variable: it applies revision 2, then refuses the one that needs it.
	xdsStartProxy(t, grpcAddr, "p3", t.TempDir())
	cp.waitFleet(t, 2, "p3")
	cp.do(t, http.MethodPut, "/api/v1/upstreams/up-b?wait=20s",
		fmt.Sprintf(`{"url":%q,"auth":{"type":"bearer","token":"${env:%s}"}}`, mocks["b"].URL, key), &resp)
	f := resp.Fleet
	if f.Applied != 2 || f.Proxies != 3 || f.TimedOut || len(f.Refused) != 1 || f.Refused[0].NodeID != "p3" ||
		!strings.Contains(f.Refused[0].Error, key) {
		t.Fatalf("write refused by p3: %+v; want applied on 2 of 3, refused by p3 naming %s", f, key)
	}
	if !strings.HasPrefix(f.Summary, "applied on 2 of 3 proxies; refused by p3 (revision 3): ") {
		t.Errorf("summary %q", f.Summary)
	}
}
