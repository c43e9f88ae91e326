package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// fieldPaths lists "kind/name path" of every field of a diff.
func fieldPaths(d *adminv1.ConfigDiff) []string {
	var out []string
	for _, r := range d.GetResources() {
		for _, f := range r.GetFields() {
			out = append(out, r.GetKind()+"/"+r.GetName()+" "+f.GetPath())
		}
	}
	return out
}

func TestHistoryListGetDiff(t *testing.T) {
	e := newEnv(t, "tok", nil)
	ctx := e.ctx(t)
	e.seed(t, base()) // revision 1, operation "Seed"

	if _, err := e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "b",
		Upstream: &configv1.Upstream{Url: "https://b2.example.com"}, Message: "move b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.UpdateRoute(ctx, &adminv1.UpdateRouteRequest{Name: "f", Id: admin.RouteID("/v1/chat/completions"),
		Route: &configv1.Route{TargetGroup: "g1", Methods: []string{"POST"}}, Message: "POST only"}); err != nil {
		t.Fatal(err)
	}
	rotated := secretUpstream("a", "sk-a-rotated")
	if _, err := e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "a", Upstream: rotated, Message: "rotate"}); err != nil {
		t.Fatal(err)
	}

	list, err := e.client.ListRevisions(ctx, &adminv1.ListRevisionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		rev                      uint64
		op, resources, msg, actr string
	}
	var got []entry
	for _, r := range list.GetRevisions() {
		got = append(got, entry{r.GetRevision(), r.GetOperation(), strings.Join(r.GetResources(), ","), r.GetMessage(), r.GetActor()})
		if r.GetCreateTime() == nil {
			t.Errorf("revision %d has no create_time", r.GetRevision())
		}
	}
	want := []entry{
		{4, "UpdateUpstream", "upstream/a", "rotate", "admin"},
		{3, "UpdateRoute", "forward/f", "POST only", "admin"},
		{2, "UpdateUpstream", "upstream/b", "move b", "admin"},
		{1, "Seed", "forward/f,upstream/a,upstream/b,upstream_group/g1", "", ""},
	}
	if !slices.Equal(got, want) || list.GetRevision() != 4 || list.GetNextPageToken() != "" {
		t.Errorf("ListRevisions = %+v (current %d, next %q)\nwant %+v", got, list.GetRevision(), list.GetNextPageToken(), want)
	}

	// Pages of two.
	p1, err := e.client.ListRevisions(ctx, &adminv1.ListRevisionsRequest{PageSize: 2})
	if err != nil || len(p1.Revisions) != 2 || p1.Revisions[0].Revision != 4 || p1.NextPageToken == "" {
		t.Fatalf("page 1: %v, %v", p1, err)
	}
	p2, err := e.client.ListRevisions(ctx, &adminv1.ListRevisionsRequest{PageSize: 2, PageToken: p1.NextPageToken})
	if err != nil || len(p2.Revisions) != 2 || p2.Revisions[0].Revision != 2 || p2.Revisions[1].Revision != 1 || p2.NextPageToken != "" {
		t.Fatalf("page 2: %v, %v", p2, err)
	}
	_, err = e.client.ListRevisions(ctx, &adminv1.ListRevisionsRequest{PageToken: "x"})
	wantCode(t, err, codes.InvalidArgument, "page_token")

	// A revision's config, secrets redacted.
	r1, err := e.client.GetRevision(ctx, &adminv1.GetRevisionRequest{Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := protojson.Marshal(r1); strings.Contains(string(b), "sk-a-secret") || r1.GetConfig().GetUpstreams()[1].GetUrl() != "https://b.example.com" {
		t.Errorf("GetRevision(1) = %s; want the first config, redacted", b)
	}
	_, err = e.client.GetRevision(ctx, &adminv1.GetRevisionRequest{Revision: 9})
	wantCode(t, err, codes.NotFound, "revision 9 is not in the history")

	// Diff between the first and the last names exactly the changed fields.
	d, err := e.client.DiffRevisions(ctx, &adminv1.DiffRevisionsRequest{Revision: 4, Base: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	wantPaths := []string{
		`forward/f routing["/v1/chat/completions"].methods`,
		"upstream/a auth.token",
		"upstream/b url",
	}
	if got := fieldPaths(d); !slices.Equal(got, wantPaths) || d.BaseRevision != 1 || d.Revision != 4 {
		t.Errorf("diff 1..4: %q (base %d, rev %d); want %q", got, d.BaseRevision, d.Revision, wantPaths)
	}
	if b, _ := protojson.Marshal(d); strings.Contains(string(b), "sk-a-") {
		t.Errorf("diff leaks a secret: %s", b)
	}
	for _, r := range d.Resources {
		for _, f := range r.Fields {
			if f.Path == "auth.token" && (!f.Secret || f.Old != nil || f.New != nil) {
				t.Errorf("rotated token: %v; want secret with no values", f)
			}
			if f.Path == "url" && (f.Old.GetStringValue() != "https://b.example.com" || f.New.GetStringValue() != "https://b2.example.com") {
				t.Errorf("url: %v", f)
			}
		}
	}
	// Default base: the revision before.
	d, err = e.client.DiffRevisions(ctx, &adminv1.DiffRevisionsRequest{Revision: 3})
	if err != nil || !slices.Equal(fieldPaths(d), []string{`forward/f routing["/v1/chat/completions"].methods`}) || d.BaseRevision != 2 {
		t.Errorf("diff 3: %v, %v", d, err)
	}
	// Base 0 is the empty config: everything added.
	d, err = e.client.DiffRevisions(ctx, &adminv1.DiffRevisionsRequest{Revision: 1, Base: proto.Uint64(0)})
	if err != nil || len(d.Resources) != 4 || d.Resources[0].Action != "added" {
		t.Errorf("diff 1 from empty: %v, %v", d, err)
	}
	_, err = e.client.DiffRevisions(ctx, &adminv1.DiffRevisionsRequest{Revision: 4, Base: proto.Uint64(7)})
	wantCode(t, err, codes.NotFound, "base 7")
}

func TestHistoryActorWithoutAuth(t *testing.T) {
	e := newEnv(t, "", nil)
	if _, err := e.client.CreateUpstream(e.ctx(t), &adminv1.CreateUpstreamRequest{Upstream: upstream("a")}); err != nil {
		t.Fatal(err)
	}
	list, err := e.client.ListRevisions(e.ctx(t), &adminv1.ListRevisionsRequest{})
	if err != nil || len(list.Revisions) != 1 || list.Revisions[0].Actor != "anonymous" {
		t.Fatalf("history without admin auth: %v, %v; want actor anonymous", list, err)
	}
}

// TestDryRunEveryWrite: every write with dry_run runs its checks, answers what would be and
// stores nothing.
func TestDryRunEveryWrite(t *testing.T) {
	e := newEnv(t, "", nil)
	ctx := e.ctx(t)
	cfg := base()
	cfg.UpstreamGroups = append(cfg.UpstreamGroups, group("spare", "b"))
	rev := e.seed(t, cfg)
	routeID := admin.RouteID("/v1/chat/completions")
	type answer interface {
		proto.Message
		GetDryRun() bool
		GetRevision() uint64
		GetDiff() *adminv1.ConfigDiff
	}
	calls := []struct {
		name string
		call func() (answer, error)
		want string // a "kind/name" the diff must name
	}{
		{"CreateUpstream", func() (answer, error) {
			return e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("c"), DryRun: true})
		}, "upstream/c"},
		{"UpdateUpstream", func() (answer, error) {
			return e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "b", Upstream: upstream("b2"), DryRun: true})
		}, ""},
		{"DeleteUpstream", func() (answer, error) {
			return e.client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: "b", DryRun: true})
		}, ""},
		{"CreateUpstreamGroup", func() (answer, error) {
			return e.client.CreateUpstreamGroup(ctx, &adminv1.CreateUpstreamGroupRequest{UpstreamGroup: group("g9", "b"), DryRun: true})
		}, "upstream_group/g9"},
		{"UpdateUpstreamGroup", func() (answer, error) {
			return e.client.UpdateUpstreamGroup(ctx, &adminv1.UpdateUpstreamGroupRequest{Name: "spare", UpstreamGroup: group("spare", "a"), DryRun: true})
		}, "upstream_group/spare"},
		{"PatchUpstreamGroup", func() (answer, error) {
			return e.client.PatchUpstreamGroup(ctx, &adminv1.PatchUpstreamGroupRequest{Name: "g1", Upstreams: []*configv1.UpstreamRef{{Name: "b"}}, DryRun: true})
		}, "upstream_group/g1"},
		{"DeleteUpstreamGroup", func() (answer, error) {
			return e.client.DeleteUpstreamGroup(ctx, &adminv1.DeleteUpstreamGroupRequest{Name: "spare", DryRun: true})
		}, "upstream_group/spare"},
		{"CreateForward", func() (answer, error) {
			return e.client.CreateForward(ctx, &adminv1.CreateForwardRequest{Forward: forward("f2", 3001, "g1"), DryRun: true})
		}, "forward/f2"},
		{"UpdateForward", func() (answer, error) {
			return e.client.UpdateForward(ctx, &adminv1.UpdateForwardRequest{Name: "f", Forward: forward("f", 3002, "g1"), DryRun: true})
		}, "forward/f"},
		{"DeleteForward", func() (answer, error) {
			return e.client.DeleteForward(ctx, &adminv1.DeleteForwardRequest{Name: "f", DryRun: true})
		}, "forward/f"},
		{"CreateRoute", func() (answer, error) {
			return e.client.CreateRoute(ctx, &adminv1.CreateRouteRequest{Name: "f", Route: &configv1.Route{Path: "/v1/x", TargetGroup: "g1"}, DryRun: true})
		}, "forward/f"},
		{"UpdateRoute", func() (answer, error) {
			return e.client.UpdateRoute(ctx, &adminv1.UpdateRouteRequest{Name: "f", Id: routeID, Route: &configv1.Route{TargetGroup: "spare"}, DryRun: true})
		}, "forward/f"},
		{"DeleteRoute", func() (answer, error) {
			return e.client.DeleteRoute(ctx, &adminv1.DeleteRouteRequest{Name: "f", Id: routeID, DryRun: true})
		}, "forward/f"},
		{"ApplyConfig", func() (answer, error) {
			c := base()
			c.Upstreams[1].Url = "https://b3.example.com"
			c.Upstreams[0].Auth.Token = "<redacted>"
			return e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: c, DryRun: true})
		}, "upstream/b"},
		{"RollbackRevision", func() (answer, error) {
			return e.client.RollbackRevision(ctx, &adminv1.RollbackRevisionRequest{Revision: rev, DryRun: true})
		}, ""},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.call()
			if c.name == "UpdateUpstream" {
				// The body's name must match the path's: the same refusal as a real write.
				wantCode(t, err, codes.InvalidArgument, "upstream.name")
				return
			}
			if c.name == "DeleteUpstream" {
				wantCode(t, err, codes.FailedPrecondition, `upstream group "spare"`)
				return
			}
			if err != nil {
				t.Fatalf("dry run: %v", err)
			}
			if !got.GetDryRun() || got.GetRevision() != rev || got.GetDiff().GetRevision() != 0 || got.GetDiff().GetBaseRevision() != rev {
				t.Errorf("answer %v; want dry_run at revision %d", got, rev)
			}
			var names []string
			for _, r := range got.GetDiff().GetResources() {
				names = append(names, r.GetKind()+"/"+r.GetName())
			}
			if c.want != "" && !slices.Contains(names, c.want) {
				t.Errorf("diff names %v; want %s", names, c.want)
			}
			if now, stored := e.stored(t); now != rev || !proto.Equal(stored, cfg) {
				t.Errorf("dry run stored revision %d", now)
			}
		})
	}
}

func TestApplyGuardsMassDeletion(t *testing.T) {
	e := newEnv(t, "", nil)
	ctx := e.ctx(t)
	cfg := base()
	cfg.Upstreams = append(cfg.Upstreams, upstream("c"), upstream("d"))
	e.seed(t, cfg)

	// Half of the upstreams at once is allowed.
	half := proto.Clone(cfg).(*configv1.Config)
	half.Upstreams = half.Upstreams[:2]
	if _, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: half, DryRun: true}); err != nil {
		t.Fatalf("deleting half: %v", err)
	}
	// More than half is refused, naming what would go.
	most := proto.Clone(cfg).(*configv1.Config)
	most.Upstreams = most.Upstreams[:1]
	_, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: most})
	wantCode(t, err, codes.FailedPrecondition, `3 of 4 upstreams ("b", "c", "d")`, "force=true")
	// An empty config too.
	_, err = e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: &configv1.Config{}})
	wantCode(t, err, codes.FailedPrecondition, `1 of 1 forwards ("f")`, `1 of 1 routes ("/v1/chat/completions" in forward "f")`)
	if rev, _ := e.stored(t); rev != 1 {
		t.Fatalf("a refused apply stored revision %d", rev)
	}
	// Forced, it goes through.
	resp, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: &configv1.Config{}, Force: true, Message: "start over"})
	if err != nil || resp.Revision != 2 {
		t.Fatalf("forced apply: %v, %v", resp, err)
	}
	if _, stored := e.stored(t); len(stored.GetUpstreams()) != 0 {
		t.Errorf("forced empty apply left %v", stored)
	}
}

func TestRollback(t *testing.T) {
	e := newEnv(t, "", nil)
	ctx := e.ctx(t)
	first := e.seed(t, base())
	_, firstCfg := e.stored(t)
	if _, err := e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "a", Upstream: secretUpstream("a", "sk-a-second")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("c")}); err != nil {
		t.Fatal(err)
	}

	_, err := e.client.RollbackRevision(ctx, &adminv1.RollbackRevisionRequest{Revision: first, ExpectedRevision: proto.Uint64(2)})
	wantCode(t, err, codes.Aborted)
	_, err = e.client.RollbackRevision(ctx, &adminv1.RollbackRevisionRequest{Revision: 42})
	wantCode(t, err, codes.NotFound, "revision 42")
	_, err = e.client.RollbackRevision(ctx, &adminv1.RollbackRevisionRequest{})
	wantCode(t, err, codes.InvalidArgument, "revision")

	resp, err := e.client.RollbackRevision(ctx, &adminv1.RollbackRevisionRequest{Revision: first, ExpectedRevision: proto.Uint64(3)})
	if err != nil || resp.Revision != 4 {
		t.Fatalf("rollback: %v, %v", resp, err)
	}
	// The stored config is the first one, its secret included (from the store, not the
	// client, which only ever saw it redacted).
	if _, stored := e.stored(t); !proto.Equal(stored, firstCfg) {
		t.Errorf("after rollback:\n got %v\nwant %v", stored, firstCfg)
	}
	var resources []string
	for _, r := range resp.Diff.GetResources() {
		resources = append(resources, r.Kind+"/"+r.Name+" "+r.Action)
	}
	if want := []string{"upstream/a changed", "upstream/c removed"}; !slices.Equal(resources, want) {
		t.Errorf("rollback diff %v; want %v", resources, want)
	}
	list, err := e.client.ListRevisions(ctx, &adminv1.ListRevisionsRequest{PageSize: 1})
	if err != nil || list.Revisions[0].Operation != "RollbackRevision" || list.Revisions[0].Message != "rollback to revision 1" {
		t.Errorf("history after rollback: %v, %v", list, err)
	}
}

// liveFleet is a fleet whose status the test changes, signalling every change.
type liveFleet struct {
	mu      sync.Mutex
	proxies map[string]*adminv1.ProxyStatus
	changed chan struct{}
}

func newLiveFleet(nodes ...string) *liveFleet {
	f := &liveFleet{proxies: map[string]*adminv1.ProxyStatus{}, changed: make(chan struct{})}
	for _, n := range nodes {
		f.proxies[n] = &adminv1.ProxyStatus{NodeId: n, Connected: true}
	}
	return f
}

func (f *liveFleet) Proxies() []*adminv1.ProxyStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*adminv1.ProxyStatus
	for _, p := range f.proxies {
		out = append(out, proto.Clone(p).(*adminv1.ProxyStatus))
	}
	slices.SortFunc(out, func(a, b *adminv1.ProxyStatus) int { return strings.Compare(a.NodeId, b.NodeId) })
	return out
}

func (f *liveFleet) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *liveFleet) set(node string, edit func(*adminv1.ProxyStatus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	edit(f.proxies[node])
	close(f.changed)
	f.changed = make(chan struct{})
}

// pollOnly hides liveFleet's Changed: a Fleet that is not a FleetWatcher.
type pollOnly struct{ f *liveFleet }

func (p pollOnly) Proxies() []*adminv1.ProxyStatus { return p.f.Proxies() }

func TestWaitForFleet(t *testing.T) {
	fleet := newLiveFleet("p1", "p2", "p3")
	fleet.set("p3", func(p *adminv1.ProxyStatus) { p.Connected = false }) // not counted
	e := newEnv(t, "", fleet)
	ctx := e.ctx(t)
	e.seed(t, base())

	// The proxies answer revision 2 once it is committed: p1 applies it, p2 refuses it.
	watch := e.store.Watch(ctx)
	go func() {
		for rev := range watch {
			if rev == 2 {
				fleet.set("p1", func(p *adminv1.ProxyStatus) { p.AckedRevision = 2 })
				fleet.set("p2", func(p *adminv1.ProxyStatus) { p.LastNackRevision, p.LastNackError = 2, "missing ${env:KEY}" })
				return
			}
		}
	}()
	resp, err := e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("c"), Wait: "30s"})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetFleet()
	if r.GetApplied() != 1 || r.GetProxies() != 2 || r.GetTimedOut() || len(r.GetLagging()) != 0 ||
		len(r.GetRefused()) != 1 || r.Refused[0].NodeId != "p2" || r.Refused[0].Error != "missing ${env:KEY}" {
		t.Errorf("rollout %v; want applied on 1 of 2, p2 refused", r)
	}
	if want := "applied on 1 of 2 proxies; refused by p2 (revision 2): missing ${env:KEY}"; r.GetSummary() != want {
		t.Errorf("summary %q; want %q", r.GetSummary(), want)
	}

	// Nobody answers revision 3: the answer comes at the deadline, naming the laggards.
	resp, err = e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("d"), Wait: "300ms"})
	if err != nil {
		t.Fatal(err)
	}
	r = resp.GetFleet()
	if !r.GetTimedOut() || r.GetApplied() != 0 || !slices.Equal(r.GetLagging(), []string{"p1", "p2"}) || !strings.Contains(r.GetSummary(), "not yet applied on p1, p2") {
		t.Errorf("rollout %v; want a timeout with p1 and p2 lagging", r)
	}

	// A fleet that cannot signal changes is re-read until the proxies answer.
	polled := newLiveFleet("q1")
	pe := newEnv(t, "", pollOnly{polled})
	pe.seed(t, base())
	go func() {
		for rev := range pe.store.Watch(ctx) {
			if rev == 2 {
				polled.set("q1", func(p *adminv1.ProxyStatus) { p.AckedRevision = 2 })
				return
			}
		}
	}()
	resp, err = pe.client.CreateUpstream(pe.ctx(t), &adminv1.CreateUpstreamRequest{Upstream: upstream("c"), Wait: "30s"})
	if err != nil || resp.GetFleet().GetSummary() != "applied on 1 of 1 proxies" || resp.GetFleet().GetTimedOut() {
		t.Errorf("polled fleet: %v, %v; want applied on 1 of 1", resp.GetFleet(), err)
	}

	// Without wait there is no rollout; a bad wait is refused.
	resp, err = e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("e")})
	if err != nil || resp.Fleet != nil {
		t.Errorf("no wait: %v, %v", resp, err)
	}
	_, err = e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("f"), Wait: "soon"})
	wantCode(t, err, codes.InvalidArgument, "wait")
	_, err = e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("f"), Wait: "1s", DryRun: true})
	wantCode(t, err, codes.InvalidArgument, "wait", "dry run")
}

// TestRESTWrites checks the REST rules of writes: query parameters, dry_run, empty and
// oversized bodies, and the history endpoints.
func TestRESTWrites(t *testing.T) {
	e := newEnv(t, "", newLiveFleet())
	e.seed(t, base())
	api := e.rest + "/api/v1"
	tests := []struct {
		name, method, path, body string
		want                     int
		bodyHas                  []string
	}{
		{"unknown query parameter", "POST", "/upstreams?dryrun=true", `{"name":"c","url":"https://c.example.com"}`, 400,
			[]string{`unknown query parameter \"dryrun\" for POST /api/v1/upstreams`, "dry_run", "expected_revision", "message", "wait"}},
		{"query parameter on a read", "GET", "/upstreams?verbose=1", "", 400, []string{`\"verbose\"`, "accepted: none"}},
		{"body field in the query", "PUT", "/upstreams/b?url=https://x", `{"url":"https://b.example.com"}`, 400, []string{`\"url\"`}},
		{"create dry run", "POST", "/upstreams?dry_run=true", `{"name":"c","url":"https://c.example.com"}`, 200,
			[]string{`"dry_run":true`, `"revision":"1"`, `"kind":"upstream"`, `"name":"c"`}},
		{"empty config body", "PUT", "/config", "", 400, []string{"empty request body", "force=true"}},
		{"blank config body", "PUT", "/config", " \n", 400, []string{"empty request body"}},
		{"empty config document", "PUT", "/config", "{}", 409, []string{"would delete"}},
		{"create with message", "POST", "/upstreams?message=add%20c", `{"name":"c","url":"https://c.example.com"}`, 201, []string{`"revision":"2"`}},
		{"delete waiting", "DELETE", "/upstreams/c?wait=1s", "", 200, []string{`"revision":"3"`, `"summary":"applied on 0 of 0 proxies"`}},
		{"history", "GET", "/revisions?page_size=2", "", 200, []string{`"operation":"DeleteUpstream"`, `"message":"add c"`, `"next_page_token":"2"`}},
		{"revision", "GET", "/revisions/1", "", 200, []string{`"info":{"revision":"1"`, `"<redacted>"`}},
		{"diff", "GET", "/revisions/2/diff?base=0", "", 200, []string{`"action":"added"`, `"revision":"2"`}},
		{"diff of a missing revision", "GET", "/revisions/99/diff", "", 404, []string{"revision 99 is not in the history"}},
		{"rollback", "POST", "/revisions/2:rollback?expected_revision=3&message=undo", "", 200, []string{`"revision":"4"`, `"action":"added"`}},
		{"rollback unknown parameter", "POST", "/revisions/2:rollback?force=true", "", 400, []string{`\"force\"`}},
		{"forced empty config", "PUT", "/config?force=true", "{}", 200, []string{`"revision":"5"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := restCall(t, tt.method, api+tt.path, tt.body, "")
			if code != tt.want {
				t.Fatalf("%s %s: got %d %s; want %d", tt.method, tt.path, code, body, tt.want)
			}
			for _, s := range tt.bodyHas {
				if !strings.Contains(string(body), s) {
					t.Errorf("body %s lacks %s", body, s)
				}
			}
			if strings.Contains(string(body), "sk-a-secret") {
				t.Errorf("body leaks the secret: %s", body)
			}
		})
	}
	if rev, _ := e.stored(t); rev != 5 {
		t.Errorf("revision %d after the writes; want 5 (dry runs and refusals store nothing)", rev)
	}
}

// zeros is an endless reader of '0'.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}

func TestRESTBodyTooLarge(t *testing.T) {
	e := newEnv(t, "", nil)
	const size = testBodyLimit + 1<<16
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var body io.Reader = io.LimitReader(zeros{}, size)
			req, err := http.NewRequestWithContext(context.Background(), "PUT", e.rest+"/api/v1/config", body)
			if err != nil {
				t.Fatal(err)
			}
			if !chunked {
				req.ContentLength = size
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), fmt.Sprint(testBodyLimit)) {
				t.Errorf("got %d %s; want 413 naming the limit", resp.StatusCode, b)
			}
		})
	}
	// A resource write (not buffered by the checks) over the limit too.
	req, _ := http.NewRequest("POST", e.rest+"/api/v1/upstreams", io.MultiReader(strings.NewReader(`{"name":"`), io.LimitReader(zeros{}, size)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized chunked POST: %d; want 413", resp.StatusCode)
	}
}
