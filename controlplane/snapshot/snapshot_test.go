package snapshot

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	yaml "go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the current translation")

// goldenRevision is the revision every golden input is translated at.
const goldenRevision = 42

// decodeYAML reads a test input. It goes YAML → JSON → protojson, which is
// enough for test inputs that spell every value the way protojson expects.
func decodeYAML(t *testing.T, data []byte) *configv1.Config {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("parse yaml: %v", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("yaml to json: %v", err)
	}
	cfg := &configv1.Config{}
	if err := protojson.Unmarshal(js, cfg); err != nil {
		t.Fatalf("decode config: %v", err)
	}
	return cfg
}

type goldenResource struct {
	Version  string          `json:"version"`
	Resource json.RawMessage `json:"resource"`
}

type golden struct {
	Versions  map[string]string                    `json:"versions"`
	Resources map[string]map[string]goldenResource `json:"resources"`
}

func render(t *testing.T, s *Snapshot) []byte {
	t.Helper()
	g := golden{Versions: map[string]string{}, Resources: map[string]map[string]goldenResource{}}
	for _, typeURL := range TypeURLs() {
		g.Versions[typeURL] = s.GetVersion(typeURL)
		out := map[string]goldenResource{}
		for name, res := range s.GetResources(typeURL) {
			js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(res)
			if err != nil {
				t.Fatalf("marshal %s %s: %v", typeURL, name, err)
			}
			out[name] = goldenResource{Version: s.GetVersionMap(typeURL)[name], Resource: js}
		}
		g.Resources[typeURL] = out
	}
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatalf("marshal golden: %v", err)
	}
	return append(b, '\n')
}

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(goldenRevision, decodeYAML(t, data))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			got := render(t, s)
			out := filepath.Join("testdata", "out", name+".json")
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("read golden (run go test -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("translation of %s differs from %s (rerun with -update and review the diff):\n%s", in, out, got)
			}
		})
	}
}

// TestVersionsMatchGoControlPlane checks that the versions in the manifest are
// the ones go-control-plane sends on the wire with each resource.
func TestVersionsMatchGoControlPlane(t *testing.T) {
	data, err := os.ReadFile("testdata/in/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(3, decodeYAML(t, data))
	if err != nil {
		t.Fatal(err)
	}
	m := s.Manifest()
	for _, typeURL := range []string{ForwardType, UpstreamGroupType, UpstreamType} {
		res := s.GetResources(typeURL)
		if d := TypeDigest(m, typeURL); !SameDigest(d, Digest(s.GetVersionMap(typeURL))) || int(d.GetCount()) != len(res) {
			t.Errorf("%s: manifest digest %v, %d resources", typeURL, d, len(res))
		}
		for name, r := range res {
			b, err := cachev3.MarshalResource(r)
			if err != nil {
				t.Fatal(err)
			}
			if want := cachev3.HashResource(b); s.GetVersionMap(typeURL)[name] != want {
				t.Errorf("%s %s: version map %q; go-control-plane hash %q",
					typeURL, name, s.GetVersionMap(typeURL)[name], want)
			}
			if got := cachev3.GetResourceName(r); got != name {
				t.Errorf("%s: resource name %q under key %q", typeURL, got, name)
			}
		}
	}
	if m.GetRevision() != 3 || s.GetVersion(ManifestType) != "3" || s.GetVersion("type.googleapis.com/other") != "" {
		t.Errorf("revision %d, version %q", m.GetRevision(), s.GetVersion(ManifestType))
	}
}

func TestDigest(t *testing.T) {
	a := Digest(map[string]string{"a": "1", "b": "2"})
	if a.GetCount() != 2 || len(a.GetDigest()) != 64 {
		t.Fatalf("digest %v", a)
	}
	for _, other := range []map[string]string{
		{"a": "1", "b": "3"}, {"a": "1"}, {"a": "1", "b": "2", "c": "3"}, {"a": "1", "c": "2"}, {"a1": "", "b": "2"},
	} {
		if SameDigest(a, Digest(other)) {
			t.Errorf("%v has the digest of {a:1 b:2}", other)
		}
	}
	if !SameDigest(a, Digest(map[string]string{"b": "2", "a": "1"})) {
		t.Error("digest depends on map order")
	}
	if SameDigest(nil, nil) {
		t.Error("nil digests match")
	}
}

func TestImmutable(t *testing.T) {
	cfg := &configv1.Config{Upstreams: []*configv1.Upstream{{Name: "a", Url: "http://a"}}}
	s, err := New(1, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := s.GetVersionMap(UpstreamType)["a"]
	cfg.Upstreams[0].Url = "http://changed"
	u := s.GetResources(UpstreamType)["a"].(*configv1.Upstream)
	if u.GetUrl() != "http://a" {
		t.Errorf("snapshot shares the caller's message: url %q", u.GetUrl())
	}
	if v, _ := ResourceVersion(u); v != before {
		t.Errorf("version %q, want %q", v, before)
	}
}

func TestContentHash(t *testing.T) {
	a := &configv1.Config{Upstreams: []*configv1.Upstream{{Name: "a", Url: "http://a"}, {Name: "b", Url: "http://b"}}}
	b := proto.Clone(a).(*configv1.Config)
	b.Upstreams[1].Url = "http://b2"
	s1, err := New(1, a)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(2, b)
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := s1.GetVersionMap(UpstreamType), s2.GetVersionMap(UpstreamType)
	if v1["a"] != v2["a"] {
		t.Errorf("unchanged upstream a changed version: %q → %q", v1["a"], v2["a"])
	}
	if v1["b"] == v2["b"] {
		t.Errorf("changed upstream b kept version %q", v1["b"])
	}
	if s1.ManifestVersion() == s2.ManifestVersion() {
		t.Error("manifest version did not change with the revision")
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *configv1.Config
		want []string
	}{
		{
			name: "duplicate upstream",
			cfg:  &configv1.Config{Upstreams: []*configv1.Upstream{{Name: "a"}, {Name: "a"}}},
			want: []string{`upstream "a": duplicate name`},
		},
		{
			name: "unnamed and duplicate",
			cfg: &configv1.Config{
				HttpServer:     &configv1.HttpServer{Forwards: []*configv1.Forward{{}}},
				UpstreamGroups: []*configv1.UpstreamGroup{{Name: "g"}, {Name: "g"}},
			},
			want: []string{"forward: resource without a name", `upstream group "g": duplicate name`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(9, tt.cfg)
			if err == nil {
				t.Fatal("New succeeded; want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestTypeURLs(t *testing.T) {
	got := TypeURLs()
	if got[0] != ManifestType || len(got) != 6 {
		t.Fatalf("TypeURLs() = %v", got)
	}
	s, err := New(1, &configv1.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sorted := append([]string(nil), got...)
	sort.Strings(sorted)
	for _, typeURL := range sorted {
		if s.GetResources(typeURL) == nil {
			t.Errorf("no resource map for %s", typeURL)
		}
	}
}
