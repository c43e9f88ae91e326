package xdsclient

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/llmproxy-go/llmproxy/controlplane/snapshot"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// fakeServer plays the control plane's part of delta xDS for one stream:
// per type it remembers what it returned and sends the difference to the
// current snapshot, like go-control-plane's snapshot cache.
type fakeServer struct {
	t        *testing.T
	snap     *snapshot.Snapshot
	returned map[string]map[string]string
	nonce    int
}

func newFakeServer(t *testing.T, initial map[string]map[string]string) *fakeServer {
	f := &fakeServer{t: t, returned: map[string]map[string]string{}}
	for _, typeURL := range typeURLs {
		f.returned[typeURL] = maps.Clone(initial[typeURL])
		if f.returned[typeURL] == nil {
			f.returned[typeURL] = map[string]string{}
		}
	}
	return f
}

func (f *fakeServer) set(rev uint64, cfg *configv1.Config) {
	f.t.Helper()
	s, err := snapshot.New(rev, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.snap = s
}

// respond returns the response for typeURL against the current snapshot.
func (f *fakeServer) respond(typeURL string) *discoveryv3.DeltaDiscoveryResponse {
	f.t.Helper()
	f.nonce++
	resp := &discoveryv3.DeltaDiscoveryResponse{
		TypeUrl:           typeURL,
		Nonce:             strconv.Itoa(f.nonce),
		SystemVersionInfo: f.snap.GetVersion(typeURL),
	}
	versions := f.snap.GetVersionMap(typeURL)
	for _, name := range slices.Sorted(maps.Keys(versions)) {
		if f.returned[typeURL][name] == versions[name] {
			continue
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f.snap.GetResources(typeURL)[name])
		if err != nil {
			f.t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{
			Name: name, Version: versions[name], Resource: &anypb.Any{TypeUrl: typeURL, Value: b},
		})
	}
	for name := range f.returned[typeURL] {
		if _, ok := versions[name]; !ok {
			resp.RemovedResources = append(resp.RemovedResources, name)
		}
	}
	f.returned[typeURL] = maps.Clone(versions)
	return resp
}

type applyCall struct {
	rev uint64
	cfg *configv1.Config
}

// recorder is an apply function that records calls and fails when fail
// returns an error.
type recorder struct {
	calls []applyCall
	fail  func(cfg *configv1.Config) error
}

func (r *recorder) apply(rev uint64, cfg *configv1.Config) error {
	if r.fail != nil {
		if err := r.fail(cfg); err != nil {
			return err
		}
	}
	r.calls = append(r.calls, applyCall{rev, proto.Clone(cfg).(*configv1.Config)})
	return nil
}

func cfgOf(upstreams map[string]string, group string, members ...string) *configv1.Config {
	c := &configv1.Config{HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{{Name: "main", DefaultGroup: group}}}}
	for _, name := range slices.Sorted(maps.Keys(upstreams)) {
		c.Upstreams = append(c.Upstreams, &configv1.Upstream{Name: name, Url: upstreams[name]})
	}
	g := &configv1.UpstreamGroup{Name: group}
	for _, m := range members {
		g.Upstreams = append(g.Upstreams, &configv1.UpstreamRef{Name: m})
	}
	c.UpstreamGroups = []*configv1.UpstreamGroup{g}
	return c
}

// consistent fails the test when cfg references an upstream or group it
// does not define.
func consistent(t *testing.T, cfg *configv1.Config) {
	t.Helper()
	ups, groups := map[string]bool{}, map[string]bool{}
	for _, u := range cfg.GetUpstreams() {
		ups[u.GetName()] = true
	}
	for _, g := range cfg.GetUpstreamGroups() {
		groups[g.GetName()] = true
		for _, m := range g.GetUpstreams() {
			if !ups[m.GetName()] {
				t.Errorf("group %q references missing upstream %q", g.GetName(), m.GetName())
			}
		}
	}
	for _, f := range cfg.GetHttpServer().GetForwards() {
		if !groups[f.GetDefaultGroup()] {
			t.Errorf("forward %q references missing group %q", f.GetName(), f.GetDefaultGroup())
		}
	}
}

func permutations(s []string) [][]string {
	if len(s) <= 1 {
		return [][]string{slices.Clone(s)}
	}
	var out [][]string
	for i := range s {
		rest := append(slices.Clone(s[:i]), s[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{s[i]}, p...))
		}
	}
	return out
}

// start brings a tracker to revision 1 of cfg through a fresh stream.
func start(t *testing.T, rec *recorder, cfg *configv1.Config) (*tracker, *fakeServer) {
	t.Helper()
	tr := newTracker(rec.apply)
	reqs := tr.restart(nil)
	initial := map[string]map[string]string{}
	for _, r := range reqs {
		initial[r.GetTypeUrl()] = r.GetInitialResourceVersions()
	}
	srv := newFakeServer(t, initial)
	srv.set(1, cfg)
	for _, typeURL := range typeURLs {
		if a := tr.handle(srv.respond(typeURL)); a.GetErrorDetail() != nil {
			t.Fatalf("revision 1: NACK %v", a.GetErrorDetail())
		}
	}
	if len(rec.calls) != 1 || rec.calls[0].rev != 1 {
		t.Fatalf("revision 1: apply calls %v", rec.calls)
	}
	rec.calls = nil
	return tr, srv
}

// TestEveryOrder delivers the types of a revision in every order, with the
// revision changing every type, one type, or renaming an upstream that a
// group is repointed to: the revision is applied exactly once, after its
// last type arrives, and never as a mix.
func TestEveryOrder(t *testing.T) {
	v1 := cfgOf(map[string]string{"a": "http://a"}, "g", "a")
	tests := []struct {
		name string
		next *configv1.Config
	}{
		{"all types change", func() *configv1.Config {
			c := cfgOf(map[string]string{"a": "http://a2", "b": "http://b"}, "h", "a", "b")
			return c
		}()},
		{"only upstreams change", cfgOf(map[string]string{"a": "http://a-new"}, "g", "a")},
		{"rename upstream and repoint group", cfgOf(map[string]string{"a2": "http://a"}, "g", "a2")},
		{"only the revision changes", cfgOf(map[string]string{"a": "http://a"}, "g", "a")},
	}
	for _, tt := range tests {
		for _, order := range permutations(typeURLs[:]) {
			short := make([]string, len(order))
			for i, o := range order {
				short[i] = o[strings.LastIndex(o, ".")+1:]
			}
			t.Run(tt.name+"/"+strings.Join(short, ","), func(t *testing.T) {
				rec := &recorder{}
				tr, srv := start(t, rec, v1)
				rev1 := srv.snap
				srv.set(2, tt.next)
				// The revision is complete once the manifest and every type
				// that changed have arrived.
				want := 0
				for i, typeURL := range order {
					if !maps.Equal(rev1.GetVersionMap(typeURL), srv.snap.GetVersionMap(typeURL)) {
						want = max(want, i)
					}
				}
				for i, typeURL := range order {
					if a := tr.handle(srv.respond(typeURL)); a.GetErrorDetail() != nil {
						t.Fatalf("NACK %v", a.GetErrorDetail())
					}
					if applied := len(rec.calls) > 0; applied != (i >= want) {
						t.Fatalf("after %d of %d types: applied %v; want %v", i+1, len(order), applied, i >= want)
					}
				}
				consistent(t, rec.calls[0].cfg)
				if len(rec.calls) != 1 || rec.calls[0].rev != 2 {
					t.Fatalf("apply calls: %d, want one of revision 2", len(rec.calls))
				}
				if !proto.Equal(rec.calls[0].cfg, tt.next) {
					t.Errorf("applied %v\nwant %v", rec.calls[0].cfg, tt.next)
				}
			})
		}
	}
}

// TestNoChangeType: a revision that changes only upstreams sends no forward
// or group update at all; it is applied when the manifest and the upstreams
// have arrived.
func TestNoChangeType(t *testing.T) {
	rec := &recorder{}
	tr, srv := start(t, rec, cfgOf(map[string]string{"a": "http://a"}, "g", "a"))
	next := cfgOf(map[string]string{"a": "http://changed"}, "g", "a")
	srv.set(2, next)
	tr.handle(srv.respond(upstreamType))
	if len(rec.calls) != 0 {
		t.Fatal("applied before the manifest arrived")
	}
	tr.handle(srv.respond(manifestType))
	if len(rec.calls) != 1 || !proto.Equal(rec.calls[0].cfg, next) {
		t.Fatalf("apply calls %v", rec.calls)
	}
	// The other types' responses are empty and change nothing.
	for _, typeURL := range []string{forwardType, upstreamGroupType} {
		resp := srv.respond(typeURL)
		if len(resp.GetResources())+len(resp.GetRemovedResources()) != 0 {
			t.Fatalf("%s: non-empty response", typeURL)
		}
		if a := tr.handle(resp); a.GetErrorDetail() != nil {
			t.Fatal(a.GetErrorDetail())
		}
	}
	if len(rec.calls) != 1 {
		t.Fatalf("applied %d times", len(rec.calls))
	}
}

// TestNACK: a refused revision is NACKed with the reason on the response
// that completed it, is not retried, and the next revision is applied.
func TestNACK(t *testing.T) {
	rec := &recorder{}
	tr, srv := start(t, rec, cfgOf(map[string]string{"a": "http://a"}, "g", "a"))
	rec.fail = func(cfg *configv1.Config) error {
		if cfg.GetUpstreams()[0].GetUrl() == "bad" {
			return errors.New("upstreams[0].url: not a URL")
		}
		return nil
	}
	srv.set(2, cfgOf(map[string]string{"a": "bad"}, "g", "a"))
	if a := tr.handle(srv.respond(manifestType)); a.GetErrorDetail() != nil {
		t.Fatalf("incomplete revision NACKed: %v", a.GetErrorDetail())
	}
	a := tr.handle(srv.respond(upstreamType))
	if a.GetErrorDetail() == nil || !strings.Contains(a.GetErrorDetail().GetMessage(), "upstreams[0].url: not a URL") {
		t.Fatalf("answer %v; want a NACK with the reason", a)
	}
	if a.GetResponseNonce() != strconv.Itoa(srv.nonce) || a.GetTypeUrl() != upstreamType {
		t.Errorf("NACK answers nonce %q type %q", a.GetResponseNonce(), a.GetTypeUrl())
	}
	if tr.appliedRev != 1 || len(rec.calls) != 0 {
		t.Fatalf("applied rev %d, calls %v", tr.appliedRev, rec.calls)
	}
	// A stream that brought a refused revision has not synced: reconnects keep backing off.
	if !tr.synced {
		t.Error("synced is false after revision 1 was applied on this stream")
	}
	tr.restart(nil)
	if tr.synced {
		t.Error("synced survives a restart")
	}
	// A reconnect re-delivers revision 2: NACKed again, Apply not retried.
	calls := 0
	rec.fail = func(*configv1.Config) error { calls++; return errors.New("unexpected") }
	tr.restart(nil)
	srv2 := newFakeServer(t, map[string]map[string]string{})
	for _, typeURL := range typeURLs {
		srv2.returned[typeURL] = tr.cache.versions(typeURL)
	}
	srv2.snap = srv.snap
	var nacks int
	for _, typeURL := range typeURLs {
		if a := tr.handle(srv2.respond(typeURL)); a.GetErrorDetail() != nil {
			nacks++
		}
	}
	if nacks != 1 || calls != 0 {
		t.Errorf("after reconnect: %d NACKs, %d apply calls; want 1, 0", nacks, calls)
	}
	if tr.synced {
		t.Error("synced after a stream that brought only a refused revision")
	}
	rec.fail = nil
	srv2.set(3, cfgOf(map[string]string{"a": "http://fixed"}, "g", "a"))
	for _, typeURL := range typeURLs {
		if a := tr.handle(srv2.respond(typeURL)); a.GetErrorDetail() != nil {
			t.Fatalf("revision 3 NACKed: %v", a.GetErrorDetail())
		}
	}
	if len(rec.calls) != 1 || rec.calls[0].rev != 3 {
		t.Fatalf("apply calls %v", rec.calls)
	}
	if !tr.synced {
		t.Error("not synced after revision 3 was applied")
	}
}

// TestRestart: a new stream announces the applied versions, drops a
// half-received revision, and an unchanged control plane sends nothing.
func TestRestart(t *testing.T) {
	rec := &recorder{}
	cfg := cfgOf(map[string]string{"a": "http://a", "b": "http://b"}, "g", "a", "b")
	tr, srv := start(t, rec, cfg)
	rev1 := srv.snap
	srv.set(2, cfgOf(map[string]string{"a": "http://a2"}, "g", "a"))
	tr.handle(srv.respond(upstreamType)) // half of revision 2
	reqs := tr.restart(nil)
	for _, r := range reqs {
		want := rev1.GetVersionMap(r.GetTypeUrl())
		if !maps.Equal(r.GetInitialResourceVersions(), want) {
			t.Errorf("%s: initial versions %v, want %v", r.GetTypeUrl(), r.GetInitialResourceVersions(), want)
		}
		if slices.Compare(r.GetResourceNamesSubscribe(), []string{"*"}) != 0 {
			t.Errorf("%s: subscribe %v", r.GetTypeUrl(), r.GetResourceNamesSubscribe())
		}
	}
}

// TestSeedMatchesControlPlane: the versions a proxy derives from its saved
// state are the control plane's, so resuming sends nothing again.
func TestSeedMatchesControlPlane(t *testing.T) {
	cfg := cfgOf(map[string]string{"a": "http://a", "b": "http://b"}, "g", "a", "b")
	s, err := snapshot.New(7, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker((&recorder{}).apply)
	if err := tr.seed(7, cfg); err != nil {
		t.Fatal(err)
	}
	for _, r := range tr.restart(nil) {
		if want := s.GetVersionMap(r.GetTypeUrl()); !maps.Equal(r.GetInitialResourceVersions(), want) {
			t.Errorf("%s: %v, want %v", r.GetTypeUrl(), r.GetInitialResourceVersions(), want)
		}
	}
}

// TestDigestMatchesSnapshot: the client's digest of the resources it holds
// is the control plane's digest of the same names and versions.
func TestDigestMatchesSnapshot(t *testing.T) {
	for _, versions := range []map[string]string{{}, {"a": "1"}, {"b": "2", "a": "1", "long-name": strings.Repeat("f", 200)}} {
		ts := &typeSet{entries: map[string]entry{}}
		for name, v := range versions {
			ts.entries[name] = entry{version: v}
		}
		if got, want := ts.digestOf(), snapshot.Digest(versions); !snapshot.SameDigest(got, want) {
			t.Errorf("%v: client %v, control plane %v", versions, got, want)
		}
	}
}

// TestAppliedUnchangedByLaterResponses: the applied set shares unchanged
// types with the cache, and a response after an apply does not change it.
func TestAppliedUnchangedByLaterResponses(t *testing.T) {
	tr := newTracker((&recorder{}).apply)
	cfg := cfgOf(map[string]string{"a": "http://a", "b": "http://b"}, "g", "a", "b")
	if err := tr.seed(1, cfg); err != nil {
		t.Fatal(err)
	}
	tr.restart(nil)
	before := tr.applied.versions(upstreamType)
	tr.handle(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: upstreamType, Nonce: "1", RemovedResources: []string{"a"}})
	if got := tr.applied.versions(upstreamType); !maps.Equal(got, before) {
		t.Errorf("applied upstreams %v, want %v", got, before)
	}
	if _, ok := tr.cache[upstreamType].entries["a"]; ok {
		t.Error("removal not in the cache")
	}
	if tr.cache[forwardType] != tr.applied[forwardType] {
		t.Error("unchanged type copied")
	}
}

func TestTypeURLsMatchSnapshot(t *testing.T) {
	if got, want := typeURLs[:], snapshot.TypeURLs(); !slices.Equal(got, want) {
		t.Errorf("client types %v, control plane %v", got, want)
	}
	if manifestName != snapshot.ManifestName {
		t.Errorf("manifest name %q vs %q", manifestName, snapshot.ManifestName)
	}
}

func TestBadResource(t *testing.T) {
	rec := &recorder{}
	tr, _ := start(t, rec, cfgOf(map[string]string{"a": "http://a"}, "g", "a"))
	tests := []struct {
		name string
		resp *discoveryv3.DeltaDiscoveryResponse
		want string
	}{
		{"garbage", &discoveryv3.DeltaDiscoveryResponse{TypeUrl: upstreamType, Nonce: "x", Resources: []*discoveryv3.Resource{
			{Name: "a", Version: "v", Resource: &anypb.Any{TypeUrl: upstreamType, Value: []byte{0xff, 0xff}}}}}, `resource "a": decode`},
		{"wrong type", &discoveryv3.DeltaDiscoveryResponse{TypeUrl: upstreamType, Nonce: "y", Resources: []*discoveryv3.Resource{
			{Name: "a", Version: "v", Resource: &anypb.Any{TypeUrl: forwardType}}}}, "in a"},
		{"unknown type", &discoveryv3.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/x.Y", Nonce: "z"}, "unknown resource type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tr.handle(tt.resp)
			if !strings.Contains(a.GetErrorDetail().GetMessage(), tt.want) {
				t.Errorf("answer %v; want NACK mentioning %q", a, tt.want)
			}
			if a.GetResponseNonce() != tt.resp.GetNonce() {
				t.Errorf("nonce %q", a.GetResponseNonce())
			}
		})
	}
	if len(rec.calls) != 0 {
		t.Errorf("applied %v", rec.calls)
	}
}

func ExampleLoadState() {
	dir, rev := "/nonexistent", ""
	rev, cfg, ok, err := LoadState(dir)
	fmt.Println(rev, cfg, ok, err)
	// Output: <nil> false <nil>
}

// TestConsumersAndPricing: consumers arrive one resource each and the pricing list in its
// order; revoking a key is a revision that changes one consumer and nothing else, applied
// once its consumer arrives.
func TestConsumersAndPricing(t *testing.T) {
	withKeys := func(keys ...string) *configv1.Config {
		c := cfgOf(map[string]string{"a": "http://a"}, "g", "a")
		cs := &configv1.Consumer{Name: "team"}
		for _, k := range keys {
			cs.Keys = append(cs.Keys, &configv1.ConsumerKey{Id: k, Hash: "sha256:" + strings.Repeat(k, 64)})
		}
		c.Consumers = []*configv1.Consumer{{Name: "other"}, cs} // by name, as resources arrive
		c.Pricing = []*configv1.Price{{Model: "gpt-4o-mini*", InputPerMillion: 1}, {Model: "gpt-4o*", InputPerMillion: 2}, {Model: "*"}}
		return c
	}
	rec := &recorder{}
	tr, srv := start(t, rec, withKeys("1", "2"))
	srv.set(2, withKeys("2"))
	for _, typeURL := range typeURLs {
		resp := srv.respond(typeURL)
		if typeURL != manifestType && typeURL != consumerType && len(resp.GetResources())+len(resp.GetRemovedResources()) > 0 {
			t.Errorf("revoking a key changed %s", typeURL)
		}
		if a := tr.handle(resp); a.GetErrorDetail() != nil {
			t.Fatalf("NACK %v", a.GetErrorDetail())
		}
	}
	if len(rec.calls) != 1 || rec.calls[0].rev != 2 {
		t.Fatalf("apply calls %v; want revision 2 once", rec.calls)
	}
	got := rec.calls[0].cfg
	if !proto.Equal(got, withKeys("2")) {
		t.Errorf("applied\n%v\nwant\n%v", got, withKeys("2"))
	}
}
