// Package xds serves the configuration to the fleet of proxies over delta
// ADS (go-control-plane), publishes every committed store revision as a
// snapshot, and records what each proxy has acknowledged or refused.
//
// One SnapshotCache entry serves the whole fleet: every proxy gets the
// same snapshot (a constant NodeHash), so one SetSnapshot reaches all of
// them. Only delta ADS is served: it sends proxies only what changed, and
// it has no resend loop on NACK. State-of-the-world ADS answers
// Unimplemented.
//
// Snapshots carry upstream credentials in clear; nothing here logs
// resources.
package xds

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/controlplane/snapshot"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	xdsv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/xds/v1"
)

// fleetNode is the one cache key: every proxy shares one snapshot.
const fleetNode = "fleet"

// fleetHash maps every node to fleetNode.
type fleetHash struct{}

func (fleetHash) ID(*corev3.Node) string { return fleetNode }

// Options configures a [Server].
type Options struct {
	// Logger; nil discards logs.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Token, when non-empty, is required on every ADS stream as metadata
	// "authorization: Bearer <token>"; streams without it fail with
	// Unauthenticated, and are logged and counted
	// (llmproxy_controlplane_xds_refused_streams_total).
	Token string
	// TokenEnv names the variable Token came from, for the refusal message;
	// empty selects manifest.TokenEnv.
	TokenEnv string
	// RequireClientCert refuses proxy streams (ADS, and reports through Authorize) whose
	// peer presented no client certificate verified by the gRPC server's TLS settings
	// (llmproxy-controlplane --client-ca). Whether it is set or not, a peer that did present
	// one may only speak for a node id the certificate names (tlsconfig.NodeMatches,
	// AuthorizeNode); other streams end with PermissionDenied.
	RequireClientCert bool
	// ForgetAfter is how long a disconnected proxy stays in Proxies();
	// zero selects 24h.
	ForgetAfter time.Duration
}

// Server is the control plane's xDS side: the snapshot cache, the delta
// ADS service, the publisher and the fleet status. Its methods are safe
// for concurrent use.
type Server struct {
	log         *slog.Logger
	token       string
	tokenEnv    string
	requireCert bool
	cache       cachev3.SnapshotCache
	delta       delta.Server
	fleet       *fleet
	metrics     *metrics

	mu        sync.Mutex
	published uint64
	manifests manifestIndex
}

// New returns a Server whose streams end when ctx is done. It fails only
// when its metrics cannot be registered.
func New(ctx context.Context, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new xds server: %w", err)
	}
	s := &Server{
		log:         log,
		token:       opts.Token,
		tokenEnv:    cmp.Or(opts.TokenEnv, manifest.TokenEnv),
		requireCert: opts.RequireClientCert,
		metrics:     m,
		manifests:   newManifestIndex(64),
	}
	forget := opts.ForgetAfter
	if forget <= 0 {
		forget = 24 * time.Hour
	}
	s.fleet = newFleet(log, m, forget, (*manifestLookupFunc)(s))
	s.cache = cachev3.NewSnapshotCache(true, fleetHash{}, cacheLogger(log))
	s.delta = delta.NewServer(ctx, s.cache, s.fleet)
	return s, nil
}

// Register adds the ADS service to gs. Call it before gs.Serve.
func (s *Server) Register(gs *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, &adsService{s: s})
}

// Proxies returns the status of every proxy connected now or seen within
// ForgetAfter, sorted by node id. It satisfies admin.Fleet.
func (s *Server) Proxies() []*adminv1.ProxyStatus { return s.fleet.proxies() }

// Changed returns a channel that is closed at the next change of the fleet
// status (a proxy connects, disconnects, acknowledges or refuses a
// revision). Take it before reading Proxies, then wait on it: no change is
// missed. It satisfies admin.Fleet.
func (s *Server) Changed() <-chan struct{} { return s.fleet.changes() }

// Revision returns the revision of the last published snapshot, 0 before
// the first.
func (s *Server) Revision() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.published
}

// Publish builds the snapshot of revision rev of cfg and hands it to every
// proxy. It blocks while the cache fans the snapshot out to open streams;
// call it from one goroutine (Run does), never from inside an admin RPC. A
// revision not newer than the last published one is ignored.
func (s *Server) Publish(ctx context.Context, rev uint64, cfg *configv1.Config) error {
	snap, err := snapshot.New(rev, cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if rev <= s.published {
		s.mu.Unlock()
		return nil
	}
	s.manifests.add(snap.ManifestVersion(), snap.Manifest())
	s.mu.Unlock()
	if err := s.cache.SetSnapshot(ctx, fleetNode, snap); err != nil {
		return fmt.Errorf("set snapshot of revision %d: %w", rev, err)
	}
	s.mu.Lock()
	s.published = max(s.published, rev)
	s.mu.Unlock()
	s.metrics.version.Set(float64(rev))
	return nil
}

// manifestLookupFunc finds the manifests of the server's recent snapshots.
type manifestLookupFunc Server

func (l *manifestLookupFunc) byVersion(version string) *xdsv1.Manifest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.manifests.byVer[version]
}

func (l *manifestLookupFunc) latest() uint64 { return (*Server)(l).Revision() }

func (l *manifestLookupFunc) byRevision(rev uint64) *xdsv1.Manifest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.manifests.byRev[rev]
}

// adsService serves delta ADS through go-control-plane and refuses
// state-of-the-world ADS.
type adsService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

func (a *adsService) StreamAggregatedResources(discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "state-of-the-world ADS is not served; use DeltaAggregatedResources")
}

func (a *adsService) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	if err := a.s.authorize(stream.Context(), "ADS"); err != nil {
		return err
	}
	served, err := a.s.checkPeer(stream)
	if err != nil {
		return err
	}
	err = a.s.delta.DeltaStreamHandler(served, resource.AnyType)
	if c, ok := served.(*certifiedStream); ok && c.refusal() != nil {
		return c.refusal()
	}
	return err
}

// Authorize checks ctx's credentials as ADS streams are checked, for the other streams
// proxies open (reports), so that every proxy stream follows one rule: it fails with
// Unauthenticated unless the metadata carries "authorization: Bearer <Token>" (anything
// passes when Token is empty) and, with RequireClientCert, unless the peer presented a
// verified client certificate. Once the stream names its node, AuthorizeNode checks the
// certificate against it. A refusal is logged and counted like an ADS one.
func (s *Server) Authorize(ctx context.Context) error {
	if err := s.authorize(ctx, "report"); err != nil {
		return err
	}
	return s.checkCertificate(ctx)
}

// authorize checks the token of a stream of the given kind ("ADS", "report"), and logs
// and counts a refusal.
func (s *Server) authorize(ctx context.Context, kind string) error {
	problem := tokenProblem(ctx, s.token)
	if problem == "" {
		return nil
	}
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	s.metrics.refused.WithLabelValues(problem).Inc()
	s.log.Warn("refused "+kind+" stream", "reason", problem+" bearer token", "address", addr)
	return refusal(s.tokenEnv)
}

// tokenProblem returns "" when ctx's metadata carries "authorization: Bearer
// <token>" (or token is empty), else why not: "missing" or "invalid".
func tokenProblem(ctx context.Context, token string) string {
	if token == "" {
		return ""
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	for _, v := range vals {
		scheme, got, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "bearer") && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1 {
			return ""
		}
	}
	if len(vals) == 0 {
		return "missing"
	}
	return "invalid"
}

// refusal is the status of a stream without the right token; env names the
// variable holding it.
func refusal(env string) error {
	return status.Error(codes.Unauthenticated, "missing or invalid bearer token: send authorization: Bearer <"+env+">")
}

// checkToken fails with Unauthenticated unless ctx's metadata carries
// "authorization: Bearer <token>". An empty token accepts everything.
func checkToken(ctx context.Context, token string) error {
	if tokenProblem(ctx, token) != "" {
		return refusal(manifest.TokenEnv)
	}
	return nil
}

// StreamAuthInterceptor returns a stream interceptor that applies the same
// token check to the ADS methods only, for a gRPC server built with it.
// The Server already checks its own streams; the interceptor rejects them
// earlier, before any handler runs.
func StreamAuthInterceptor(token string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, "/envoy.service.discovery.v3.AggregatedDiscoveryService/") {
			if err := checkToken(ss.Context(), token); err != nil {
				return err
			}
		}
		return handler(srv, ss)
	}
}

// ServerOptions returns gRPC server options suited to long-lived ADS
// streams: keepalive pings from the server every 30s (a dead proxy is
// noticed within a minute) and permission for proxies to ping every 20s.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
	}
}

// cacheLogger routes go-control-plane's logs to slog; its info messages
// (one per watch) are debug here. Debug messages are formatted only when
// debug is enabled: they list every resource name of a response.
func cacheLogger(log *slog.Logger) gcplog.Logger {
	debug := func(f string, a ...any) {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug(fmt.Sprintf(f, a...))
		}
	}
	return gcplog.LoggerFuncs{
		DebugFunc: debug,
		InfoFunc:  debug,
		WarnFunc:  func(f string, a ...any) { log.Warn(fmt.Sprintf(f, a...)) },
		ErrorFunc: func(f string, a ...any) { log.Error(fmt.Sprintf(f, a...)) },
	}
}

// manifestIndex remembers the manifests of the last few snapshots by
// version and by revision, so the fleet knows what a proxy holds after a
// response (by the response's revision) and when it resumes with a known
// manifest (by the version it announces).
type manifestIndex struct {
	limit    int
	order    []*xdsv1.Manifest
	versions []string
	byVer    map[string]*xdsv1.Manifest
	byRev    map[uint64]*xdsv1.Manifest
}

func newManifestIndex(limit int) manifestIndex {
	return manifestIndex{limit: limit, byVer: map[string]*xdsv1.Manifest{}, byRev: map[uint64]*xdsv1.Manifest{}}
}

func (m *manifestIndex) add(version string, man *xdsv1.Manifest) {
	if _, ok := m.byRev[man.GetRevision()]; ok {
		return
	}
	m.byVer[version] = man
	m.byRev[man.GetRevision()] = man
	m.order = append(m.order, man)
	m.versions = append(m.versions, version)
	if len(m.order) > m.limit {
		if m.byVer[m.versions[0]] == m.order[0] {
			delete(m.byVer, m.versions[0])
		}
		delete(m.byRev, m.order[0].GetRevision())
		m.order, m.versions = m.order[1:], m.versions[1:]
	}
}

var errWatchClosed = errors.New("store watch closed")
