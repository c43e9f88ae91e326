package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of the faults found by the hardening review (issue 14): each fails on the
// code before its fix.

// xdsBootFile writes the xDS tests' bootstrap config for the mocks a and b and a forward on
// port, and returns its path.
func xdsBootFile(t *testing.T, port int, mocks map[string]*mock) string {
	t.Helper()
	return harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, xdsBootstrap, map[string]any{
		"Port": port, "A": mocks["a"].URL, "B": mocks["b"].URL,
	}))
}

// fleetOf is the xDS helpers' view of a control plane started without a token.
func fleetOf(cp *controlPlane) *xdsCP { return &xdsCP{grpcAddr: cp.grpcAddr, httpAddr: cp.httpAddr} }

// TestADSClosedWithOnlyAdminToken (fault 1): with LLMPROXY_ADMIN_AUTH_TOKEN set and
// LLMPROXY_XDS_AUTH_TOKEN not, ADS used to serve every upstream secret to anyone. Now it
// requires the admin token; refused streams are logged and counted; a proxy given the admin
// token follows the control plane.
func TestADSClosedWithOnlyAdminToken(t *testing.T) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	const token = "e2e-admin-token"
	cp := startControlPlane(t, "sqlite:"+t.TempDir()+"/cp.db", token, "--bootstrap", xdsBootFile(t, port, mocks))

	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cp.conn)
	for _, tc := range []struct{ name, auth string }{{"no token", ""}, {"wrong token", "Bearer guess"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if tc.auth != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.auth)
		}
		stream, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			cancel()
			t.Fatalf("%s: open stream: %v", tc.name, err)
		}
		// A refused stream may end before the subscription is sent: Recv tells.
		_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{
			Node: &corev3.Node{Id: "intruder"}, TypeUrl: manifest.UpstreamType, ResourceNamesSubscribe: []string{"*"},
		})
		resp, err := stream.Recv()
		cancel()
		if err == nil {
			t.Fatalf("%s: ADS answered with %d upstreams (secrets included)", tc.name, len(resp.GetResources()))
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v; want Unauthenticated", tc.name, err)
		}
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return strings.Count(cp.proc.Output(), `"msg":"refused ADS stream"`) == 2
	}, "two refused streams logged")
	metrics := fetch(t, "http://"+cp.httpAddr+"/metrics")
	for _, want := range []string{
		`llmproxy_controlplane_xds_refused_streams_total{reason="missing"} 1`,
		`llmproxy_controlplane_xds_refused_streams_total{reason="invalid"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(cp.proc.Output(), token) {
		t.Error("the control plane logged the admin token")
	}

	// A proxy holding only the admin token is let in.
	xdsStartProxy(t, cp.grpcAddr, "p1", t.TempDir(), "LLMPROXY_ADMIN_AUTH_TOKEN="+token, "LLMPROXY_XDS_AUTH_TOKEN=")
	if got := xdsUpstreamOf(t, fmt.Sprintf("http://127.0.0.1:%d", port)); got != "a" {
		t.Errorf("through the proxy: answered by %q; want a", got)
	}
}

// TestOversizedConfigRefused (fault 2): a config whose snapshot is larger than proxies can
// receive used to be stored, and every proxy then failed to decode it forever. Now the write
// is refused with 413 naming the size, and the fleet keeps its revision.
func TestOversizedConfigRefused(t *testing.T) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	cp := startControlPlane(t, "sqlite:"+t.TempDir()+"/cp.db", "", "--bootstrap", xdsBootFile(t, port, mocks))
	p := xdsStartProxy(t, cp.grpcAddr, "p1", t.TempDir())
	fleet := fleetOf(cp)
	fleet.waitFleet(t, 1, "p1")

	// ~10 MB of JSON: many small upstreams, each with a name, version and type URL on the
	// wire, make an xDS response of ~21 MB.
	var cfg map[string]any
	fleet.do(t, http.MethodGet, "/api/v1/config", "", &cfg)
	ups := cfg["upstreams"].([]any)
	for i := range 100000 {
		ups = append(ups, map[string]any{"name": fmt.Sprintf("bulk-%06d", i), "url": fmt.Sprintf("http://upstream-%06d.internal.example.com:8080/v1", i)})
	}
	cfg["upstreams"] = ups
	a := cp.rest(t, http.MethodPut, "/api/v1/config", mustJSON(t, cfg), false)
	if a.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("PUT of an oversized config: %d %.300s; want 413", a.code, a.body)
	}
	for _, want := range []string{"config too large", "MiB", "bytes", "limit"} {
		if !strings.Contains(a.body, want) {
			t.Errorf("413 body %q lacks %q", a.body, want)
		}
	}
	if got := p.revision(t); got != "1" {
		t.Errorf("proxy at revision %s; want 1", got)
	}
	fleet.waitFleet(t, 1, "p1")
	if s := fleet.proxies(t)["p1"]; s.LastNackError != "" {
		t.Errorf("proxy NACKed: %+v", s)
	}
}

// fakeADS is a control plane that sends each stream a small response and then one larger
// than a proxy accepts, recording when streams open and the first request of each.
type fakeADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	big []byte

	mu     sync.Mutex
	opens  []time.Time // when each stream's first request arrived
	closes []time.Time // when the proxy ended each stream
	first  []*discoveryv3.DeltaDiscoveryRequest
}

func (f *fakeADS) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.opens = append(f.opens, time.Now())
	f.first = append(f.first, req)
	f.mu.Unlock()
	// The proxy connects and takes a first, small response...
	if err := stream.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: manifest.ForwardType, SystemVersionInfo: "1", Nonce: "1"}); err != nil {
		return err
	}
	// ...then gets a snapshot over its receive limit.
	big := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: manifest.UpstreamType, SystemVersionInfo: "1", Nonce: "2",
		Resources: []*discoveryv3.Resource{{Name: "big", Version: "1", Resource: &anypb.Any{TypeUrl: manifest.UpstreamType, Value: f.big}}}}
	if err := stream.Send(big); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			f.mu.Lock()
			f.closes = append(f.closes, time.Now())
			f.mu.Unlock()
			return nil
		}
	}
}

// waits returns how long the proxy waited before each reconnection: from the end of a
// stream to the first request of the next.
func (f *fakeADS) waits() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	for i := 0; i+1 < len(f.opens) && i < len(f.closes); i++ {
		out = append(out, f.opens[i+1].Sub(f.closes[i]))
	}
	return out
}

func (f *fakeADS) firstRequests() []*discoveryv3.DeltaDiscoveryRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*discoveryv3.DeltaDiscoveryRequest(nil), f.first...)
}

// TestProxyBacksOffOnUndecodableSnapshot (fault 2): a proxy that cannot decode a response
// used to reconnect ~10 times a second forever, its backoff reset by each connect, and never
// said why. Now its backoff keeps growing until a revision is applied, and each new stream
// reports the failure as a NACK.
func TestProxyBacksOffOnUndecodableSnapshot(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeADS{big: make([]byte, 17<<20)}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, fake)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	harness.Start(t, harness.Binaries(t).Proxy, []string{
		"--control-plane", lis.Addr().String(), "--node-id", "p1", "--state-dir", t.TempDir(),
		"--admin-addr", harness.FreeAddr(t), "--shutdown-timeout", "5s",
	})
	var waits []time.Duration
	harness.Eventually(t, 30*time.Second, func() bool {
		waits = fake.waits()
		return len(waits) >= 5
	}, "six streams")
	for i, req := range fake.firstRequests()[1:6] {
		if d := req.GetErrorDetail(); d == nil || !strings.Contains(d.GetMessage(), "larger than max") {
			t.Errorf("stream %d: first request carries %v; want a NACK of the undecodable response", i+2, d)
		}
	}
	t.Logf("waits before reconnecting: %v", waits[:5])
	// Backoff from 100ms, doubling, with equal jitter: the fourth wait is 400-800ms, the
	// fifth 800-1600ms. A backoff reset by every connect stays at 50-100ms.
	if waits[3] < 200*time.Millisecond || waits[4] < 400*time.Millisecond {
		t.Errorf("waits before reconnecting %v: the backoff did not grow", waits[:5])
	}
}

// TestUpstreamURLCredentialsRefused (faults 5 and 11): credentials written into an upstream
// URL used to be accepted, shown in clear and not even sent; an invalid URL's password was
// echoed in the 400 and the log. Now both are refused, pointing to auth and headers, and no
// answer or log line shows them.
func TestUpstreamURLCredentialsRefused(t *testing.T) {
	cp := startControlPlane(t, "sqlite:"+t.TempDir()+"/cp.db", "")
	secrets := []string{"PwInUrl-1", "KeyInQuery-2", "PwInBadUrl-3"}
	for _, body := range []string{
		`{"name":"a","url":"https://user:PwInUrl-1@api.example.com/v1"}`,
		`{"name":"b","url":"https://api.example.com/v1?api_key=KeyInQuery-2&api-version=2024-06-01"}`,
		`{"name":"c","url":"https://user:PwInBadUrl-3 @api.example.com/v1"}`,
	} {
		a := cp.rest(t, http.MethodPost, "/api/v1/upstreams", body, false)
		if a.code != http.StatusBadRequest {
			t.Errorf("POST %s: %d %s; want 400", body, a.code, a.body)
			continue
		}
		if !strings.Contains(a.body, `"field":"upstream.url"`) {
			t.Errorf("POST %s: %s does not name upstream.url", body, a.body)
		}
		if !strings.Contains(body, "PwInBadUrl") && !(strings.Contains(a.body, "auth") && strings.Contains(a.body, "headers")) {
			t.Errorf("POST %s: %s does not point to auth and headers", body, a.body)
		}
	}
	bad := harness.WriteFile(t, "bad.yaml", "upstreams:\n  - name: a\n    url: https://user:PwInUrl-1@api.example.com/v1\n")
	code, _, stderr := runProxy(t, nil, "--test", "--config", bad)
	if code == 0 || !strings.Contains(stderr, "upstreams[0].url: url must not carry a user name or password") {
		t.Errorf("llmproxy --test: exit %d, %s; want the credential refused", code, stderr)
	}
	for _, s := range secrets {
		if strings.Contains(cp.proc.Output(), s) || strings.Contains(stderr, s) {
			t.Errorf("%s appears in a log or error", s)
		}
		if export := cp.rest(t, http.MethodGet, "/api/v1/config", "", false); strings.Contains(export.body, s) {
			t.Errorf("%s stored: %s", s, export.body)
		}
	}
	// The same errors without the secret fields are answered with their values shown.
	if a := cp.rest(t, http.MethodPost, "/api/v1/upstreams", `{"name":"d","url":"ftp://api.example.com/v1"}`, false); !strings.Contains(a.body, `url \"ftp://api.example.com/v1\" must be absolute with scheme http or https`) {
		t.Errorf("plain bad url: %d %s", a.code, a.body)
	}
}

// TestRedactedSecretStaysWithItsHost (fault 6): writing "<redacted>" back used to restore
// the stored secret whatever the resource's new URL, sending it to a new host. Now it is
// restored only while scheme, host and port stay; otherwise the write asks for the secret.
func TestRedactedSecretStaysWithItsHost(t *testing.T) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	forward := fmt.Sprintf("http://127.0.0.1:%d", port)
	cp := startControlPlane(t, "sqlite:"+t.TempDir()+"/cp.db", "", "--bootstrap", xdsBootFile(t, port, mocks))
	xdsStartProxy(t, cp.grpcAddr, "p1", t.TempDir())
	fleet := fleetOf(cp)
	const token = "sk-stays-with-a"
	fleet.write(t, http.MethodPut, "/api/v1/upstreams/up-a", fmt.Sprintf(`{"url":%q,"auth":{"type":"bearer","token":%q}}`, mocks["a"].URL, token))
	fleet.write(t, http.MethodPost, "/api/v1/upstream-groups",
		`{"name":"via","upstreams":[{"name":"up-b"}],"http_client":{"proxy":{"url":"http://puser:proxy-pass-9@127.0.0.1:3128"}}}`)

	a := cp.rest(t, http.MethodPut, "/api/v1/upstreams/up-a", fmt.Sprintf(`{"url":%q,"auth":{"type":"bearer","token":"<redacted>"}}`, mocks["b"].URL), false)
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "upstream.auth.token") || !strings.Contains(a.body, "send the secret itself") {
		t.Errorf("moving up-a to b with a redacted token: %d %s; want 400 asking for the token", a.code, a.body)
	}
	a = cp.rest(t, http.MethodPut, "/api/v1/upstream-groups/via",
		`{"upstreams":[{"name":"up-b"}],"http_client":{"proxy":{"url":"http://puser:<redacted>@127.0.0.2:3128"}}}`, false)
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "upstream_group.http_client.proxy.url") {
		t.Errorf("moving the outbound proxy with a redacted password: %d %s; want 400", a.code, a.body)
	}
	for _, s := range []string{token, "proxy-pass-9"} {
		if strings.Contains(a.body, s) || strings.Contains(cp.proc.Output(), s) {
			t.Errorf("%s shown in an answer or log", s)
		}
	}

	// Same origin, new path: the stored secret is kept and still sent.
	rev := fleet.write(t, http.MethodPut, "/api/v1/upstreams/up-a", fmt.Sprintf(`{"url":%q,"auth":{"type":"bearer","token":"<redacted>"}}`, mocks["a"].URL+"/"))
	fleet.write(t, http.MethodPut, "/api/v1/upstream-groups/via", `{"upstreams":[{"name":"up-b"}],"http_client":{"proxy":{"url":"http://other:<redacted>@127.0.0.1:3128"}}}`)
	fleet.waitFleet(t, rev+1, "p1")
	if got := xdsUpstreamOf(t, forward); got != "a" {
		t.Fatalf("answered by %q; want a", got)
	}
	recs := mocks["a"].requests(t)
	if got := recs[len(recs)-1].Header.Get("Authorization"); got != "Bearer "+token {
		t.Errorf("a received Authorization %q; want the stored token", got)
	}
	for _, r := range mocks["b"].requests(t) {
		if strings.Contains(r.Header.Get("Authorization"), token) {
			t.Errorf("b received a's token")
		}
	}
}

// TestSQLiteStorePrivate (fault 9): the SQLite database and its WAL, which hold upstream
// secrets in clear, used to be created 0644 in a 0750 directory.
func TestSQLiteStorePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	db := filepath.Join(dir, "cp.db")
	cp := startControlPlane(t, "sqlite:"+db, "")
	if a := cp.rest(t, http.MethodPost, "/api/v1/upstreams", `{"name":"a","url":"http://a","auth":{"type":"bearer","token":"sk-on-disk"}}`, false); a.code != http.StatusCreated {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, db: 0o600, db + "-wal": 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v; want %v", filepath.Base(p), got, want)
		}
	}
}

// TestConfigFaultsRefusedEarly (fault 11): a forward address that is a host name used to
// be accepted and then NACKed by every proxy forever; a route path with "?" could never
// match; a 100 MB YAML file cost 1.6 GB and reported "aliases expand". All are refused
// where the operator writes them, with the field or the size named.
func TestConfigFaultsRefusedEarly(t *testing.T) {
	cp := startControlPlane(t, "sqlite:"+t.TempDir()+"/cp.db", "")
	cfg := `{"http_server":{"forwards":[{"name":"f","address":"gateway.internal.example.com","port":3000,"default_group":"g",
		"routing":[{"path":"/v1/chat/completions?stream=true","target_group":"g"},{"path":"/v1/items/{id:[a-z]?[0-9]+}","target_group":"g"}]}]},
		"upstreams":[{"name":"a","url":"http://127.0.0.1:1"}],"upstream_groups":[{"name":"g","upstreams":[{"name":"a"}]}]}`
	a := cp.rest(t, http.MethodPut, "/api/v1/config", cfg, false)
	if a.code != http.StatusBadRequest {
		t.Fatalf("PUT: %d %s; want 400", a.code, a.body)
	}
	var e struct {
		Error struct {
			Fields []struct{ Field, Description string } `json:"fields"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(a.body), &e); err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, f := range e.Error.Fields {
		fields = append(fields, f.Field)
	}
	if got, want := strings.Join(fields, " "), "http_server.forwards[0].address http_server.forwards[0].routing[0].path"; got != want {
		t.Errorf("fields %q; want %q (%s)", got, want, a.body)
	}

	// A 100 MB file is refused by its size, before it is read. (The child's peak memory is
	// not asserted: Linux counts the test process's own memory in a child's ru_maxrss.)
	big := harness.WriteFile(t, "big.yaml", "upstreams:\n")
	if err := os.Truncate(big, 100<<20); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runProxy(t, nil, "--test", "--config", big)
	if code == 0 || !strings.Contains(stderr, "file is too large: 104857600 bytes") {
		t.Errorf("llmproxy --test on 100 MB: exit %d, %s; want a size error", code, stderr)
	}
	cpBin, _ := cpBinaries(t)
	boot := harness.Start(t, cpBin, []string{"--store", "sqlite:" + t.TempDir() + "/cp.db", "--bootstrap", big,
		"--grpc-addr", harness.FreeAddr(t), "--http-addr", harness.FreeAddr(t)})
	if code := boot.Wait(20 * time.Second); code == 0 || !strings.Contains(boot.Output(), "file is too large: 104857600 bytes") {
		t.Errorf("control plane --bootstrap on 100 MB: exit %d, %s", code, boot.Output())
	}
}
