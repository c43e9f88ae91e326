package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/e2e/harness"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// cpSecret is a provider key that must never come back from the control plane.
const cpSecret = "sk-e2e-very-secret-0123456789"

// cpBootstrap is the --bootstrap file: revision 1.
const cpBootstrap = `
http_server:
  forwards:
    - name: main
      port: 3000
      default_group: g1
      routing:
        - path: /v1/chat/completions
          target_group: g1
upstreams:
  - name: openai
    url: https://api.openai.com
    auth:
      type: bearer
      token: ` + cpSecret + `
  - name: local
    url: http://127.0.0.1:8000
    auth:
      type: bearer
      token: ${env:LOCAL_KEY}
upstream_groups:
  - name: g1
    upstreams:
      - name: openai
    balance:
      strategy: roundrobin
`

// TestControlPlaneAPI drives the real control-plane binary (SQLite store, admin auth on)
// over REST, gRPC and llmproxyctl. The steps share one store, so they run in order and
// each checks the revision it leaves.
func TestControlPlaneAPI(t *testing.T) {
	t.Parallel()
	const token = "e2e-admin-token"
	bootstrap := harness.WriteFile(t, "bootstrap.yaml", cpBootstrap)
	cp := startControlPlane(t, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), token, "--bootstrap", bootstrap)
	client, ctx := cp.client(t)

	wantRevision := func(t *testing.T, a restAnswer, want string) {
		t.Helper()
		if got := a.header.Get("X-Llmproxy-Revision"); got != want {
			t.Errorf("X-Llmproxy-Revision %q; want %q", got, want)
		}
	}
	wantStatus := func(t *testing.T, a restAnswer, code int, substrs ...string) {
		t.Helper()
		if a.code != code {
			t.Fatalf("got %d %s; want %d", a.code, a.body, code)
		}
		for _, s := range substrs {
			if !strings.Contains(a.body, s) {
				t.Errorf("body %s lacks %s", a.body, s)
			}
		}
		if code >= 400 {
			var eb struct {
				Error struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal([]byte(a.body), &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" || eb.Error.Code == "" {
				t.Errorf("error body %s: want {\"error\":{\"message\",\"type\",\"code\"}}", a.body)
			}
		}
	}

	t.Run("bootstrap and auth", func(t *testing.T) {
		a := cp.rest(t, "GET", "/api/v1/upstreams", "", false)
		wantStatus(t, a, 401, `"authentication_error"`)
		if a.header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("WWW-Authenticate %q; want Bearer", a.header.Get("WWW-Authenticate"))
		}
		a = cp.rest(t, "GET", "/api/v1/upstreams", "", true)
		wantStatus(t, a, 200, `"openai"`)
		wantRevision(t, a, "1")

		noToken, cancel := cpCallContext()
		defer cancel()
		if _, err := client.ListUpstreams(noToken, &adminv1.ListUpstreamsRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC without token: %v; want Unauthenticated", err)
		}
		wrong := metadata.AppendToOutgoingContext(noToken, "authorization", "Bearer wrong")
		if _, err := client.ListUpstreams(wrong, &adminv1.ListUpstreamsRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC with a wrong token: %v; want Unauthenticated", err)
		}
		if resp, err := healthpb.NewHealthClient(cp.conn).Check(noToken, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("grpc.health.v1 without token: %v, %v", resp, err)
		}
		for _, p := range []string{"/health", "/metrics", "/api/v1/openapi.json"} {
			if a := cp.rest(t, "GET", p, "", false); a.code != 200 {
				t.Errorf("GET %s without token: %d", p, a.code)
			}
		}
		if a := cp.rest(t, "GET", "/api/v1/openapi.json", "", false); !strings.Contains(a.body, `"/api/v1/upstream-groups/{name}"`) {
			t.Errorf("openapi.json lacks the upstream-groups path")
		}
	})

	t.Run("upstream statuses over REST", func(t *testing.T) {
		a := cp.rest(t, "POST", "/api/v1/upstreams", `{"name":"anthropic","url":"https://api.anthropic.com","auth":{"type":"bearer","token":"`+cpSecret+`"}}`, true)
		wantStatus(t, a, 201, `"revision":"2"`, `"<redacted>"`)
		wantRevision(t, a, "2")
		wantStatus(t, cp.rest(t, "POST", "/api/v1/upstreams", `{"name":"anthropic","url":"https://x.example.com"}`, true), 409, `already exists`, `"already_exists"`)
		wantStatus(t, cp.rest(t, "POST", "/api/v1/upstreams", `{"name":"bad","url":"https://x.example.com","bogus_field":1}`, true), 400, `bogus_field`)
		wantStatus(t, cp.rest(t, "POST", "/api/v1/upstreams", `{"name":"bad","url":"ftp://x"}`, true), 400, `upstream.url`)
		wantStatus(t, cp.rest(t, "PUT", "/api/v1/upstreams/anthropic", `{"name":"other","url":"https://x.example.com"}`, true), 400, `upstream.name`)
		wantStatus(t, cp.rest(t, "GET", "/api/v1/upstreams/nope", "", true), 404, `"not_found"`)
		wantStatus(t, cp.rest(t, "DELETE", "/api/v1/upstreams/nope", "", true), 404)

		// PUT with the redaction marker keeps the secret; the revision moves.
		a = cp.rest(t, "PUT", "/api/v1/upstreams/anthropic", `{"url":"https://api.anthropic.com/v1","auth":{"type":"bearer","token":"<redacted>"}}`, true)
		wantStatus(t, a, 200, `"revision":"3"`, `"https://api.anthropic.com/v1"`)
		a = cp.rest(t, "GET", "/api/v1/upstreams/anthropic", "", true)
		wantStatus(t, a, 200, `"<redacted>"`)
	})

	t.Run("groups, dependency protection, stale revision", func(t *testing.T) {
		resp, err := client.CreateUpstreamGroup(ctx, &adminv1.CreateUpstreamGroupRequest{
			UpstreamGroup: &configv1.UpstreamGroup{Name: "g2", Upstreams: []*configv1.UpstreamRef{{Name: "anthropic"}}},
		})
		if err != nil || resp.Revision != 4 {
			t.Fatalf("create group over gRPC: %v, %v", resp, err)
		}
		a := cp.rest(t, "DELETE", "/api/v1/upstreams/anthropic", "", true)
		wantStatus(t, a, 409, `upstream \"anthropic\" is used by upstream group \"g2\"`, `"failed_precondition"`)
		wantStatus(t, cp.rest(t, "DELETE", "/api/v1/upstream-groups/g1", "", true), 409, `forward \"main\"`)
		_, err = client.CreateUpstreamGroup(ctx, &adminv1.CreateUpstreamGroupRequest{
			UpstreamGroup: &configv1.UpstreamGroup{Name: "g3", Upstreams: []*configv1.UpstreamRef{{Name: "ghost"}}},
		})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), `"ghost"`) {
			t.Errorf("dangling member over gRPC: %v; want FailedPrecondition naming ghost", err)
		}
		_, err = client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: "local", ExpectedRevision: proto.Uint64(1)})
		if status.Code(err) != codes.Aborted {
			t.Errorf("stale expected_revision over gRPC: %v; want Aborted", err)
		}
		wantStatus(t, cp.rest(t, "DELETE", "/api/v1/upstreams/local?expected_revision=2", "", true), 409, `"aborted"`)

		// PATCH replaces the member list atomically.
		a = cp.rest(t, "PATCH", "/api/v1/upstream-groups/g2", `{"upstreams":[{"name":"openai","weight":3},{"name":"local"}]}`, true)
		wantStatus(t, a, 200, `"revision":"5"`, `"weight":3`, `"local"`)
		g, err := client.GetUpstreamGroup(ctx, &adminv1.GetUpstreamGroupRequest{Name: "g2"})
		if err != nil || len(g.Upstreams) != 2 || g.Upstreams[0].GetName() != "openai" || g.Upstreams[1].GetName() != "local" {
			t.Fatalf("members after PATCH: %v, %v", g, err)
		}
		// A member listed twice in one body is an invalid document (400), not a conflict
		// with what is stored (409), and nothing is written.
		a = cp.rest(t, "PATCH", "/api/v1/upstream-groups/g2", `{"upstreams":[{"name":"local"},{"name":"local"}]}`, true)
		wantStatus(t, a, 400, `upstreams[1].name`, `\"local\" is already a member`)
		// anthropic is free now.
		a = cp.rest(t, "DELETE", "/api/v1/upstreams/anthropic?expected_revision=5", "", true)
		wantStatus(t, a, 204)
		if a.body != "" {
			t.Errorf("204 with body %q", a.body)
		}
		wantRevision(t, a, "6")
	})

	t.Run("routes by base64url id", func(t *testing.T) {
		path := "/v1/embeddings"
		id := admin.RouteID(path)
		a := cp.rest(t, "POST", "/api/v1/forwards/main/routes", `{"path":"`+path+`","target_group":"g1"}`, true)
		wantStatus(t, a, 201, `"id":"`+id+`"`, `"revision":"7"`)
		wantStatus(t, cp.rest(t, "POST", "/api/v1/forwards/main/routes", `{"path":"`+path+`","target_group":"g1"}`, true), 409)
		wantStatus(t, cp.rest(t, "GET", "/api/v1/forwards/main/routes/"+id, "", true), 200, `"target_group":"g1"`)
		wantStatus(t, cp.rest(t, "GET", "/api/v1/forwards/main/routes/"+id+"==", "", true), 200, `"path":"`+path+`"`)
		a = cp.rest(t, "PUT", "/api/v1/forwards/main/routes/"+id, `{"target_group":"g2","methods":["POST"]}`, true)
		wantStatus(t, a, 200, `"target_group":"g2"`, `"revision":"8"`)
		wantStatus(t, cp.rest(t, "GET", "/api/v1/forwards/main/routes", "", true), 200, `"id":"`+id+`"`, `"/v1/chat/completions"`)
		wantStatus(t, cp.rest(t, "DELETE", "/api/v1/forwards/main/routes/"+id, "", true), 204)
		wantStatus(t, cp.rest(t, "GET", "/api/v1/forwards/main/routes/"+id, "", true), 404)
		wantStatus(t, cp.rest(t, "GET", "/api/v1/forwards/nope/routes", "", true), 404)

		// llmproxyctl route set creates, then repoints.
		out, errOut, code := cp.ctl(t, "", "route", "set", "main", path, "g2")
		if code != 0 || !strings.Contains(out, "created") {
			t.Fatalf("route set (create): %d %s %s", code, out, errOut)
		}
		out, errOut, code = cp.ctl(t, "", "route", "set", "main", path, "g1")
		if code != 0 || !strings.Contains(out, "updated") {
			t.Fatalf("route set (repoint): %d %s %s", code, out, errOut)
		}
		e, err := client.GetRoute(ctx, &adminv1.GetRouteRequest{Name: "main", Id: id})
		if err != nil || e.Route.GetTargetGroup() != "g1" {
			t.Fatalf("route after repoint: %v, %v", e, err)
		}
		if _, errOut, code = cp.ctl(t, "", "route", "delete", "main", path); code != 0 {
			t.Fatalf("route delete: %d %s", code, errOut)
		}
	})

	t.Run("whole config: dry run, redaction, export | apply", func(t *testing.T) {
		var hdr metadata.MD
		before, err := client.GetConfig(ctx, &adminv1.GetConfigRequest{}, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		rev := before.Revision
		if got := strings.Join(hdr.Get("llmproxy-revision"), ""); got != cpRev(rev) {
			t.Errorf("llmproxy-revision header %q; want %d", got, rev)
		}

		a := cp.rest(t, "PUT", "/api/v1/config?dry_run=true", `{"upstreams":[{"name":"x","url":"https://x.example.com"}]}`, true)
		wantStatus(t, a, 409, `would delete`, `force=true`)
		a = cp.rest(t, "PUT", "/api/v1/config?dry_run=true&force=true", `{"upstreams":[{"name":"x","url":"https://x.example.com"}]}`, true)
		wantStatus(t, a, 200, `"revision":"`+cpRev(rev)+`"`, `"dry_run":true`)
		wantStatus(t, cp.rest(t, "PUT", "/api/v1/config?dry_run=true", `{"upstream_groups":[{"name":"g","upstreams":[{"name":"ghost"}]}]}`, true), 400, `upstream_groups[0].upstreams[0].name`)
		wantStatus(t, cp.rest(t, "PUT", "/api/v1/config?expected_revision=1", `{}`, true), 409, `"aborted"`)

		// Secrets never come back; env references do.
		for _, p := range []string{"/api/v1/config", "/api/v1/upstreams", "/api/v1/upstreams/openai", "/api/v1/upstream-groups"} {
			a := cp.rest(t, "GET", p, "", true)
			if a.code != 200 || strings.Contains(a.body, cpSecret) {
				t.Errorf("GET %s: %d, leaks the secret: %v", p, a.code, strings.Contains(a.body, cpSecret))
			}
		}
		a = cp.rest(t, "GET", "/api/v1/config", "", true)
		wantStatus(t, a, 200, `${env:LOCAL_KEY}`, `"<redacted>"`)
		wantRevision(t, a, cpRev(rev))

		export1, errOut, code := cp.ctl(t, "", "export")
		if code != 0 {
			t.Fatalf("export: %d %s", code, errOut)
		}
		if strings.Contains(export1, cpSecret) || !strings.Contains(export1, "${env:LOCAL_KEY}") {
			t.Fatalf("export leaks the secret or lost the env reference:\n%s", export1)
		}
		out, errOut, code := cp.ctl(t, export1, "apply", "-f", "-")
		if code != 0 || strings.TrimSpace(out) != "revision "+cpRev(rev) {
			t.Fatalf("apply of the export: %d %q %s; want an unchanged revision %d", code, out, errOut, rev)
		}
		export2, _, _ := cp.ctl(t, "", "export")
		if export1 != export2 {
			t.Fatalf("export | apply changed the config:\n--- before\n%s--- after\n%s", export1, export2)
		}
		// The stored secret survived the round trip: a forward change through apply keeps it.
		changed := strings.Replace(export1, "port: 3000", "port: 3001", 1)
		out, errOut, code = cp.ctl(t, changed, "apply", "-f", "-", "--expected-revision", cpRev(rev))
		if code != 0 || strings.TrimSpace(out) != "revision "+cpRev(rev+1) {
			t.Fatalf("apply of a changed export: %d %q %s", code, out, errOut)
		}
		out, errOut, code = cp.ctl(t, changed, "apply", "-f", "-", "--dry-run")
		if code != 0 || !strings.Contains(out, "dry run") {
			t.Fatalf("apply --dry-run: %d %q %s", code, out, errOut)
		}

		// get, delete and errors through the CLI.
		out, _, code = cp.ctl(t, "", "get", "upstreams", "openai")
		if code != 0 || !strings.Contains(out, "name: openai") || strings.Contains(out, cpSecret) {
			t.Errorf("get upstreams openai: %d\n%s", code, out)
		}
		out, _, code = cp.ctl(t, "", "get", "groups")
		if code != 0 || !strings.Contains(out, "upstream_groups:") || !strings.Contains(out, "name: g2") {
			t.Errorf("get groups: %d\n%s", code, out)
		}
		_, errOut, code = cp.ctl(t, "", "delete", "upstream", "openai")
		if code != 4 || !strings.HasPrefix(errOut, "llmproxyctl: ") || !strings.Contains(errOut, `upstream group "g1"`) {
			t.Errorf("delete of a used upstream: %d %q", code, errOut)
		}
		out, errOut, code = cp.ctl(t, "", "status")
		if code != 0 || !strings.Contains(out, "NODE") {
			t.Errorf("status: %d %q %q", code, out, errOut)
		}
		_, errOut, code = cp.ctl(t, "", "--token", "wrong", "export")
		if code != 1 || !strings.Contains(errOut, "bearer token") {
			t.Errorf("export with a wrong token: %d %q", code, errOut)
		}
	})

	t.Run("metrics and graceful stop", func(t *testing.T) {
		a := cp.rest(t, "GET", "/metrics", "", false)
		for _, want := range []string{
			`llmproxy_controlplane_grpc_requests_total{code="Unauthenticated",method="ListUpstreams"`,
			`llmproxy_controlplane_grpc_request_duration_seconds_bucket`,
		} {
			if !strings.Contains(a.body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if code := cp.proc.Stop(10 * time.Second); code != 0 {
			t.Errorf("exit code after SIGTERM: %d", code)
		}
	})
}

// TestControlPlaneValidateOffline checks llmproxyctl validate, which needs no server.
func TestControlPlaneValidateOffline(t *testing.T) {
	t.Parallel()
	_, ctlBin := cpBinaries(t)
	c := &controlPlane{ctlBin: ctlBin, grpcAddr: "127.0.0.1:1"}
	good := harness.WriteFile(t, "good.yaml", cpBootstrap)
	if out, errOut, code := c.ctl(t, "", "validate", "-f", good); code != 0 {
		t.Fatalf("validate good: %d %s %s", code, out, errOut)
	}
	bad := harness.WriteFile(t, "bad.yaml", `
upstreams:
  - {name: a, url: "ftp://a", auth: {type: bearer}}
upstream_groups:
  - {name: g, upstreams: [{name: ghost}]}
`)
	_, errOut, code := c.ctl(t, "", "validate", "-f", bad)
	if code != 4 {
		t.Fatalf("validate bad: exit %d; want 4", code)
	}
	for _, want := range []string{"upstreams[0].url", "upstreams[0].auth.token", "upstream_groups[0].upstreams[0].name", "bad.yaml:"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
	if _, errOut, code := c.ctl(t, "upstreams: [{name: a, url: 'ftp://a'}]", "validate", "-f", "-"); code != 4 || !strings.Contains(errOut, "<stdin>:1:28: upstreams[0].url") {
		t.Errorf("validate stdin: %d %s", code, errOut)
	}
}

// TestControlPlanesSharePostgres runs two control planes on one PostgreSQL schema: a write
// through either is read back through the other, at the same revision.
func TestControlPlanesSharePostgres(t *testing.T) {
	t.Parallel()
	dsn := cpPostgresDSN(t)
	cp1 := startControlPlane(t, dsn, "")
	cp2 := startControlPlane(t, dsn, "")
	c1, ctx1 := cp1.client(t)
	c2, ctx2 := cp2.client(t)

	a := cp1.rest(t, "POST", "/api/v1/upstreams", `{"name":"shared","url":"https://shared.example.com"}`, false)
	if a.code != 201 {
		t.Fatalf("create through cp1: %d %s", a.code, a.body)
	}
	u, err := c2.GetUpstream(ctx2, &adminv1.GetUpstreamRequest{Name: "shared"})
	if err != nil || u.GetUrl() != "https://shared.example.com" {
		t.Fatalf("read through cp2: %v, %v", u, err)
	}
	resp, err := c2.CreateUpstreamGroup(ctx2, &adminv1.CreateUpstreamGroupRequest{
		UpstreamGroup:    &configv1.UpstreamGroup{Name: "g", Upstreams: []*configv1.UpstreamRef{{Name: "shared"}}},
		ExpectedRevision: proto.Uint64(1),
	})
	if err != nil || resp.Revision != 2 {
		t.Fatalf("create group through cp2 at revision 1: %v, %v", resp, err)
	}
	// cp1 sees it, refuses to delete the upstream it uses, and a stale write is refused.
	g, err := c1.GetUpstreamGroup(ctx1, &adminv1.GetUpstreamGroupRequest{Name: "g"})
	if err != nil || g.Upstreams[0].GetName() != "shared" {
		t.Fatalf("read group through cp1: %v, %v", g, err)
	}
	if a := cp1.rest(t, "DELETE", "/api/v1/upstreams/shared", "", false); a.code != 409 || !strings.Contains(a.body, `upstream group \"g\"`) {
		t.Errorf("delete through cp1: %d %s", a.code, a.body)
	}
	if _, err := c1.CreateUpstream(ctx1, &adminv1.CreateUpstreamRequest{Upstream: &configv1.Upstream{Name: "x", Url: "https://x.example.com"}, ExpectedRevision: proto.Uint64(1)}); status.Code(err) != codes.Aborted {
		t.Errorf("stale write through cp1: %v; want Aborted", err)
	}
	l1, err1 := c1.ListUpstreams(ctx1, &adminv1.ListUpstreamsRequest{})
	l2, err2 := c2.ListUpstreams(ctx2, &adminv1.ListUpstreamsRequest{})
	if err1 != nil || err2 != nil || l1.Revision != 2 || l2.Revision != 2 {
		t.Errorf("revisions: cp1 %v (%v), cp2 %v (%v); want 2 and 2", l1.GetRevision(), err1, l2.GetRevision(), err2)
	}
	exp1, _, _ := cp1.ctl(t, "", "export")
	exp2, _, _ := cp2.ctl(t, "", "export")
	if exp1 != exp2 || !strings.Contains(exp1, "shared") {
		t.Errorf("exports differ:\n--- cp1\n%s--- cp2\n%s", exp1, exp2)
	}
}
