package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/controlplane/snapshot"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/e2e/pki"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/xdsclient"
)

var _ admin.Fleet = (*Server)(nil)

const waitFor = 10 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// controlPlane is an in-process xDS server on a real gRPC listener.
type controlPlane struct {
	addr string
	srv  *Server
	reg  *prometheus.Registry
	stop func()
}

func startControlPlane(t *testing.T, st store.Store, addr, token string) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, st, addr, Options{Token: token})
}

// startControlPlaneWith is startControlPlane with the server's options (Logger and
// Registerer are set here) and extra gRPC server options (TLS credentials, say).
func startControlPlaneWith(t *testing.T, st store.Store, addr string, opts Options, extra ...grpc.ServerOption) *controlPlane {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	opts.Logger, opts.Registerer = testLogger(t).With("component", "cp"), reg
	srv, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(ServerOptions(), extra...)...)
	srv.Register(gs)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() {
		defer wg.Done()
		if err := srv.Run(ctx, st); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	cp := &controlPlane{addr: lis.Addr().String(), srv: srv, reg: reg}
	cp.stop = func() {
		once.Do(func() {
			cancel()
			gs.Stop()
			wg.Wait()
		})
	}
	t.Cleanup(cp.stop)
	return cp
}

// waitProxies waits until the fleet status satisfies ok. It re-reads the status only when
// Changed fires, so a status change that is not signalled makes it time out.
func (cp *controlPlane) waitProxies(t *testing.T, what string, ok func(map[string]*adminv1.ProxyStatus) bool) map[string]*adminv1.ProxyStatus {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		changed := cp.srv.Changed()
		got := map[string]*adminv1.ProxyStatus{}
		for _, p := range cp.srv.Proxies() {
			got[p.GetNodeId()] = p
		}
		if ok(got) {
			return got
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("fleet status: waiting for %s; have %v", what, got)
		}
	}
}

// proxy is an in-process xdsclient with an Apply that records every call.
type proxy struct {
	t      *testing.T
	node   string
	reject func(*configv1.Config) error

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every Apply
	calls   []applied     // successful applies
	refused int

	cancel func()
	done   chan struct{}
}

type applied struct {
	revision string
	cfg      *configv1.Config
}

func startProxy(t *testing.T, addr, node, stateDir, token string, reject func(*configv1.Config) error) *proxy {
	t.Helper()
	return startProxyWith(t, xdsclient.Options{Addr: addr, NodeID: node, StateDir: stateDir, Token: token}, reject)
}

// startProxyWith is startProxy with the client's options (Apply, Logger and the backoff are
// set here).
func startProxyWith(t *testing.T, opts xdsclient.Options, reject func(*configv1.Config) error) *proxy {
	t.Helper()
	p := &proxy{t: t, node: opts.NodeID, reject: reject, changed: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	opts.Apply, opts.Logger = p.apply, testLogger(t).With("node", opts.NodeID)
	opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	go func() {
		defer close(p.done)
		err := xdsclient.Run(ctx, opts)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) stop() {
	p.cancel()
	<-p.done
}

func (p *proxy) apply(revision string, cfg *configv1.Config) error {
	var err error
	if p.reject != nil {
		err = p.reject(cfg)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.refused++
	} else {
		p.calls = append(p.calls, applied{revision, cfg})
	}
	close(p.changed)
	p.changed = make(chan struct{})
	return err
}

func (p *proxy) current() (applied, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) == 0 {
		return applied{}, p.refused
	}
	return p.calls[len(p.calls)-1], p.refused
}

// waitRevision waits until the last successful Apply is of revision rev.
func (p *proxy) waitRevision(rev uint64) *configv1.Config {
	p.t.Helper()
	want := fmt.Sprint(rev)
	timeout := time.After(waitFor)
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if cur, _ := p.current(); cur.revision == want {
			return cur.cfg
		}
		select {
		case <-ch:
		case <-timeout:
			cur, _ := p.current()
			p.t.Fatalf("%s: waiting for revision %s; last applied %q", p.node, want, cur.revision)
		}
	}
}

// waitRefused waits until Apply has refused n configs.
func (p *proxy) waitRefused(n int) {
	p.t.Helper()
	timeout := time.After(waitFor)
	for {
		p.mu.Lock()
		ch, refused := p.changed, p.refused
		p.mu.Unlock()
		if refused >= n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			p.t.Fatalf("%s: waiting for %d refusals; have %d", p.node, n, refused)
		}
	}
}

// value reads a gauge or counter, or a histogram's observation count.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

func put(t *testing.T, st store.Store, cfg *configv1.Config) uint64 {
	t.Helper()
	rev, err := st.Update(t.Context(), nil, store.Change{}, func(uint64, *configv1.Config) (*configv1.Config, error) {
		return proto.Clone(cfg).(*configv1.Config), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// config is a forward to group g whose members are the given upstreams.
func config(route string, upstreams ...string) *configv1.Config {
	c := &configv1.Config{HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{{
		Name: "main", DefaultGroup: "g",
		Routing: []*configv1.Route{{Path: route, TargetGroup: "g"}},
	}}}}
	g := &configv1.UpstreamGroup{Name: "g"}
	for _, u := range upstreams {
		c.Upstreams = append(c.Upstreams, &configv1.Upstream{Name: u, Url: "http://" + u + ".test"})
		g.Upstreams = append(g.Upstreams, &configv1.UpstreamRef{Name: u})
	}
	c.UpstreamGroups = []*configv1.UpstreamGroup{g}
	return c
}

func TestWriteReachesFleet(t *testing.T) {
	st := openStore(t)
	first := put(t, st, config("/v1/a", "u1"))
	cp := startControlPlane(t, st, "127.0.0.1:0", "")
	p1 := startProxy(t, cp.addr, "p1", "", "", nil)
	p2 := startProxy(t, cp.addr, "p2", "", "", nil)
	p1.waitRevision(first)
	p2.waitRevision(first)

	want := config("/v1/b", "u1", "u2")
	rev := put(t, st, want)
	for _, p := range []*proxy{p1, p2} {
		if got := p.waitRevision(rev); !proto.Equal(got, want) {
			t.Errorf("%s applied %v\nwant %v", p.node, got, want)
		}
	}
	fleet := cp.waitProxies(t, "both at the new revision", func(m map[string]*adminv1.ProxyStatus) bool {
		return len(m) == 2 && m["p1"].GetAckedRevision() == rev && m["p2"].GetAckedRevision() == rev
	})
	for _, s := range fleet {
		if !s.GetConnected() || s.GetConnectedSince() == nil || !strings.HasPrefix(s.GetAddress(), "127.0.0.1:") || s.GetLastNackRevision() != 0 {
			t.Errorf("status %v", s)
		}
	}
	if got := value(t, cp.srv.metrics.version); got != float64(rev) {
		t.Errorf("snapshot_version %v; want %d", got, rev)
	}
	if got := value(t, cp.srv.metrics.connected); got != 2 {
		t.Errorf("connected_proxies %v; want 2", got)
	}
	if n := value(t, cp.srv.metrics.pushLatency); n < 2 {
		t.Errorf("push latency: %v observations; want 2", n)
	}
	families, err := cp.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, n := range []string{"llmproxy_controlplane_connected_proxies", "llmproxy_controlplane_snapshot_version",
		"llmproxy_controlplane_push_latency_seconds", "llmproxy_controlplane_xds_acks_total"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
	// Each proxy applied each revision once: no duplicate or partial applies.
	for _, p := range []*proxy{p1, p2} {
		p.mu.Lock()
		if len(p.calls) != 2 {
			t.Errorf("%s: %d applies; want 2", p.node, len(p.calls))
		}
		p.mu.Unlock()
	}
	p2.stop()
	cp.waitProxies(t, "p2 disconnected", func(m map[string]*adminv1.ProxyStatus) bool {
		return m["p2"] != nil && !m["p2"].GetConnected() && m["p1"].GetConnected()
	})
}

func TestNACK(t *testing.T) {
	st := openStore(t)
	good := put(t, st, config("/v1/a", "u1"))
	cp := startControlPlane(t, st, "127.0.0.1:0", "")
	reject := func(cfg *configv1.Config) error {
		for _, u := range cfg.GetUpstreams() {
			if u.GetName() == "bad" {
				return errors.New(`upstreams[1].url: "bad" is not allowed here`)
			}
		}
		return nil
	}
	p := startProxy(t, cp.addr, "p", "", "", reject)
	other := startProxy(t, cp.addr, "other", "", "", nil)
	p.waitRevision(good)

	bad := put(t, st, config("/v1/a", "u1", "bad"))
	p.waitRefused(1)
	other.waitRevision(bad)
	fleet := cp.waitProxies(t, "the NACK", func(m map[string]*adminv1.ProxyStatus) bool {
		return m["p"].GetLastNackRevision() == bad && m["other"].GetAckedRevision() == bad
	})
	if s := fleet["p"]; s.GetAckedRevision() != good || !strings.Contains(s.GetLastNackError(), `"bad" is not allowed here`) {
		t.Errorf("status %v; want acked %d and the reason", s, good)
	}
	if cur, _ := p.current(); cur.revision != fmt.Sprint(good) {
		t.Errorf("proxy serves %s; want %d", cur.revision, good)
	}
	var nacks float64
	for _, typ := range []string{"manifest", "forward", "upstream_group", "upstream"} {
		nacks += value(t, cp.srv.metrics.nacks.WithLabelValues(typ))
	}
	if got := nacks; got != 1 {
		t.Errorf("nacks %v; want 1", got)
	}

	fixed := put(t, st, config("/v1/c", "u1", "u3"))
	p.waitRevision(fixed)
	fleet = cp.waitProxies(t, "the fix ACKed", func(m map[string]*adminv1.ProxyStatus) bool {
		return m["p"].GetAckedRevision() == fixed
	})
	if s := fleet["p"]; s.GetLastNackRevision() != bad {
		t.Errorf("last NACK %d; want %d kept", s.GetLastNackRevision(), bad)
	}
	if _, refused := p.current(); refused != 1 {
		t.Errorf("refused %d times; want once (no resend loop)", refused)
	}
}

func TestReconnect(t *testing.T) {
	st := openStore(t)
	rev := put(t, st, config("/v1/a", "u1"))
	cp := startControlPlane(t, st, "127.0.0.1:0", "")
	stateDir := t.TempDir()
	p1 := startProxy(t, cp.addr, "p1", stateDir, "", nil)
	p2 := startProxy(t, cp.addr, "p2", "", "", nil)
	p1.waitRevision(rev)
	p2.waitRevision(rev)

	cp.stop()
	latest := put(t, st, config("/v1/b", "u2"))
	// A proxy started while the control plane is down serves the saved
	// config at once.
	p1.stop()
	p3 := startProxy(t, cp.addr, "p1", stateDir, "", nil)
	p3.waitRevision(rev)

	cp2 := startControlPlane(t, st, cp.addr, "")
	for _, p := range []*proxy{p2, p3} {
		if got := p.waitRevision(latest); !proto.Equal(got, config("/v1/b", "u2")) {
			t.Errorf("%s: %v", p.node, got)
		}
	}
	cp2.waitProxies(t, "both reconnected at the latest revision", func(m map[string]*adminv1.ProxyStatus) bool {
		return m["p1"].GetAckedRevision() == latest && m["p2"].GetAckedRevision() == latest &&
			m["p1"].GetConnected() && m["p2"].GetConnected()
	})
	// p2 applied each revision once: the server's absence caused no apply.
	p2.mu.Lock()
	if len(p2.calls) != 2 {
		t.Errorf("p2 applied %d times; want 2", len(p2.calls))
	}
	p2.mu.Unlock()

	// A reconnect to an unchanged control plane sends no resources again
	// and the proxy is reported at its revision.
	cp2.stop()
	cp3 := startControlPlane(t, st, cp.addr, "")
	cp3.waitProxies(t, "acked after resuming", func(m map[string]*adminv1.ProxyStatus) bool {
		return m["p1"].GetAckedRevision() == latest && m["p2"].GetAckedRevision() == latest
	})
	p2.mu.Lock()
	if len(p2.calls) != 2 {
		t.Errorf("p2 applied %d times after a reconnect with no change; want 2", len(p2.calls))
	}
	p2.mu.Unlock()
}

// TestRenameNeverPartial renames an upstream and repoints the group at it
// in one revision, many times over: no Apply ever sees the group
// referencing a missing upstream.
func TestRenameNeverPartial(t *testing.T) {
	st := openStore(t)
	put(t, st, config("/v1/a", "u0"))
	cp := startControlPlane(t, st, "127.0.0.1:0", "")
	check := func(cfg *configv1.Config) error {
		names := map[string]bool{}
		for _, u := range cfg.GetUpstreams() {
			names[u.GetName()] = true
		}
		for _, g := range cfg.GetUpstreamGroups() {
			for _, m := range g.GetUpstreams() {
				if !names[m.GetName()] {
					t.Errorf("apply with group %q referencing missing upstream %q", g.GetName(), m.GetName())
					return errors.New("missing upstream")
				}
			}
		}
		return nil
	}
	p1 := startProxy(t, cp.addr, "p1", "", "", check)
	p2 := startProxy(t, cp.addr, "p2", "", "", check)
	var last uint64
	for i := 1; i <= 30; i++ {
		last = put(t, st, config("/v1/a", fmt.Sprintf("u%d", i)))
	}
	p1.waitRevision(last)
	p2.waitRevision(last)
}

// TestNACKOfUndecodableResponse: a proxy that could not decode a response (its stream
// ended) reports it on its next stream's subscription, without a nonce; the fleet status
// shows it against the revision being served.
func TestNACKOfUndecodableResponse(t *testing.T) {
	st := openStore(t)
	rev := put(t, st, config("/v1/a", "u1"))
	cp := startControlPlane(t, st, "127.0.0.1:0", "")
	waitUntil(t, func() bool { return cp.srv.Revision() == rev })

	ads := rawADS(t, cp.addr)
	stream, err := ads.DeltaAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const reason = "cannot decode a response from the control plane: grpc: received message larger than max (20000000 vs. 16777216)"
	err = stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: "big"}, TypeUrl: snapshot.ManifestType, ResourceNamesSubscribe: []string{"*"},
		ErrorDetail: &statuspb.Status{Code: int32(codes.ResourceExhausted), Message: reason},
	})
	if err != nil {
		t.Fatal(err)
	}
	fleet := cp.waitProxies(t, "the NACK", func(m map[string]*adminv1.ProxyStatus) bool { return m["big"].GetLastNackError() != "" })
	if s := fleet["big"]; s.GetLastNackRevision() != rev || s.GetLastNackError() != reason || !s.GetConnected() {
		t.Errorf("status %v; want connected with a NACK of revision %d: %s", s, rev, reason)
	}
	if n := value(t, cp.srv.metrics.nacks.WithLabelValues("manifest")); n != 1 {
		t.Errorf("nacks %v; want 1", n)
	}
}

// rawADS is an ADS client of the control plane at addr, for tests that speak the protocol
// themselves.
func rawADS(t *testing.T, addr string) discoveryv3.AggregatedDiscoveryServiceClient {
	t.Helper()
	return rawADSWith(t, addr, insecure.NewCredentials())
}

// rawADSWith is rawADS over creds (TLS, say).
func rawADSWith(t *testing.T, addr string, creds credentials.TransportCredentials) discoveryv3.AggregatedDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
}

// waitUntil waits until cond holds.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAuth(t *testing.T) {
	st := openStore(t)
	rev := put(t, st, config("/v1/a", "u1"))
	cp := startControlPlane(t, st, "127.0.0.1:0", "s3cret")

	ads := rawADS(t, cp.addr)
	stream, err := ads.DeltaAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("stream without token: %v; want Unauthenticated", err)
	}
	wrong, err := ads.DeltaAggregatedResources(
		metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer guess"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("stream with a wrong token: %v; want Unauthenticated", err)
	}
	for _, reason := range []string{"missing", "invalid"} {
		if n := value(t, cp.srv.metrics.refused.WithLabelValues(reason)); n != 1 {
			t.Errorf("refused streams, %s token: %v; want 1", reason, n)
		}
	}
	sotw, err := ads.StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sotw.Recv(); status.Code(err) != codes.Unimplemented {
		t.Errorf("SotW stream: %v; want Unimplemented", err)
	}

	p := startProxy(t, cp.addr, "p", "", "s3cret", nil)
	p.waitRevision(rev)
}

// gatedStore holds Load until released, so a test can connect proxies to a
// control plane that has not published anything yet.
type gatedStore struct {
	store.Store
	release chan struct{}
}

func (g *gatedStore) Load(ctx context.Context) (uint64, *configv1.Config, error) {
	select {
	case <-g.release:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
	return g.Store.Load(ctx)
}

// TestResumeBeforeFirstPublish: a proxy resuming from its state dir
// connects before the control plane has published; once it does, nothing is
// resent or re-applied, and the fleet status shows the proxy at the
// revision.
func TestResumeBeforeFirstPublish(t *testing.T) {
	base := openStore(t)
	cfg := config("/v1/a", "u1", "u2")
	rev := put(t, base, cfg)
	dir := t.TempDir()
	if err := xdsclient.SaveState(dir, fmt.Sprint(rev), cfg); err != nil {
		t.Fatal(err)
	}
	st := &gatedStore{Store: base, release: make(chan struct{})}
	cp := startControlPlane(t, st, "127.0.0.1:0", "")
	p := startProxy(t, cp.addr, "p", dir, "", nil)
	p.waitRevision(rev) // from the state dir
	cp.waitProxies(t, "p connected", func(m map[string]*adminv1.ProxyStatus) bool { return m["p"].GetConnected() })
	close(st.release)
	cp.waitProxies(t, "p acked", func(m map[string]*adminv1.ProxyStatus) bool { return m["p"].GetAckedRevision() == rev })
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) != 1 {
		t.Errorf("applied %d times; want once, from the state dir", len(p.calls))
	}
}

// TestClientCertificates: with client certificates required, a proxy whose certificate
// names its node id gets the config; a stream without a certificate is refused
// (Unauthenticated), and one whose certificate names another node is refused
// (PermissionDenied) and never appears in the fleet status.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := pki.CAFor(t, "server-ca"), pki.CAFor(t, "client-ca")
	serverRoots, clientRoots := serverCA.Pool(), clientCA.Pool()

	st := openStore(t)
	rev := put(t, st, config("/v1/a", "u1"))
	cp := startControlPlaneWith(t, st, "127.0.0.1:0", Options{RequireClientCert: true},
		grpc.Creds(credentials.NewTLS(tlsconfig.Server(serverCA.PairFor(t, dir, "cp", "cp", "127.0.0.1"), clientRoots))))

	p1 := clientCA.PairFor(t, dir, "p1", "p1")
	startProxyWith(t, xdsclient.Options{Addr: cp.addr, NodeID: "p1", TLS: tlsconfig.Client(serverRoots, p1)}, nil).waitRevision(rev)

	open := func(cert *tlsconfig.Pair, node string) error {
		stream, err := rawADSWith(t, cp.addr, credentials.NewTLS(tlsconfig.Client(serverRoots, cert))).DeltaAggregatedResources(t.Context())
		if err != nil {
			return err
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: manifest.ManifestType}); err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	if err := open(nil, "anon"); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "client certificate") {
		t.Errorf("no client certificate: %v; want Unauthenticated naming the certificate", err)
	}
	if err := open(p1, "p2"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"p2"`) || !strings.Contains(err.Error(), "p1") {
		t.Errorf("certificate of p1 asking as p2: %v; want PermissionDenied naming both", err)
	}
	for _, ps := range cp.srv.Proxies() {
		if id := ps.GetNodeId(); id != "p1" {
			t.Errorf("fleet status lists %q; only p1 was let in", id)
		}
	}
	for _, reason := range []string{"no_certificate", "node_not_in_certificate"} {
		if n := value(t, cp.srv.metrics.refused.WithLabelValues(reason)); n != 1 {
			t.Errorf("refused streams{reason=%q} = %v; want 1", reason, n)
		}
	}
}
