// Package manifest is the xDS wire contract that the control plane and the proxies share:
// the resource type URLs, the name of the Manifest resource, how a manifest digests the
// resources of a type, and the environment variable of the stream's bearer token. Both sides import it, so the digest cannot drift apart. It is a leaf:
// it imports only the generated protobufs.
package manifest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"slices"

	xdsv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/xds/v1"
)

// Type URLs of the resources on the ADS stream.
const (
	ForwardType       = "type.googleapis.com/llmproxy.config.v1.Forward"
	UpstreamGroupType = "type.googleapis.com/llmproxy.config.v1.UpstreamGroup"
	UpstreamType      = "type.googleapis.com/llmproxy.config.v1.Upstream"
	ConsumerType      = "type.googleapis.com/llmproxy.config.v1.Consumer"
	PricingType       = "type.googleapis.com/llmproxy.xds.v1.PricingTable"
	ManifestType      = "type.googleapis.com/llmproxy.xds.v1.Manifest"
)

// PricingName is the name of the one PricingTable resource of a revision that has prices.
const PricingName = "pricing"

// TokenEnv names the environment variable that, when set, holds the bearer token the ADS
// stream requires: the control plane checks it and proxies send it.
const TokenEnv = "LLMPROXY_XDS_AUTH_TOKEN"

// Name is the name of the one Manifest resource of a revision.
const Name = "current"

// ConfigTypes are the types a manifest digests, in a fixed order.
var ConfigTypes = [...]string{ForwardType, UpstreamGroupType, UpstreamType, ConsumerType, PricingType}

// DigestSorted returns the count and digest of a set of resources, given its names in
// ascending order and each name's version: the hex SHA-256 over the (name, version) pairs,
// each written as uvarint(len(name)) name uvarint(len(version)) version.
func DigestSorted(names []string, version func(name string) string) *xdsv1.TypeDigest {
	h := sha256.New()
	var buf []byte
	for _, name := range names {
		v := version(name)
		buf = binary.AppendUvarint(buf[:0], uint64(len(name)))
		buf = append(buf, name...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
		h.Write(buf)
	}
	return &xdsv1.TypeDigest{Count: uint32(len(names)), Digest: hex.EncodeToString(h.Sum(nil))}
}

// Digest is DigestSorted over a name → version map.
func Digest(versions map[string]string) *xdsv1.TypeDigest {
	return DigestSorted(slices.Sorted(maps.Keys(versions)), func(n string) string { return versions[n] })
}

// Same reports whether two digests describe the same set; nil describes nothing.
func Same(a, b *xdsv1.TypeDigest) bool {
	return a != nil && b != nil && a.GetCount() == b.GetCount() && a.GetDigest() == b.GetDigest()
}

// emptyDigest describes no resources.
var emptyDigest = DigestSorted(nil, nil)

// TypeDigest returns the manifest's digest of a resource type, nil for the manifest's own
// type and unknown types. A manifest of an older control plane has no consumer or pricing
// digest: it describes none of them, and TypeDigest answers the digest of the empty set.
func TypeDigest(m *xdsv1.Manifest, typeURL string) *xdsv1.TypeDigest {
	switch typeURL {
	case ForwardType:
		return m.GetForwardDigest()
	case UpstreamGroupType:
		return m.GetUpstreamGroupDigest()
	case UpstreamType:
		return m.GetUpstreamDigest()
	case ConsumerType:
		return orEmpty(m.GetConsumerDigest())
	case PricingType:
		return orEmpty(m.GetPricingDigest())
	}
	return nil
}

func orEmpty(d *xdsv1.TypeDigest) *xdsv1.TypeDigest {
	if d == nil {
		return emptyDigest
	}
	return d
}

// SetTypeDigest stores d as the manifest's digest of a resource type; other types are
// ignored.
func SetTypeDigest(m *xdsv1.Manifest, typeURL string, d *xdsv1.TypeDigest) {
	switch typeURL {
	case ForwardType:
		m.ForwardDigest = d
	case UpstreamGroupType:
		m.UpstreamGroupDigest = d
	case UpstreamType:
		m.UpstreamDigest = d
	case ConsumerType:
		m.ConsumerDigest = d
	case PricingType:
		m.PricingDigest = d
	}
}
