package redact

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Consumers' key hashes are marked secret in config.proto: hidden everywhere, restored by
// consumer name and key id.
func TestConsumerHashes(t *testing.T) {
	c := &configv1.Config{Consumers: []*configv1.Consumer{{
		Name: "team",
		Keys: []*configv1.ConsumerKey{
			{Id: "k1", Hash: "sha256:" + strings.Repeat("1", 64)},
			{Id: "k2", Hash: "${env:K2_HASH}"},
		},
	}}}
	red := Config(c)
	if got := red.Consumers[0].Keys[0].Hash; got != Marker {
		t.Errorf("hash shown as %q; want %q", got, Marker)
	}
	if got := red.Consumers[0].Keys[1].Hash; got != "${env:K2_HASH}" {
		t.Errorf("env reference shown as %q", got)
	}
	if one := Message(c.Consumers[0]); !proto.Equal(one, red.Consumers[0]) {
		t.Errorf("Message(consumer) = %v; want %v", one, red.Consumers[0])
	}

	// Written back, the hash is restored by key id, whatever the order.
	next := proto.Clone(red).(*configv1.Config)
	next.Consumers[0].Keys[0], next.Consumers[0].Keys[1] = next.Consumers[0].Keys[1], next.Consumers[0].Keys[0]
	if err := Restore(next, c); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := next.Consumers[0].Keys[1].Hash; got != c.Consumers[0].Keys[0].Hash {
		t.Errorf("restored hash %q", got)
	}

	// A key id the stored consumer does not have cannot take a stored hash.
	next = proto.Clone(red).(*configv1.Config)
	next.Consumers[0].Keys[0].Id = "k9"
	fes := validate.Errors(Restore(next, c))
	if len(fes) != 1 || fes[0].Path != "consumers[0].keys[0].hash" {
		t.Errorf("Restore of an unknown key id: %v", fes)
	}
}
