package xdsclient

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	xdsv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/xds/v1"
)

// Type URLs the client subscribes to. They match controlplane/snapshot
// (checked by a test); the proxy does not import the control plane.
const (
	manifestType      = "type.googleapis.com/llmproxy.xds.v1.Manifest"
	forwardType       = "type.googleapis.com/llmproxy.config.v1.Forward"
	upstreamGroupType = "type.googleapis.com/llmproxy.config.v1.UpstreamGroup"
	upstreamType      = "type.googleapis.com/llmproxy.config.v1.Upstream"
	manifestName      = "current"
)

// typeURLs lists the subscribed types, the manifest first.
var typeURLs = [...]string{manifestType, forwardType, upstreamGroupType, upstreamType}

func newResource(typeURL string) proto.Message {
	switch typeURL {
	case manifestType:
		return &xdsv1.Manifest{}
	case forwardType:
		return &configv1.Forward{}
	case upstreamGroupType:
		return &configv1.UpstreamGroup{}
	case upstreamType:
		return &configv1.Upstream{}
	}
	return nil
}

// resourceVersion is the content hash the control plane gives a resource:
// hex SHA-256 of its deterministic protobuf encoding.
func resourceVersion(m proto.Message) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("marshal resource: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// entry is one received resource. msg is nil when it could not be decoded;
// err says why.
type entry struct {
	version string
	msg     proto.Message
	err     error
}

// resourceSet holds resources by type URL, then by name. Messages are never
// modified once stored, so sets may share them.
type resourceSet map[string]map[string]entry

func newResourceSet() resourceSet {
	s := make(resourceSet, len(typeURLs))
	for _, t := range typeURLs {
		s[t] = map[string]entry{}
	}
	return s
}

func (s resourceSet) clone() resourceSet {
	c := make(resourceSet, len(s))
	for t, m := range s {
		c[t] = maps.Clone(m)
	}
	return c
}

// versions returns name → version for one type.
func (s resourceSet) versions(typeURL string) map[string]string {
	out := make(map[string]string, len(s[typeURL]))
	for name, e := range s[typeURL] {
		out[name] = e.version
	}
	return out
}

// matches reports whether the set holds exactly the resources m lists, at
// the versions it lists.
func (s resourceSet) matches(m *xdsv1.Manifest) bool {
	return sameVersions(s[forwardType], m.GetForwards()) &&
		sameVersions(s[upstreamGroupType], m.GetUpstreamGroups()) &&
		sameVersions(s[upstreamType], m.GetUpstreams())
}

func sameVersions(have map[string]entry, want map[string]string) bool {
	if len(have) != len(want) {
		return false
	}
	for name, v := range want {
		if e, ok := have[name]; !ok || e.version != v {
			return false
		}
	}
	return true
}

// config assembles the set into a Config, resources sorted by name. It
// fails when a resource could not be decoded.
func (s resourceSet) config() (*configv1.Config, error) {
	var errs []error
	cfg := &configv1.Config{HttpServer: &configv1.HttpServer{}}
	for _, name := range slices.Sorted(maps.Keys(s[forwardType])) {
		if e := s[forwardType][name]; e.msg != nil {
			cfg.HttpServer.Forwards = append(cfg.HttpServer.Forwards, e.msg.(*configv1.Forward))
		} else {
			errs = append(errs, fmt.Errorf("forward %q: %w", name, e.err))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s[upstreamGroupType])) {
		if e := s[upstreamGroupType][name]; e.msg != nil {
			cfg.UpstreamGroups = append(cfg.UpstreamGroups, e.msg.(*configv1.UpstreamGroup))
		} else {
			errs = append(errs, fmt.Errorf("upstream group %q: %w", name, e.err))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s[upstreamType])) {
		if e := s[upstreamType][name]; e.msg != nil {
			cfg.Upstreams = append(cfg.Upstreams, e.msg.(*configv1.Upstream))
		} else {
			errs = append(errs, fmt.Errorf("upstream %q: %w", name, e.err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// resourceSetOf builds the set a control plane would send for revision rev
// of cfg, manifest included.
func resourceSetOf(rev uint64, cfg *configv1.Config) (resourceSet, error) {
	s := newResourceSet()
	m := &xdsv1.Manifest{
		Name:           manifestName,
		Revision:       rev,
		Forwards:       map[string]string{},
		UpstreamGroups: map[string]string{},
		Upstreams:      map[string]string{},
	}
	add := func(typeURL string, list map[string]string, name string, msg proto.Message) error {
		v, err := resourceVersion(msg)
		if err != nil {
			return err
		}
		s[typeURL][name] = entry{version: v, msg: msg}
		list[name] = v
		return nil
	}
	for _, f := range cfg.GetHttpServer().GetForwards() {
		if err := add(forwardType, m.Forwards, f.GetName(), proto.Clone(f)); err != nil {
			return nil, err
		}
	}
	for _, g := range cfg.GetUpstreamGroups() {
		if err := add(upstreamGroupType, m.UpstreamGroups, g.GetName(), proto.Clone(g)); err != nil {
			return nil, err
		}
	}
	for _, u := range cfg.GetUpstreams() {
		if err := add(upstreamType, m.Upstreams, u.GetName(), proto.Clone(u)); err != nil {
			return nil, err
		}
	}
	v, err := resourceVersion(m)
	if err != nil {
		return nil, err
	}
	s[manifestType][manifestName] = entry{version: v, msg: m}
	return s, nil
}

// tracker is the client's protocol state: the resources received on the
// stream, the last applied revision, and what to answer to each response.
// It is owned by one goroutine.
//
// Every response is answered at once, so every type's watch stays open and
// the client's resources converge on the control plane's latest snapshot.
// A revision is applied when the received resources match the received
// manifest exactly; the answer to the response that completed it is an ACK
// when the apply succeeded and a NACK with the reason when it failed.
// Answers to responses that leave the revision incomplete are ACKs (the
// resources are consistent so far). The control plane mirrors the same
// resources and so knows which answer reports an apply.
type tracker struct {
	// apply applies a complete revision (and saves it). The config shares
	// the cached messages: apply must not modify it.
	apply func(rev uint64, cfg *configv1.Config) error

	cache   resourceSet // what the control plane has sent on this stream
	applied resourceSet // the last applied revision's resources

	appliedRev      uint64
	appliedManifest string // manifest version of the applied revision; "" if none

	failedManifest string // manifest version of the last refused revision
	failedErr      error
}

func newTracker(apply func(rev uint64, cfg *configv1.Config) error) *tracker {
	return &tracker{apply: apply, cache: newResourceSet(), applied: newResourceSet()}
}

// seed records rev and cfg, applied by the caller from the state directory,
// as the applied revision, so a new stream starts from its versions.
func (t *tracker) seed(rev uint64, cfg *configv1.Config) error {
	s, err := resourceSetOf(rev, cfg)
	if err != nil {
		return fmt.Errorf("seed state: %w", err)
	}
	t.applied = s
	t.appliedRev = rev
	t.appliedManifest = s[manifestType][manifestName].version
	t.cache = s.clone()
	return nil
}

// restart prepares for a new stream: the control plane will send the
// difference between the applied resources and its current snapshot.
// Resources of a revision that was received but not applied are dropped.
func (t *tracker) restart(node *corev3.Node) []*discoveryv3.DeltaDiscoveryRequest {
	t.cache = t.applied.clone()
	reqs := make([]*discoveryv3.DeltaDiscoveryRequest, 0, len(typeURLs))
	for i, typeURL := range typeURLs {
		req := &discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:                 typeURL,
			ResourceNamesSubscribe:  []string{"*"},
			InitialResourceVersions: t.cache.versions(typeURL),
		}
		if i == 0 {
			req.Node = node
		}
		reqs = append(reqs, req)
	}
	return reqs
}

// handle merges one response into the cache, applies the revision when it
// is complete, and returns the answer to send.
func (t *tracker) handle(resp *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	typeURL := resp.GetTypeUrl()
	answer := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: resp.GetNonce()}
	have, known := t.cache[typeURL]
	if !known {
		answer.ErrorDetail = nack(fmt.Errorf("unknown resource type %q", typeURL))
		return answer
	}
	var errs []error
	for _, r := range resp.GetResources() {
		e := entry{version: r.GetVersion()}
		msg := newResource(typeURL)
		switch {
		case r.GetResource() == nil:
			e.err = errors.New("no resource body")
		case r.GetResource().GetTypeUrl() != typeURL:
			e.err = fmt.Errorf("resource of type %q in a %q response", r.GetResource().GetTypeUrl(), typeURL)
		default:
			if err := proto.Unmarshal(r.GetResource().GetValue(), msg); err != nil {
				e.err = fmt.Errorf("decode: %w", err)
			} else {
				e.msg = msg
			}
		}
		if e.err != nil {
			errs = append(errs, fmt.Errorf("resource %q: %w", r.GetName(), e.err))
		}
		have[r.GetName()] = e
	}
	for _, name := range resp.GetRemovedResources() {
		delete(have, name)
	}
	if err := t.resolve(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		answer.ErrorDetail = nack(errors.Join(errs...))
	}
	return answer
}

// resolve applies the received manifest's revision when the cache matches
// it exactly and it is neither applied nor refused already. It returns the
// reason the revision is refused, or nil.
func (t *tracker) resolve() error {
	me, ok := t.cache[manifestType][manifestName]
	if !ok || me.msg == nil {
		return nil
	}
	m := me.msg.(*xdsv1.Manifest)
	if !t.cache.matches(m) {
		return nil // more of this revision is on its way
	}
	switch me.version {
	case t.appliedManifest:
		return nil
	case t.failedManifest:
		return t.failedErr
	}
	cfg, err := t.cache.config()
	if err == nil {
		err = t.apply(m.GetRevision(), cfg)
	}
	if err != nil {
		t.failedManifest, t.failedErr = me.version, err
		return err
	}
	t.applied = t.cache.clone()
	t.appliedRev = m.GetRevision()
	t.appliedManifest = me.version
	return nil
}

func nack(err error) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

func revisionString(rev uint64) string { return strconv.FormatUint(rev, 10) }
