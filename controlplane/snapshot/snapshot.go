// Package snapshot turns one committed configuration revision into the
// immutable set of xDS resources the control plane streams to proxies.
//
// A [Snapshot] holds the resource types of the config model (forwards,
// upstream groups, upstreams, consumers; each named by its name field), the
// pricing list as one [xdsv1.PricingTable] named "pricing" (absent when there
// are no prices), and one
// [xdsv1.Manifest], named "current", that gives per type the number of
// resources of the revision and a digest of their names and versions
// ([Digest]). Delta xDS delivers each type on its own schedule, and a type
// that did not change in a revision gets no update at all; the manifest
// lets a proxy hold a revision back until the digest of the resources it
// has matches it, so it never applies a mix of two revisions. The manifest
// is a few hundred bytes whatever the size of the config, so a write that
// changes one resource sends two small resources to every proxy.
//
// The snapshot version of every type is the store revision as a decimal
// string, so control-plane replicas sharing one store agree on it. A
// resource's version is a content hash: the hex SHA-256 of its
// deterministic protobuf encoding, the same function go-control-plane uses
// for the versions it puts on the wire (it computes them itself and ignores
// the snapshot's version map there; the map serves to diff against what a
// proxy holds), so the versions the digests cover are the versions a proxy
// receives and announces on reconnect.
//
// A Snapshot carries upstream credentials in clear, because proxies need
// them, and consumers' key hashes: never log a Snapshot or its resources.
package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	xdsv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/xds/v1"
)

// Type URLs of the resources in a snapshot (the wire contract in controlplane/manifest).
const (
	ForwardType       = manifest.ForwardType
	UpstreamGroupType = manifest.UpstreamGroupType
	UpstreamType      = manifest.UpstreamType
	ConsumerType      = manifest.ConsumerType
	PricingType       = manifest.PricingType
	ManifestType      = manifest.ManifestType
)

// ManifestName is the name of the one Manifest resource of a snapshot.
const ManifestName = manifest.Name

// TypeURLs returns the type URLs a proxy subscribes to, the manifest first.
// The caller owns the returned slice.
func TypeURLs() []string {
	return []string{ManifestType, ForwardType, UpstreamGroupType, UpstreamType, ConsumerType, PricingType}
}

// ResourceVersion returns the version of a resource: the hex SHA-256 of its
// deterministic protobuf encoding. It is the version go-control-plane sends
// with the resource in a delta response.
func ResourceVersion(m proto.Message) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("marshal resource: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Digest returns the count and digest of a set of resources given as name → version
// (manifest.Digest; proxy/xdsclient computes the same over the resources it holds).
func Digest(versions map[string]string) *xdsv1.TypeDigest { return manifest.Digest(versions) }

// SameDigest reports whether two digests describe the same set.
func SameDigest(a, b *xdsv1.TypeDigest) bool { return manifest.Same(a, b) }

// Snapshot is one revision of the configuration as xDS resources. It is
// immutable once built and safe for concurrent use. It implements
// go-control-plane's cache/v3 ResourceSnapshot.
type Snapshot struct {
	revision uint64
	version  string
	manifest *xdsv1.Manifest

	resources map[string]map[string]types.Resource
	withTTL   map[string]map[string]types.ResourceWithTTL
	versions  map[string]map[string]string
}

var _ cachev3.ResourceSnapshot = (*Snapshot)(nil)

// New builds the snapshot of revision rev of cfg. The resources are deep
// copies, so cfg may be changed afterwards. http_server.admin is not part of
// a snapshot: it configures a proxy run from a file only. New fails when a
// resource has no name or two resources of one type share a name (the store
// only holds validated configs, so this means a bug upstream), and when the config
// needs a larger ADS response than proxies accept (*TooLargeError, see CheckSize).
func New(rev uint64, cfg *configv1.Config) (*Snapshot, error) {
	// A snapshot proxies cannot receive would stop the fleet: refuse it (admin writes are
	// checked before they commit; this catches configs stored otherwise).
	if err := CheckSize(cfg); err != nil {
		return nil, fmt.Errorf("build snapshot of revision %d: %w", rev, err)
	}
	s := &Snapshot{
		revision:  rev,
		version:   strconv.FormatUint(rev, 10),
		resources: make(map[string]map[string]types.Resource, 4),
		withTTL:   make(map[string]map[string]types.ResourceWithTTL, 4),
		versions:  make(map[string]map[string]string, 4),
	}
	var errs []error
	add := func(typeURL string, name string, res types.ResourceWithName) {
		if name == "" {
			errs = append(errs, fmt.Errorf("%s: resource without a name", shortType(typeURL)))
			return
		}
		if _, dup := s.resources[typeURL][name]; dup {
			errs = append(errs, fmt.Errorf("%s %q: duplicate name", shortType(typeURL), name))
			return
		}
		res = proto.Clone(res).(types.ResourceWithName)
		v, err := ResourceVersion(res)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", shortType(typeURL), name, err))
			return
		}
		s.put(typeURL, name, res, v)
	}
	for _, t := range TypeURLs() {
		s.resources[t] = map[string]types.Resource{}
		s.withTTL[t] = map[string]types.ResourceWithTTL{}
		s.versions[t] = map[string]string{}
	}
	for _, f := range cfg.GetHttpServer().GetForwards() {
		add(ForwardType, f.GetName(), f)
	}
	for _, g := range cfg.GetUpstreamGroups() {
		add(UpstreamGroupType, g.GetName(), g)
	}
	for _, u := range cfg.GetUpstreams() {
		add(UpstreamType, u.GetName(), u)
	}
	for _, c := range cfg.GetConsumers() {
		add(ConsumerType, c.GetName(), c)
	}
	if len(cfg.GetPricing()) > 0 {
		add(PricingType, manifest.PricingName, &xdsv1.PricingTable{Name: manifest.PricingName, Prices: cfg.GetPricing()})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("build snapshot of revision %d: %w", rev, errors.Join(errs...))
	}
	m := &xdsv1.Manifest{Name: ManifestName, Revision: rev}
	for _, t := range manifest.ConfigTypes {
		manifest.SetTypeDigest(m, t, Digest(s.versions[t]))
	}
	mv, err := ResourceVersion(m)
	if err != nil {
		return nil, fmt.Errorf("build snapshot of revision %d: manifest: %w", rev, err)
	}
	s.put(ManifestType, ManifestName, m, mv)
	s.manifest = m
	return s, nil
}

func (s *Snapshot) put(typeURL, name string, res types.Resource, version string) {
	s.resources[typeURL][name] = res
	s.withTTL[typeURL][name] = types.ResourceWithTTL{Resource: res}
	s.versions[typeURL][name] = version
}

// Revision returns the store revision the snapshot was built from.
func (s *Snapshot) Revision() uint64 { return s.revision }

// Manifest returns the snapshot's manifest. The caller must not modify it.
func (s *Snapshot) Manifest() *xdsv1.Manifest { return s.manifest }

// TypeDigest returns the manifest's digest of a resource type, nil for the
// manifest's own type and unknown types.
func TypeDigest(m *xdsv1.Manifest, typeURL string) *xdsv1.TypeDigest {
	return manifest.TypeDigest(m, typeURL)
}

// ManifestVersion returns the version (content hash) of the manifest.
func (s *Snapshot) ManifestVersion() string { return s.versions[ManifestType][ManifestName] }

// GetVersion returns the snapshot version, the revision as a decimal string,
// for every known type URL, and "" for others.
func (s *Snapshot) GetVersion(typeURL string) string {
	if _, ok := s.resources[typeURL]; !ok {
		return ""
	}
	return s.version
}

// GetResourcesAndTTL returns the resources of a type, without TTLs. The
// caller must not modify the map.
func (s *Snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	return s.withTTL[typeURL]
}

// GetResources returns the resources of a type by name. The caller must not
// modify the map or the resources.
func (s *Snapshot) GetResources(typeURL string) map[string]types.Resource {
	return s.resources[typeURL]
}

// ConstructVersionMap does nothing: versions are computed by New.
func (s *Snapshot) ConstructVersionMap() error { return nil }

// GetVersionMap returns resource name to version for a type. The caller
// must not modify the map.
func (s *Snapshot) GetVersionMap(typeURL string) map[string]string {
	return s.versions[typeURL]
}

func shortType(typeURL string) string {
	switch typeURL {
	case ForwardType:
		return "forward"
	case UpstreamGroupType:
		return "upstream group"
	case UpstreamType:
		return "upstream"
	case ConsumerType:
		return "consumer"
	case PricingType:
		return "pricing"
	case ManifestType:
		return "manifest"
	}
	return typeURL
}
