package snapshot

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// envelopeReserve is the part of manifest.MaxMessageBytes a snapshot's resources leave free
// for the rest of a response: its version, type URL and nonce, and the names of the
// resources it removes.
const envelopeReserve = 1 << 20

// MaxResponseBytes is the largest ResponseBytes a snapshot may have.
const MaxResponseBytes = manifest.MaxMessageBytes - envelopeReserve

// versionBytes is the length of a resource version: a hex SHA-256.
const versionBytes = 64

// TooLargeError says that a config needs an ADS response larger than proxies accept.
type TooLargeError struct {
	// Bytes is the config's ResponseBytes; Limit is MaxResponseBytes.
	Bytes, Limit int
	// Type names the resource type of the largest response, e.g. "upstream".
	Type string
}

// Error names the size and the limit.
func (e *TooLargeError) Error() string {
	return fmt.Sprintf("config too large: its %ss need an xDS response of %s (%d bytes), over the limit of %s (%d bytes) that every proxy accepts; split it or shrink it",
		e.Type, mib(e.Bytes), e.Bytes, mib(e.Limit), e.Limit)
}

func mib(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// ResponseBytes returns the size of the largest delta ADS response that carries the
// resources of cfg, and its resource type: per type, every resource encoded in a
// DeltaDiscoveryResponse with its name, version and type URL, as a proxy receives them when
// it first subscribes. The response's envelope is not counted (see MaxResponseBytes).
func ResponseBytes(cfg *configv1.Config) (int, string) {
	sizes := map[string]int{}
	for _, f := range cfg.GetHttpServer().GetForwards() {
		sizes[ForwardType] += resourceBytes(ForwardType, f.GetName(), f)
	}
	for _, g := range cfg.GetUpstreamGroups() {
		sizes[UpstreamGroupType] += resourceBytes(UpstreamGroupType, g.GetName(), g)
	}
	for _, u := range cfg.GetUpstreams() {
		sizes[UpstreamType] += resourceBytes(UpstreamType, u.GetName(), u)
	}
	most, typ := 0, ForwardType
	for _, t := range []string{ForwardType, UpstreamGroupType, UpstreamType} {
		if sizes[t] > most {
			most, typ = sizes[t], t
		}
	}
	return most, shortType(typ)
}

// resourceBytes is the encoded size of one entry of DeltaDiscoveryResponse.resources: a
// Resource {name, version, resource: Any{type_url, value}}. Every field number is below 16,
// so every tag takes one byte.
func resourceBytes(typeURL, name string, m proto.Message) int {
	anyBytes := 1 + protowire.SizeBytes(len(typeURL)) + 1 + protowire.SizeBytes(proto.Size(m))
	res := 1 + protowire.SizeBytes(len(name)) + 1 + protowire.SizeBytes(versionBytes) + 1 + protowire.SizeBytes(anyBytes)
	return 1 + protowire.SizeBytes(res)
}

// CheckSize returns a *TooLargeError when cfg needs an ADS response larger than
// MaxResponseBytes, and nil otherwise.
func CheckSize(cfg *configv1.Config) error {
	n, typ := ResponseBytes(cfg)
	if n > MaxResponseBytes {
		return &TooLargeError{Bytes: n, Limit: MaxResponseBytes, Type: typ}
	}
	return nil
}
