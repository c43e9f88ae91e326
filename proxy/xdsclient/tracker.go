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

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	xdsv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/xds/v1"
)

// Type URLs the client subscribes to: the wire contract in controlplane/manifest.
const (
	manifestType      = manifest.ManifestType
	forwardType       = manifest.ForwardType
	upstreamGroupType = manifest.UpstreamGroupType
	upstreamType      = manifest.UpstreamType
	consumerType      = manifest.ConsumerType
	pricingType       = manifest.PricingType
	manifestName      = manifest.Name
)

// typeURLs lists the subscribed types, the manifest first.
var typeURLs = [...]string{manifestType, forwardType, upstreamGroupType, upstreamType, consumerType, pricingType}

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
	case consumerType:
		return &configv1.Consumer{}
	case pricingType:
		return &xdsv1.PricingTable{}
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

// typeSet holds the resources of one type by name, and their digest once
// computed. A typeSet may be shared by two resourceSets (the received and
// the applied resources); whoever changes it first copies it (see
// tracker.mutable).
type typeSet struct {
	entries map[string]entry
	digest  *xdsv1.TypeDigest // nil until computed
}

func (ts *typeSet) copy() *typeSet {
	return &typeSet{entries: maps.Clone(ts.entries), digest: ts.digest}
}

// digestOf returns the count and digest of the set, computed as the control
// plane computes them for a manifest (manifest.DigestSorted), once per change.
func (ts *typeSet) digestOf() *xdsv1.TypeDigest {
	if ts.digest != nil {
		return ts.digest
	}
	ts.digest = manifest.DigestSorted(slices.Sorted(maps.Keys(ts.entries)), func(n string) string { return ts.entries[n].version })
	return ts.digest
}

// resourceSet holds resources by type URL. Messages are never modified
// once stored, so sets may share them.
type resourceSet map[string]*typeSet

func newResourceSet() resourceSet {
	s := make(resourceSet, len(typeURLs))
	for _, t := range typeURLs {
		s[t] = &typeSet{entries: map[string]entry{}}
	}
	return s
}

// share returns a set with the same typeSets: neither set may then change
// a typeSet in place without copying it first.
func (s resourceSet) share() resourceSet { return maps.Clone(s) }

// versions returns name → version for one type.
func (s resourceSet) versions(typeURL string) map[string]string {
	out := make(map[string]string, len(s[typeURL].entries))
	for name, e := range s[typeURL].entries {
		out[name] = e.version
	}
	return out
}

// matches reports whether the set holds exactly the resources m
// describes: per type the same count and digest. Counts are compared
// first, and a type's digest is computed only once per change.
func (s resourceSet) matches(m *xdsv1.Manifest) bool {
	types := manifest.ConfigTypes
	for _, typeURL := range types {
		want := manifest.TypeDigest(m, typeURL)
		if want == nil || uint32(len(s[typeURL].entries)) != want.GetCount() {
			return false
		}
	}
	for _, typeURL := range types {
		if s[typeURL].digestOf().GetDigest() != manifest.TypeDigest(m, typeURL).GetDigest() {
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
	each := func(typeURL, kind string, add func(proto.Message)) {
		entries := s[typeURL].entries
		for _, name := range slices.Sorted(maps.Keys(entries)) {
			if e := entries[name]; e.msg != nil {
				add(e.msg)
			} else {
				errs = append(errs, fmt.Errorf("%s %q: %w", kind, name, e.err))
			}
		}
	}
	each(forwardType, "forward", func(m proto.Message) {
		cfg.HttpServer.Forwards = append(cfg.HttpServer.Forwards, m.(*configv1.Forward))
	})
	each(upstreamGroupType, "upstream group", func(m proto.Message) {
		cfg.UpstreamGroups = append(cfg.UpstreamGroups, m.(*configv1.UpstreamGroup))
	})
	each(upstreamType, "upstream", func(m proto.Message) {
		cfg.Upstreams = append(cfg.Upstreams, m.(*configv1.Upstream))
	})
	each(consumerType, "consumer", func(m proto.Message) {
		cfg.Consumers = append(cfg.Consumers, m.(*configv1.Consumer))
	})
	each(pricingType, "pricing", func(m proto.Message) {
		cfg.Pricing = append(cfg.Pricing, m.(*xdsv1.PricingTable).GetPrices()...)
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// resourceSetOf builds the set a control plane would send for revision rev
// of cfg, manifest included.
func resourceSetOf(rev uint64, cfg *configv1.Config) (resourceSet, error) {
	s := newResourceSet()
	add := func(typeURL string, name string, msg proto.Message) error {
		v, err := resourceVersion(msg)
		if err != nil {
			return err
		}
		s[typeURL].entries[name] = entry{version: v, msg: msg}
		return nil
	}
	for _, f := range cfg.GetHttpServer().GetForwards() {
		if err := add(forwardType, f.GetName(), proto.Clone(f)); err != nil {
			return nil, err
		}
	}
	for _, g := range cfg.GetUpstreamGroups() {
		if err := add(upstreamGroupType, g.GetName(), proto.Clone(g)); err != nil {
			return nil, err
		}
	}
	for _, u := range cfg.GetUpstreams() {
		if err := add(upstreamType, u.GetName(), proto.Clone(u)); err != nil {
			return nil, err
		}
	}
	for _, c := range cfg.GetConsumers() {
		if err := add(consumerType, c.GetName(), proto.Clone(c)); err != nil {
			return nil, err
		}
	}
	if len(cfg.GetPricing()) > 0 {
		table := &xdsv1.PricingTable{Name: manifest.PricingName, Prices: cfg.GetPricing()}
		if err := add(pricingType, manifest.PricingName, proto.Clone(table)); err != nil {
			return nil, err
		}
	}
	m := &xdsv1.Manifest{Name: manifestName, Revision: rev}
	for _, t := range manifest.ConfigTypes {
		manifest.SetTypeDigest(m, t, s[t].digestOf())
	}
	v, err := resourceVersion(m)
	if err != nil {
		return nil, err
	}
	s[manifestType].entries[manifestName] = entry{version: v, msg: m}
	return s, nil
}

// tracker is the client's protocol state: the resources received on the
// stream, the last applied revision, and what to answer to each response.
// It is owned by one goroutine.
//
// Every response is answered at once, so every type's watch stays open and
// the client's resources converge on the control plane's latest snapshot.
// A revision is applied when the received resources match the received
// manifest exactly (per type, the same count and digest); the answer to the response that completed it is an ACK
// when the apply succeeded and a NACK with the reason when it failed.
// Answers to responses that leave the revision incomplete are ACKs (the
// resources are consistent so far). The control plane mirrors the same
// resources and so knows which answer reports an apply.
type tracker struct {
	// apply applies a complete revision (and saves it). The config shares
	// the cached messages: apply must not modify it.
	apply func(rev uint64, cfg *configv1.Config) error

	// cache is what the control plane has sent on this stream, applied the
	// last applied revision's resources. They share the typeSets of the
	// types that did not change since the last apply; mutable copies one
	// before it changes.
	cache   resourceSet
	applied resourceSet

	appliedRev      uint64
	appliedManifest string // manifest version of the applied revision; "" if none

	failedManifest string // manifest version of the last refused revision
	failedErr      error

	// synced is set once the stream has brought the client to the control plane's
	// revision: the received resources match the manifest and that revision is applied
	// (now, or before the stream began). restart clears it.
	synced bool
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
	t.appliedManifest = s[manifestType].entries[manifestName].version
	t.cache = s.share()
	return nil
}

// restart prepares for a new stream: the control plane will send the
// difference between the applied resources and its current snapshot.
// Resources of a revision that was received but not applied are dropped.
func (t *tracker) restart(node *corev3.Node) []*discoveryv3.DeltaDiscoveryRequest {
	t.cache = t.applied.share()
	t.synced = false
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
	if _, known := t.cache[typeURL]; !known {
		answer.ErrorDetail = nack(fmt.Errorf("unknown resource type %q", typeURL))
		return answer
	}
	var errs []error
	var have map[string]entry
	if len(resp.GetResources()) > 0 || len(resp.GetRemovedResources()) > 0 {
		have = t.mutable(typeURL).entries
	}
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
	// A response that changes nothing cannot complete a revision: the outcome of the
	// resources held was settled, and answered, on an earlier response.
	if have != nil {
		if err := t.resolve(); err != nil {
			errs = append(errs, err)
		}
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
	me, ok := t.cache[manifestType].entries[manifestName]
	if !ok || me.msg == nil {
		return nil
	}
	m := me.msg.(*xdsv1.Manifest)
	if !t.cache.matches(m) {
		return nil // more of this revision is on its way
	}
	switch me.version {
	case t.appliedManifest:
		t.synced = true
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
	t.applied = t.cache.share()
	t.appliedRev = m.GetRevision()
	t.appliedManifest = me.version
	t.synced = true
	return nil
}

// mutable returns the cache's typeSet of typeURL ready to change: copied
// when the applied set shares it, its digest reset.
func (t *tracker) mutable(typeURL string) *typeSet {
	ts := t.cache[typeURL]
	if ts == t.applied[typeURL] {
		ts = ts.copy()
		t.cache[typeURL] = ts
	}
	ts.digest = nil
	return ts
}

func nack(err error) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

func revisionString(rev uint64) string { return strconv.FormatUint(rev, 10) }
