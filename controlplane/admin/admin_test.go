package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// env is a control plane in the test process: a SQLite store, the gRPC server on a loopback
// port with the production interceptors, and the REST handler in an httptest server.
type env struct {
	store  store.Store
	client adminv1.AdminServiceClient
	health healthpb.HealthClient
	rest   string // base URL
	token  string
}

// testBodyLimit is the REST body limit of the test env, small so 413 tests stay quick.
const testBodyLimit = 1 << 20

type fakeFleet []*adminv1.ProxyStatus

func (f fakeFleet) Proxies() []*adminv1.ProxyStatus { return f }

func newEnv(t testing.TB, token string, fleet admin.Fleet) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	reg := prometheus.NewRegistry()
	metrics, err := admin.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(admin.MaxMessageBytes), grpc.ChainUnaryInterceptor(
		metrics.UnaryInterceptor(),
		admin.LoggingInterceptor(nil),
		admin.AuthInterceptor(token),
	))
	adminv1.RegisterAdminServiceServer(gs, admin.New(st, fleet, nil))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)

	h, err := admin.NewHTTPHandler(ctx, admin.HTTPOptions{GRPCAddr: l.Addr().String(), Store: st, Registry: reg, MaxBodyBytes: testBodyLimit})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)

	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{
		store:  st,
		client: adminv1.NewAdminServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
		rest:   hs.URL,
		token:  token,
	}
}

// ctx returns a call context carrying the env's token, if any.
func (e *env) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if e.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e.token)
	}
	return ctx
}

// seed stores cfg directly, bypassing the service.
func (e *env) seed(t testing.TB, cfg *configv1.Config) uint64 {
	t.Helper()
	rev, err := e.store.Update(context.Background(), nil, store.Change{Operation: "Seed"}, func(uint64, *configv1.Config) (*configv1.Config, error) {
		return proto.Clone(cfg).(*configv1.Config), nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	return rev
}

func (e *env) stored(t *testing.T) (uint64, *configv1.Config) {
	t.Helper()
	rev, cfg, err := e.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rev, cfg
}

func upstream(name string) *configv1.Upstream {
	return &configv1.Upstream{Name: name, Url: "https://" + name + ".example.com"}
}

func secretUpstream(name, token string) *configv1.Upstream {
	u := upstream(name)
	u.Auth = &configv1.Auth{Type: "bearer", Token: token}
	return u
}

func group(name string, members ...string) *configv1.UpstreamGroup {
	g := &configv1.UpstreamGroup{Name: name}
	for _, m := range members {
		g.Upstreams = append(g.Upstreams, &configv1.UpstreamRef{Name: m})
	}
	return g
}

func forward(name string, port uint32, def string) *configv1.Forward {
	return &configv1.Forward{Name: name, Port: proto.Uint32(port), DefaultGroup: def}
}

// base is a small valid config: upstreams a (secret token) and b, group g1 of a, forward f
// on g1 with one route to g1.
func base() *configv1.Config {
	f := forward("f", 3000, "g1")
	f.Routing = []*configv1.Route{{Path: "/v1/chat/completions", TargetGroup: "g1"}}
	return &configv1.Config{
		HttpServer:     &configv1.HttpServer{Forwards: []*configv1.Forward{f}},
		Upstreams:      []*configv1.Upstream{secretUpstream("a", "sk-a-secret"), upstream("b")},
		UpstreamGroups: []*configv1.UpstreamGroup{group("g1", "a")},
	}
}

// wantCode fails unless err has code and its message contains every one of substrs.
func wantCode(t *testing.T, err error, code codes.Code, substrs ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("got %v (%q); want %v", st.Code(), st.Message(), code)
	}
	for _, s := range substrs {
		if !strings.Contains(st.Message(), s) {
			t.Errorf("message %q does not contain %q", st.Message(), s)
		}
	}
}

// wantResource checks that err carries a ResourceInfo detail naming what is missing.
func wantResource(t *testing.T, err error, typ, name, owner string) {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.ResourceInfo); ok {
			if ri.ResourceType != typ || ri.ResourceName != name || ri.Owner != owner {
				t.Errorf("resource info = %v; want type %q name %q owner %q", ri, typ, name, owner)
			}
			return
		}
	}
	t.Errorf("%v has no ResourceInfo detail", err)
}

func TestUpstreamLifecycle(t *testing.T) {
	e := newEnv(t, "", nil)
	ctx := e.ctx(t)

	resp, err := e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: secretUpstream("a", "sk-a-secret")})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if resp.Revision != 1 || resp.Upstream.GetAuth().GetToken() != redact.Marker {
		t.Fatalf("create answered %v; want revision 1 and a redacted token", resp)
	}
	_, err = e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("a")})
	wantCode(t, err, codes.AlreadyExists, `upstream "a" already exists`)

	got, err := e.client.GetUpstream(ctx, &adminv1.GetUpstreamRequest{Name: "a"})
	if err != nil || got.GetAuth().GetToken() != redact.Marker || got.GetUrl() != "https://a.example.com" {
		t.Fatalf("get: %v, %v", got, err)
	}

	// Writing the marker back keeps the stored secret while the url's origin stays; a new
	// host needs the secret again.
	upd := proto.Clone(got).(*configv1.Upstream)
	upd.Url = "https://a2.example.com"
	_, err = e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "a", Upstream: upd})
	wantCode(t, err, codes.InvalidArgument, `upstream.auth.token: the token is "<redacted>" but its url now points to https://a2.example.com:443 instead of https://a.example.com:443`)
	upd.Url = "https://a.example.com/v2"
	uresp, err := e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "a", Upstream: upd})
	if err != nil || uresp.Revision != 2 {
		t.Fatalf("update: %v, %v", uresp, err)
	}
	if _, cfg := e.stored(t); cfg.Upstreams[0].GetAuth().GetToken() != "sk-a-secret" || cfg.Upstreams[0].Url != "https://a.example.com/v2" {
		t.Fatalf("stored after update: %v", cfg.Upstreams[0])
	}
	// Stored as written: no defaults filled in.
	if _, cfg := e.stored(t); cfg.Upstreams[0].Breaker != nil {
		t.Errorf("stored upstream has defaults: %v", cfg.Upstreams[0])
	}

	// The body may omit the name; a different name is refused.
	noName := upstream("")
	if _, err := e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "a", Upstream: noName}); err != nil {
		t.Fatalf("update without body name: %v", err)
	}
	_, err = e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "a", Upstream: upstream("zz")})
	wantCode(t, err, codes.InvalidArgument, "upstream.name", `"zz"`, `"a"`)
	_, err = e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "nope", Upstream: upstream("nope")})
	wantCode(t, err, codes.NotFound, `upstream "nope" not found`)
	wantResource(t, err, admin.ResourceUpstream, "nope", "")
	_, err = e.client.UpdateUpstream(ctx, &adminv1.UpdateUpstreamRequest{Name: "a"})
	wantCode(t, err, codes.InvalidArgument, "upstream: required")

	list, err := e.client.ListUpstreams(ctx, &adminv1.ListUpstreamsRequest{})
	if err != nil || len(list.Upstreams) != 1 || list.Revision != 3 {
		t.Fatalf("list: %v, %v", list, err)
	}

	del, err := e.client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: "a"})
	if err != nil || del.Revision != 4 {
		t.Fatalf("delete: %v, %v", del, err)
	}
	_, err = e.client.GetUpstream(ctx, &adminv1.GetUpstreamRequest{Name: "a"})
	wantCode(t, err, codes.NotFound)
	_, err = e.client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: "a"})
	wantCode(t, err, codes.NotFound)
}

func TestWriteErrors(t *testing.T) {
	e := newEnv(t, "", nil)
	e.seed(t, base())
	ctx := e.ctx(t)
	badUpstream := &configv1.Upstream{Name: "x", Url: "ftp://x", Auth: &configv1.Auth{Type: "bearer"}}
	dupRouteForward := forward("f2", 3001, "g1")
	dupRouteForward.Routing = []*configv1.Route{{Path: "/x", TargetGroup: "g1"}, {Path: "/x", TargetGroup: "g1"}}

	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		substr []string
		fields []string // BadRequest field violations, when checked
	}{
		{
			name: "every invalid field of an upstream at once",
			call: func() error {
				_, err := e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: badUpstream})
				return err
			},
			code:   codes.InvalidArgument,
			substr: []string{"upstream.url", "upstream.auth.token"},
			fields: []string{"upstream.url", "upstream.auth.token"},
		},
		{
			name: "group member not defined",
			call: func() error {
				_, err := e.client.CreateUpstreamGroup(ctx, &adminv1.CreateUpstreamGroupRequest{UpstreamGroup: group("g2", "missing")})
				return err
			},
			code:   codes.FailedPrecondition,
			substr: []string{"upstream_group.upstreams[0].name", `"missing"`},
		},
		{
			name: "duplicate group",
			call: func() error {
				_, err := e.client.CreateUpstreamGroup(ctx, &adminv1.CreateUpstreamGroupRequest{UpstreamGroup: group("g1", "a")})
				return err
			},
			code:   codes.AlreadyExists,
			substr: []string{`upstream group "g1" already exists`},
		},
		{
			name: "forward on a missing group",
			call: func() error {
				_, err := e.client.CreateForward(ctx, &adminv1.CreateForwardRequest{Forward: forward("f2", 3001, "nope")})
				return err
			},
			code:   codes.FailedPrecondition,
			substr: []string{"forward.default_group"},
		},
		{
			name: "duplicate route path inside a new forward",
			call: func() error {
				_, err := e.client.CreateForward(ctx, &adminv1.CreateForwardRequest{Forward: dupRouteForward})
				return err
			},
			code:   codes.InvalidArgument, // in one body: an invalid document, not a conflict
			substr: []string{"forward.routing[1].path"},
		},
		{
			name: "delete an upstream a group uses",
			call: func() error {
				_, err := e.client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: "a"})
				return err
			},
			code:   codes.FailedPrecondition,
			substr: []string{`upstream "a" is used by upstream group "g1"`},
			fields: []string{"upstream_groups[0].upstreams[0].name"},
		},
		{
			name: "delete a group a forward and a route use",
			call: func() error {
				_, err := e.client.DeleteUpstreamGroup(ctx, &adminv1.DeleteUpstreamGroupRequest{Name: "g1"})
				return err
			},
			code:   codes.FailedPrecondition,
			substr: []string{`upstream group "g1" is used by forward "f" (default_group), forward "f" route "/v1/chat/completions"`},
		},
		{
			name: "stale expected revision",
			call: func() error {
				_, err := e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: upstream("c"), ExpectedRevision: proto.Uint64(99)})
				return err
			},
			code:   codes.Aborted,
			substr: []string{"99"},
		},
		{
			name: "marker without a stored secret",
			call: func() error {
				_, err := e.client.CreateUpstream(ctx, &adminv1.CreateUpstreamRequest{Upstream: secretUpstream("c", redact.Marker)})
				return err
			},
			code:   codes.InvalidArgument,
			substr: []string{"upstream.auth.token"},
		},
		{
			name: "patch with no members",
			call: func() error {
				_, err := e.client.PatchUpstreamGroup(ctx, &adminv1.PatchUpstreamGroupRequest{Name: "g1"})
				return err
			},
			code:   codes.InvalidArgument,
			substr: []string{"upstreams"},
		},
		{
			name: "patch a missing group",
			call: func() error {
				_, err := e.client.PatchUpstreamGroup(ctx, &adminv1.PatchUpstreamGroupRequest{Name: "zz", Upstreams: []*configv1.UpstreamRef{{Name: "a"}}})
				return err
			},
			code:   codes.NotFound,
			substr: []string{`upstream group "zz" not found`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			wantCode(t, err, tt.code, tt.substr...)
			if tt.fields != nil {
				var got []string
				for _, d := range status.Convert(err).Details() {
					if br, ok := d.(*errdetails.BadRequest); ok {
						for _, v := range br.FieldViolations {
							got = append(got, v.Field)
						}
					}
				}
				if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
					t.Errorf("field violations %v; want %v", got, tt.fields)
				}
			}
		})
	}
	if rev, _ := e.stored(t); rev != 1 {
		t.Errorf("refused writes moved the revision to %d; want 1", rev)
	}
}

func TestGroupsAndPatch(t *testing.T) {
	e := newEnv(t, "", nil)
	rev := e.seed(t, base())
	ctx := e.ctx(t)

	g := group("g2", "a", "b")
	g.Balance = &configv1.Balance{Strategy: "weighted_roundrobin"}
	g.HttpClient = &configv1.HttpClient{Proxy: &configv1.OutboundProxy{Url: "http://user:pw@proxy:8080"}}
	cr, err := e.client.CreateUpstreamGroup(ctx, &adminv1.CreateUpstreamGroupRequest{UpstreamGroup: g, ExpectedRevision: proto.Uint64(rev)})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	if strings.Contains(cr.UpstreamGroup.GetHttpClient().GetProxy().GetUrl(), "pw") {
		t.Errorf("proxy password not redacted: %v", cr.UpstreamGroup)
	}
	pr, err := e.client.PatchUpstreamGroup(ctx, &adminv1.PatchUpstreamGroupRequest{
		Name:      "g2",
		Upstreams: []*configv1.UpstreamRef{{Name: "b", Weight: proto.Uint32(3)}},
	})
	if err != nil {
		t.Fatalf("patch: %v", err)
	}
	if pr.Revision != cr.Revision+1 {
		t.Errorf("patch revision %d; want %d", pr.Revision, cr.Revision+1)
	}
	_, cfg := e.stored(t)
	stored := cfg.UpstreamGroups[1]
	if len(stored.Upstreams) != 1 || stored.Upstreams[0].GetName() != "b" || stored.Upstreams[0].GetWeight() != 3 {
		t.Errorf("members after patch: %v", stored.Upstreams)
	}
	if stored.GetBalance().GetStrategy() != "weighted_roundrobin" || stored.GetHttpClient().GetProxy().GetUrl() != "http://user:pw@proxy:8080" {
		t.Errorf("patch changed other settings: %v", stored)
	}
	// Now a is used by g1 only; b by g2.
	_, err = e.client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: "b"})
	wantCode(t, err, codes.FailedPrecondition, `upstream group "g2"`)
	if _, err := e.client.DeleteUpstreamGroup(ctx, &adminv1.DeleteUpstreamGroupRequest{Name: "g2"}); err != nil {
		t.Fatalf("delete unused group: %v", err)
	}
	if _, err := e.client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: "b"}); err != nil {
		t.Fatalf("delete unused upstream: %v", err)
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, "", nil)
	e.seed(t, base())
	ctx := e.ctx(t)
	path := "/v1/embeddings"
	id := admin.RouteID(path)
	if strings.ContainsAny(id, "=+/") {
		t.Fatalf("route id %q is not unpadded base64url", id)
	}

	cr, err := e.client.CreateRoute(ctx, &adminv1.CreateRouteRequest{Name: "f", Route: &configv1.Route{Path: path, TargetGroup: "g1"}})
	if err != nil || cr.Id != id {
		t.Fatalf("create route: %v, %v", cr, err)
	}
	_, err = e.client.CreateRoute(ctx, &adminv1.CreateRouteRequest{Name: "f", Route: &configv1.Route{Path: path, TargetGroup: "g1"}})
	wantCode(t, err, codes.AlreadyExists, path)
	_, err = e.client.CreateRoute(ctx, &adminv1.CreateRouteRequest{Name: "nope", Route: &configv1.Route{Path: "/y", TargetGroup: "g1"}})
	wantCode(t, err, codes.NotFound, `forward "nope"`)
	wantResource(t, err, admin.ResourceForward, "nope", "")
	_, err = e.client.CreateRoute(ctx, &adminv1.CreateRouteRequest{Name: "f", Route: &configv1.Route{Path: "/z", TargetGroup: "none"}})
	wantCode(t, err, codes.FailedPrecondition, "route.target_group")

	// Padded ids are accepted too.
	padded := id + strings.Repeat("=", (4-len(id)%4)%4)
	got, err := e.client.GetRoute(ctx, &adminv1.GetRouteRequest{Name: "f", Id: padded})
	if err != nil || got.Route.GetPath() != path {
		t.Fatalf("get by padded id %q: %v, %v", padded, got, err)
	}
	_, err = e.client.GetRoute(ctx, &adminv1.GetRouteRequest{Name: "f", Id: "!!"})
	wantCode(t, err, codes.InvalidArgument, "id")

	ur, err := e.client.UpdateRoute(ctx, &adminv1.UpdateRouteRequest{Name: "f", Id: id, Route: &configv1.Route{TargetGroup: "g1", Methods: []string{"POST"}}})
	if err != nil || ur.Route.GetPath() != path {
		t.Fatalf("update route: %v, %v", ur, err)
	}
	_, err = e.client.UpdateRoute(ctx, &adminv1.UpdateRouteRequest{Name: "f", Id: id, Route: &configv1.Route{Path: "/other", TargetGroup: "g1"}})
	wantCode(t, err, codes.InvalidArgument, "route.path")

	list, err := e.client.ListRoutes(ctx, &adminv1.ListRoutesRequest{Name: "f"})
	if err != nil || len(list.Routes) != 2 || list.Routes[1].Id != id || len(list.Routes[1].Route.Methods) != 1 {
		t.Fatalf("list routes: %v, %v", list, err)
	}
	if _, err := e.client.DeleteRoute(ctx, &adminv1.DeleteRouteRequest{Name: "f", Id: id}); err != nil {
		t.Fatalf("delete route: %v", err)
	}
	_, err = e.client.DeleteRoute(ctx, &adminv1.DeleteRouteRequest{Name: "f", Id: id})
	wantCode(t, err, codes.NotFound, path)
	wantResource(t, err, admin.ResourceRoute, path, "f")
}

func TestForwards(t *testing.T) {
	e := newEnv(t, "", nil)
	e.seed(t, base())
	ctx := e.ctx(t)
	if _, err := e.client.CreateForward(ctx, &adminv1.CreateForwardRequest{Forward: forward("f2", 3001, "g1")}); err != nil {
		t.Fatalf("create forward: %v", err)
	}
	_, err := e.client.CreateForward(ctx, &adminv1.CreateForwardRequest{Forward: forward("f2", 3002, "g1")})
	wantCode(t, err, codes.AlreadyExists, `forward "f2"`)
	ur, err := e.client.UpdateForward(ctx, &adminv1.UpdateForwardRequest{Name: "f2", Forward: forward("", 3005, "g1")})
	if err != nil || ur.Forward.GetPort() != 3005 || ur.Forward.GetName() != "f2" {
		t.Fatalf("update forward: %v, %v", ur, err)
	}
	list, err := e.client.ListForwards(ctx, &adminv1.ListForwardsRequest{})
	if err != nil || len(list.Forwards) != 2 {
		t.Fatalf("list forwards: %v, %v", list, err)
	}
	if _, err := e.client.DeleteForward(ctx, &adminv1.DeleteForwardRequest{Name: "f2"}); err != nil {
		t.Fatalf("delete forward: %v", err)
	}
	_, err = e.client.GetForward(ctx, &adminv1.GetForwardRequest{Name: "f2"})
	wantCode(t, err, codes.NotFound)
}

func TestApplyAndGetConfig(t *testing.T) {
	e := newEnv(t, "", nil)
	ctx := e.ctx(t)
	cfg := base()
	cfg.Upstreams[1].Auth = &configv1.Auth{Type: "bearer", Token: "${env:B_TOKEN}"}

	dry, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: cfg, DryRun: true})
	if err != nil || !dry.DryRun || dry.Revision != 0 {
		t.Fatalf("dry run: %v, %v", dry, err)
	}
	if rev, _ := e.stored(t); rev != 0 {
		t.Fatalf("dry run stored revision %d", rev)
	}
	ap, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: cfg, ExpectedRevision: proto.Uint64(0)})
	if err != nil || ap.Revision != 1 {
		t.Fatalf("apply: %v, %v", ap, err)
	}
	if _, stored := e.stored(t); !proto.Equal(stored, cfg) {
		t.Errorf("stored config differs from the applied one (defaults added?):\n got %v\nwant %v", stored, cfg)
	}

	var hdr metadata.MD
	got, err := e.client.GetConfig(ctx, &adminv1.GetConfigRequest{}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != 1 || strings.Join(hdr.Get(admin.RevisionHeader), "") != "1" {
		t.Errorf("revision %d, header %v; want 1", got.Revision, hdr.Get(admin.RevisionHeader))
	}
	if tok := got.Config.Upstreams[0].GetAuth().GetToken(); tok != redact.Marker {
		t.Errorf("secret token came back as %q", tok)
	}
	if tok := got.Config.Upstreams[1].GetAuth().GetToken(); tok != "${env:B_TOKEN}" {
		t.Errorf("env reference came back as %q", tok)
	}

	// Applying the redacted export again changes nothing: same revision, same secret.
	again, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: got.Config})
	if err != nil || again.Revision != 1 {
		t.Fatalf("re-apply export: %v, %v", again, err)
	}
	if _, stored := e.stored(t); stored.Upstreams[0].GetAuth().GetToken() != "sk-a-secret" {
		t.Errorf("secret lost on re-apply: %v", stored.Upstreams[0])
	}

	// Every fault at once, INVALID_ARGUMENT even for references.
	bad := base()
	bad.Upstreams = append(bad.Upstreams, upstream("a"))
	bad.UpstreamGroups[0].Upstreams[0].Name = "ghost"
	_, err = e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: bad, DryRun: true})
	wantCode(t, err, codes.InvalidArgument, "upstreams[2].name", "upstream_groups[0].upstreams[0].name")
	_, err = e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: cfg, DryRun: true, ExpectedRevision: proto.Uint64(7)})
	wantCode(t, err, codes.Aborted)
	_, err = e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{})
	wantCode(t, err, codes.InvalidArgument, "config")
}

func TestListProxies(t *testing.T) {
	since := timestamppb.New(time.Unix(1700000000, 0))
	fleet := fakeFleet{{NodeId: "p1", Connected: true, ConnectedSince: since, AckedRevision: 3}}
	e := newEnv(t, "", fleet)
	e.seed(t, base())
	resp, err := e.client.ListProxies(e.ctx(t), &adminv1.ListProxiesRequest{})
	if err != nil || resp.Revision != 1 || len(resp.Proxies) != 1 || resp.Proxies[0].NodeId != "p1" {
		t.Fatalf("list proxies: %v, %v", resp, err)
	}
	e2 := newEnv(t, "", nil)
	resp, err = e2.client.ListProxies(e2.ctx(t), &adminv1.ListProxiesRequest{})
	if err != nil || len(resp.Proxies) != 0 {
		t.Fatalf("list proxies without fleet: %v, %v", resp, err)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, "s3cret-token", nil)
	plain, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name string
		auth string
		want codes.Code
	}{
		{"none", "", codes.Unauthenticated},
		{"wrong token", "Bearer nope", codes.Unauthenticated},
		{"wrong scheme", "Basic s3cret-token", codes.Unauthenticated},
		{"right", "Bearer s3cret-token", codes.OK},
		{"scheme case-insensitive", "bearer s3cret-token", codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := plain
			if tt.auth != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.auth)
			}
			_, err := e.client.ListUpstreams(ctx, &adminv1.ListUpstreamsRequest{})
			if status.Code(err) != tt.want {
				t.Fatalf("got %v; want %v", err, tt.want)
			}
		})
	}
	if _, err := e.health.Check(plain, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check needs no token, got %v", err)
	}
}

// restCall does one REST request and returns status, headers and body.
func restCall(t *testing.T, method, url, body, token string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestREST(t *testing.T) {
	const token = "rest-token"
	e := newEnv(t, token, nil)
	e.seed(t, base())
	api := e.rest + "/api/v1"

	tests := []struct {
		name, method, path, body string
		token                    string
		want                     int
		bodyHas                  []string
		bodyLacks                []string
		revision                 string // X-Llmproxy-Revision, when checked
	}{
		{name: "401 without token", method: "GET", path: "/upstreams", want: 401, bodyHas: []string{`"type":"authentication_error"`, `"code":"unauthenticated"`}},
		{name: "list", method: "GET", path: "/upstreams", token: token, want: 200, bodyHas: []string{`"name":"a"`, redact.Marker}, bodyLacks: []string{"sk-a-secret"}, revision: "1"},
		{name: "create", method: "POST", path: "/upstreams", body: `{"name":"c","url":"https://c.example.com"}`, token: token, want: 201, bodyHas: []string{`"revision":"2"`}, revision: "2"},
		{name: "duplicate", method: "POST", path: "/upstreams", body: `{"name":"c","url":"https://c.example.com"}`, token: token, want: 409, bodyHas: []string{`"code":"already_exists"`}},
		{name: "unknown field", method: "POST", path: "/upstreams", body: `{"name":"d","url":"https://d.example.com","colour":"red"}`, token: token, want: 400, bodyHas: []string{`colour`, `"type":"invalid_request_error"`}},
		{name: "invalid field", method: "POST", path: "/upstreams", body: `{"name":"d","url":"nope"}`, token: token, want: 400, bodyHas: []string{`upstream.url`, `"fields":[{"field":"upstream.url"`}},
		{name: "not found", method: "GET", path: "/upstreams/zz", token: token, want: 404, bodyHas: []string{`"code":"not_found"`}},
		{name: "referenced", method: "DELETE", path: "/upstreams/a", token: token, want: 409, bodyHas: []string{`is used by upstream group \"g1\"`}},
		{name: "stale revision", method: "DELETE", path: "/upstreams/c?expected_revision=1", token: token, want: 409, bodyHas: []string{`"code":"aborted"`}},
		{name: "delete", method: "DELETE", path: "/upstreams/c?expected_revision=2", token: token, want: 204, revision: "3"},
		{name: "patch members", method: "PATCH", path: "/upstream-groups/g1", body: `{"upstreams":[{"name":"a","weight":2},{"name":"b"}]}`, token: token, want: 200, bodyHas: []string{`"weight":2`, `"name":"b"`}, revision: "4"},
		{name: "route by id", method: "GET", path: "/forwards/f/routes/" + admin.RouteID("/v1/chat/completions"), token: token, want: 200, bodyHas: []string{`"target_group":"g1"`}},
		{name: "config dry run guarded", method: "PUT", path: "/config?dry_run=true", body: `{"upstreams":[{"name":"x","url":"https://x"}]}`, token: token, want: 409, bodyHas: []string{`would delete 1 of 1 forwards (\"f\")`, `2 of 2 upstreams (\"a\", \"b\")`, `force=true`}},
		{name: "config dry run forced", method: "PUT", path: "/config?dry_run=true&force=true", body: `{"upstreams":[{"name":"x","url":"https://x"}]}`, token: token, want: 200, bodyHas: []string{`"revision":"4"`, `"dry_run":true`, `"action":"removed"`}},
		{name: "config dry run invalid", method: "PUT", path: "/config?dry_run=true", body: `{"upstream_groups":[{"name":"g","upstreams":[{"name":"ghost"}]}]}`, token: token, want: 400, bodyHas: []string{`upstream_groups[0].upstreams[0].name`}},
		{name: "get config", method: "GET", path: "/config", token: token, want: 200, bodyHas: []string{`"http_server"`, `"upstream_groups"`}, bodyLacks: []string{"sk-a-secret", `"revision"`}, revision: "4"},
		{name: "unknown path", method: "GET", path: "/nothing", token: token, want: 404, bodyHas: []string{`"error"`}},
		{name: "proxies", method: "GET", path: "/proxies", token: token, want: 200, bodyHas: []string{`"revision":"4"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, body := restCall(t, tt.method, api+tt.path, tt.body, tt.token)
			if code != tt.want {
				t.Fatalf("%s %s: got %d %s; want %d", tt.method, tt.path, code, body, tt.want)
			}
			for _, s := range tt.bodyHas {
				if !strings.Contains(string(body), s) {
					t.Errorf("body %s lacks %s", body, s)
				}
			}
			for _, s := range tt.bodyLacks {
				if strings.Contains(string(body), s) {
					t.Errorf("body %s contains %s", body, s)
				}
			}
			if tt.revision != "" && hdr.Get("X-Llmproxy-Revision") != tt.revision {
				t.Errorf("X-Llmproxy-Revision %q; want %q", hdr.Get("X-Llmproxy-Revision"), tt.revision)
			}
			switch {
			case code == 401 && hdr.Get("WWW-Authenticate") != "Bearer":
				t.Errorf("WWW-Authenticate %q; want Bearer", hdr.Get("WWW-Authenticate"))
			case code == 204 && len(body) != 0:
				t.Errorf("204 with body %q", body)
			case code >= 400:
				var eb struct {
					Error struct{ Message, Type, Code string }
				}
				if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" || eb.Error.Code == "" {
					t.Errorf("error body %s: want {error:{message,type,code}} (%v)", body, err)
				}
			}
		})
	}

	// Open endpoints.
	for _, p := range []string{"/health", "/metrics", "/api/v1/openapi.json"} {
		code, _, body := restCall(t, "GET", e.rest+p, "", "")
		if code != 200 {
			t.Errorf("GET %s without token: %d %s", p, code, body)
		}
		if p == "/metrics" && !strings.Contains(string(body), `llmproxy_controlplane_grpc_requests_total{code="Unauthenticated"`) {
			t.Errorf("metrics lack the grpc request counter:\n%s", body)
		}
		if p == "/api/v1/openapi.json" && !strings.Contains(string(body), `"/api/v1/upstreams"`) {
			t.Errorf("openapi document lacks /api/v1/upstreams")
		}
	}
}

// TestConfigTooLargeForTheFleet: a config whose snapshot needs a larger xDS response than
// proxies accept is refused with RESOURCE_EXHAUSTED (413 in REST) naming the size, before
// anything is stored.
func TestConfigTooLargeForTheFleet(t *testing.T) {
	e := newEnv(t, "", nil)
	ctx := e.ctx(t)
	// Just under the gRPC message limit, just over the snapshot's.
	big := &configv1.Config{}
	pad := strings.Repeat("v", 512<<10)
	for i := range 31 {
		big.Upstreams = append(big.Upstreams, &configv1.Upstream{Name: fmt.Sprintf("u%d", i), Url: "http://upstream.example.com/v1",
			Headers: []*configv1.HeaderOp{{Op: "insert", Key: "x-pad", Value: pad}}})
	}
	for _, dry := range []bool{true, false} {
		_, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: big, DryRun: dry})
		wantCode(t, err, codes.ResourceExhausted, "config too large: its upstreams need an xDS response of 15.5 MiB", "over the limit of 15.0 MiB")
	}
	if rev, _ := e.stored(t); rev != 0 {
		t.Errorf("stored revision %d; want nothing stored", rev)
	}
}
