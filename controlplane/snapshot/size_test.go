package snapshot

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// TestResponseBytesIsExact: the size computed for a type is the size of the resources of a
// real DeltaDiscoveryResponse carrying them.
func TestResponseBytesIsExact(t *testing.T) {
	cfg := &configv1.Config{}
	for i := range 300 {
		cfg.Upstreams = append(cfg.Upstreams, &configv1.Upstream{
			Name: fmt.Sprintf("upstream-%d", i), Url: "https://api.example.com/v1",
			Auth: &configv1.Auth{Type: "bearer", Token: strings.Repeat("k", i)},
		})
	}
	snap, err := New(1, cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{}
	for name, res := range snap.GetResources(UpstreamType) {
		packed, err := anypb.New(res)
		if err != nil {
			t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: snap.GetVersionMap(UpstreamType)[name], Resource: packed})
	}
	got, typ := ResponseBytes(cfg)
	if want := proto.Size(resp); got != want || typ != "upstream" {
		t.Errorf("ResponseBytes = %d, %q; want %d, upstream", got, typ, want)
	}
}

func TestCheckSize(t *testing.T) {
	small := &configv1.Config{Upstreams: []*configv1.Upstream{{Name: "a", Url: "http://a"}}}
	if err := CheckSize(small); err != nil {
		t.Fatalf("small config: %v", err)
	}
	big := &configv1.Config{}
	value := strings.Repeat("v", 1<<20)
	for i := range MaxResponseBytes>>20 + 1 {
		big.Upstreams = append(big.Upstreams, &configv1.Upstream{Name: fmt.Sprint(i), Url: "http://a",
			Headers: []*configv1.HeaderOp{{Op: "insert", Key: "x-pad", Value: value}}})
	}
	err := CheckSize(big)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Limit != MaxResponseBytes || tl.Bytes <= MaxResponseBytes || tl.Type != "upstream" {
		t.Fatalf("big config: %v; want a TooLargeError over %d bytes", err, MaxResponseBytes)
	}
	if !strings.Contains(err.Error(), "config too large: its upstreams need an xDS response of 16.0 MiB") {
		t.Errorf("message: %v", err)
	}
	if _, err := New(7, big); !errors.As(err, &tl) {
		t.Errorf("New of a config too large: %v; want a TooLargeError", err)
	}
}
