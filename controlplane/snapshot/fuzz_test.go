package snapshot

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	yaml "go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// FuzzNew: every configuration that validates translates; each forward, group and upstream
// is in the snapshot under its name, equal to the configuration's; the same configuration
// gives the same versions; and the manifest's digests are those of the versions.
func FuzzNew(f *testing.F) {
	ins, _ := filepath.Glob(filepath.Join("testdata", "in", "*.yaml"))
	for _, p := range ins {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		var doc any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			f.Fatal(err)
		}
		js, err := json.Marshal(doc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(js)
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		cfg := &configv1.Config{}
		if protojson.Unmarshal(js, cfg) != nil || validate.Validate(cfg) != nil {
			return
		}
		s, err := New(3, cfg)
		if err != nil {
			t.Fatalf("a valid configuration does not translate: %v\n%s", err, js)
		}
		want := map[string]map[string]proto.Message{ForwardType: {}, UpstreamGroupType: {}, UpstreamType: {}}
		for _, x := range cfg.GetHttpServer().GetForwards() {
			want[ForwardType][x.GetName()] = x
		}
		for _, x := range cfg.GetUpstreamGroups() {
			want[UpstreamGroupType][x.GetName()] = x
		}
		for _, x := range cfg.GetUpstreams() {
			want[UpstreamType][x.GetName()] = x
		}
		again, err := New(3, proto.Clone(cfg).(*configv1.Config))
		if err != nil {
			t.Fatal(err)
		}
		for typeURL, byName := range want {
			got := s.GetResources(typeURL)
			if len(got) != len(byName) {
				t.Fatalf("%s: %d resources; want %d", typeURL, len(got), len(byName))
			}
			for name, m := range byName {
				if !proto.Equal(got[name], m) {
					t.Errorf("%s %q: %v; want %v", typeURL, name, got[name], m)
				}
			}
			if !SameDigest(TypeDigest(s.Manifest(), typeURL), Digest(s.GetVersionMap(typeURL))) {
				t.Errorf("%s: the manifest's digest is not that of the versions", typeURL)
			}
			if !SameDigest(Digest(s.GetVersionMap(typeURL)), Digest(again.GetVersionMap(typeURL))) {
				t.Errorf("%s: the same configuration gave other versions", typeURL)
			}
		}
	})
}
