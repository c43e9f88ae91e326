package xds

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/controlplane/snapshot"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	xdsv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/xds/v1"
)

// fleet implements go-control-plane's delta callbacks and keeps the status
// of every proxy.
//
// ACK bookkeeping. A delta ACK names a response nonce, not a version, and
// our proxies answer every response at once: an ACK means "consistent so
// far", and it reports an applied revision only when it answers the
// response that made the proxy's resources match a manifest. Our proxies
// subscribe to every type with a wildcard, so after a response of a type at
// snapshot revision V a proxy holds exactly that type's resources of V
// (go-control-plane sends the difference between what the stream returned
// and V); before any response it holds what it announced on subscription.
// Each stream therefore tracks, per type, only the digest of what the proxy
// holds (taken from the manifest of V, or computed once from the announced
// versions) and the manifest it holds: O(1) per response, whatever the
// size of the config. When a response is sent, the fleet notes under its
// nonce whether the proxy then matched its manifest. An ACK of such a nonce
// sets the proxy's acked revision to the manifest's; a NACK records the
// manifest's revision (or, for a response that left the revision
// incomplete, the response's system version) and the error detail's
// message. A stream that subscribes to anything but the wildcard is never
// reported as having applied a revision.
type fleet struct {
	log      *slog.Logger
	metrics  *metrics
	forget   time.Duration
	manifest manifestLookup
	now      func() time.Time

	mu      sync.Mutex
	streams map[int64]*streamState
	nodes   map[string]*nodeState
	// changed is closed, and replaced, whenever a node's status changes.
	changed chan struct{}
}

// manifestLookup finds the manifests of recent snapshots.
type manifestLookup interface {
	byVersion(version string) *xdsv1.Manifest
	byRevision(rev uint64) *xdsv1.Manifest
	// latest returns the revision of the last published snapshot.
	latest() uint64
}

var _ delta.Callbacks = (*fleet)(nil)

// nodeState is what Proxies reports for one node id.
type nodeState struct {
	streams        int
	connectedSince time.Time
	lastSeen       time.Time
	address        string
	acked          uint64
	nackRevision   uint64
	nackError      string
}

// streamState is one ADS stream. Its tracking fields are touched only by
// the stream's goroutine (go-control-plane calls a stream's callbacks from
// one goroutine); node is set under fleet.mu.
type streamState struct {
	opened  time.Time
	address string
	node    string
	// held is, per subscribed type, the digest of the resources the proxy
	// holds; a nil value means unknown.
	held map[string]*xdsv1.TypeDigest
	// manifest is the manifest the proxy holds, if known.
	manifest *xdsv1.Manifest
	// untracked is set once the stream subscribes to anything but the
	// wildcard: what it holds is then not followed.
	untracked bool
	pending   map[string]sentResponse // type URL → last response sent
}

// sentResponse is what the fleet remembers of a response until it is
// answered.
type sentResponse struct {
	nonce    string
	version  uint64 // the response's system version (snapshot revision)
	complete bool   // the proxy's resources matched manifest after it
	revision uint64 // the manifest's revision, when complete
}

func newFleet(log *slog.Logger, m *metrics, forget time.Duration, manifest manifestLookup) *fleet {
	return &fleet{
		log:      log,
		metrics:  m,
		forget:   forget,
		manifest: manifest,
		now:      time.Now,
		streams:  map[int64]*streamState{},
		nodes:    map[string]*nodeState{},
		changed:  make(chan struct{}),
	}
}

// changes returns a channel closed at the next change of any node's status.
func (f *fleet) changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// notifyLocked wakes everyone waiting on changes. f.mu must be held.
func (f *fleet) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// OnDeltaStreamOpen records the stream and its peer address.
func (f *fleet) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	st := &streamState{
		opened:  f.now(),
		held:    map[string]*xdsv1.TypeDigest{},
		pending: map[string]sentResponse{},
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		st.address = p.Addr.String()
	}
	f.mu.Lock()
	f.streams[id] = st
	f.mu.Unlock()
	return nil
}

// OnDeltaStreamClosed marks the stream's node disconnected when it was its
// last stream.
func (f *fleet) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.streams[id]
	if !ok {
		return
	}
	delete(f.streams, id)
	if n := f.nodes[st.node]; st.node != "" && n != nil {
		n.streams--
		n.lastSeen = f.now()
		if n.streams == 0 {
			f.metrics.connected.Dec()
			f.log.Info("proxy disconnected", "node_id", st.node, "address", st.address)
			f.notifyLocked()
		}
	}
}

// OnStreamDeltaRequest notes the node on its first request, the announced
// versions on a type's subscription, and ACKs and NACKs.
func (f *fleet) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	f.mu.Lock()
	st := f.streams[id]
	f.mu.Unlock()
	if st == nil {
		return nil
	}
	if st.node == "" && req.GetNode() != nil {
		f.identify(st, req.GetNode().GetId())
	}
	typeURL := req.GetTypeUrl()
	if !wildcardOnly(req) {
		st.untracked = true
	}
	if _, subscribed := st.held[typeURL]; !subscribed {
		st.subscribe(typeURL, req.GetInitialResourceVersions(), f.manifest)
	}
	sent, ok := st.pending[typeURL]
	if req.GetResponseNonce() == "" || !ok || sent.nonce != req.GetResponseNonce() {
		if d := req.GetErrorDetail(); d != nil {
			// A NACK that answers no response of this stream: the proxy could not decode a
			// response of an earlier stream (over its size limit, say), which ended it.
			// Record it against the revision served now, the one the proxy could not take.
			rev := f.manifest.latest()
			f.metrics.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
			f.log.Warn("proxy refused config", "node_id", st.node, "revision", rev, "type", typeLabel(typeURL), "error", d.GetMessage())
			f.update(st, func(n *nodeState) { n.nackRevision, n.nackError = rev, d.GetMessage() })
		}
		return nil
	}
	delete(st.pending, typeURL)
	label := typeLabel(typeURL)
	if d := req.GetErrorDetail(); d != nil {
		rev := sent.version
		if sent.complete {
			rev = sent.revision
		}
		f.metrics.nacks.WithLabelValues(label).Inc()
		f.log.Warn("proxy refused config", "node_id", st.node, "revision", rev, "type", label, "error", d.GetMessage())
		f.update(st, func(n *nodeState) { n.nackRevision, n.nackError = rev, d.GetMessage() })
		return nil
	}
	f.metrics.acks.WithLabelValues(label).Inc()
	if sent.complete {
		f.update(st, func(n *nodeState) {
			if n.acked != sent.revision {
				f.log.Info("proxy applied config", "node_id", st.node, "revision", sent.revision)
			}
			n.acked = sent.revision
		})
	}
	return nil
}

// wildcardOnly reports whether req subscribes to nothing but the wildcard
// (an empty list on a type's first request is the legacy wildcard).
func wildcardOnly(req *discoveryv3.DeltaDiscoveryRequest) bool {
	if len(req.GetResourceNamesUnsubscribe()) > 0 {
		return false
	}
	for _, name := range req.GetResourceNamesSubscribe() {
		if name != "*" {
			return false
		}
	}
	return true
}

// subscribe records what the proxy announced it holds of typeURL.
func (st *streamState) subscribe(typeURL string, initial map[string]string, known manifestLookup) {
	if typeURL != snapshot.ManifestType {
		st.held[typeURL] = snapshot.Digest(initial)
		return
	}
	st.held[typeURL] = nil
	if v, ok := initial[snapshot.ManifestName]; ok && len(initial) == 1 {
		st.manifest = known.byVersion(v)
	}
}

// OnStreamDeltaResponse notes what the proxy holds after the response and
// remembers, under the response's nonce, whether that matches the
// manifest.
func (f *fleet) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	f.mu.Lock()
	st := f.streams[id]
	f.mu.Unlock()
	if st == nil {
		return
	}
	typeURL := resp.GetTypeUrl()
	sent := sentResponse{nonce: resp.GetNonce()}
	sent.version, _ = strconv.ParseUint(resp.GetSystemVersionInfo(), 10, 64)
	at := f.manifest.byRevision(sent.version) // the snapshot the response brings the type to
	if typeURL == snapshot.ManifestType {
		st.manifest = at
		if at == nil {
			st.manifest = decodeManifest(resp)
		}
	} else {
		st.held[typeURL] = snapshot.TypeDigest(at, typeURL) // nil, unknown, when at is
	}
	if m := st.manifest; m != nil && st.matches(m) {
		sent.complete, sent.revision = true, m.GetRevision()
	}
	st.pending[typeURL] = sent
}

// decodeManifest returns the manifest a response carries, or nil.
func decodeManifest(resp *discoveryv3.DeltaDiscoveryResponse) *xdsv1.Manifest {
	for _, r := range resp.GetResources() {
		if r.GetName() == snapshot.ManifestName {
			m := &xdsv1.Manifest{}
			if proto.Unmarshal(r.GetResource().GetValue(), m) == nil {
				return m
			}
		}
	}
	return nil
}

// matches reports whether the proxy holds exactly the resources m
// describes.
func (st *streamState) matches(m *xdsv1.Manifest) bool {
	if st.untracked {
		return false
	}
	for _, typeURL := range manifest.ConfigTypes {
		if !snapshot.SameDigest(st.held[typeURL], snapshot.TypeDigest(m, typeURL)) {
			return false
		}
	}
	return true
}

// identify attaches a stream to its node id.
func (f *fleet) identify(st *streamState, id string) {
	if id == "" {
		id = "unknown@" + st.address
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st.node = id
	n := f.nodes[id]
	if n == nil {
		n = &nodeState{}
		f.nodes[id] = n
	}
	if n.streams == 0 {
		f.metrics.connected.Inc()
		f.log.Info("proxy connected", "node_id", id, "address", st.address)
	}
	n.streams++
	n.connectedSince = st.opened
	n.lastSeen = f.now()
	n.address = st.address
	f.notifyLocked()
}

// update changes the stream's node status under the lock.
func (f *fleet) update(st *streamState, fn func(*nodeState)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.nodes[st.node]; n != nil {
		fn(n)
		f.notifyLocked()
	}
}

// proxies reports every node, forgetting those disconnected for longer
// than f.forget.
func (f *fleet) proxies() []*adminv1.ProxyStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	out := make([]*adminv1.ProxyStatus, 0, len(f.nodes))
	for id, n := range f.nodes {
		if n.streams == 0 && now.Sub(n.lastSeen) > f.forget {
			delete(f.nodes, id)
			continue
		}
		out = append(out, &adminv1.ProxyStatus{
			NodeId:           id,
			Connected:        n.streams > 0,
			ConnectedSince:   timestamppb.New(n.connectedSince),
			AckedRevision:    n.acked,
			LastNackRevision: n.nackRevision,
			LastNackError:    n.nackError,
			Address:          n.address,
		})
	}
	slices.SortFunc(out, func(a, b *adminv1.ProxyStatus) int { return cmp.Compare(a.GetNodeId(), b.GetNodeId()) })
	return out
}

// typeLabel is the metrics label of a type URL.
func typeLabel(typeURL string) string {
	switch typeURL {
	case snapshot.ManifestType:
		return "manifest"
	case snapshot.ForwardType:
		return "forward"
	case snapshot.UpstreamGroupType:
		return "upstream_group"
	case snapshot.UpstreamType:
		return "upstream"
	case snapshot.ConsumerType:
		return "consumer"
	case snapshot.PricingType:
		return "pricing"
	}
	return "other"
}
