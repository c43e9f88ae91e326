package xdsclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "state")
	if _, _, ok, err := LoadState(dir); ok || err != nil {
		t.Fatalf("empty dir: ok=%v err=%v", ok, err)
	}
	threshold := 0.25
	cfg := cfgOf(map[string]string{"a": "http://a"}, "g", "a")
	cfg.Upstreams[0].Auth = &configv1.Auth{Type: "bearer", Token: "sk-secret"}
	cfg.Upstreams[0].Breaker = &configv1.Breaker{Threshold: &threshold}
	for _, rev := range []string{"1", "2"} {
		if err := SaveState(dir, rev, cfg); err != nil {
			t.Fatal(err)
		}
		gotRev, got, ok, err := LoadState(dir)
		if err != nil || !ok || gotRev != rev || !proto.Equal(got, cfg) {
			t.Fatalf("LoadState = %q, %v, %v, %v; want %q and the saved config", gotRev, got, ok, err, rev)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v; want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d files; want only %s", len(entries), StateFile)
	}
	// The saved config resumes with the control plane's versions.
	tr := newTracker((&recorder{}).apply)
	_, saved, _, _ := LoadState(dir)
	if err := tr.seed(2, saved); err != nil {
		t.Fatal(err)
	}
	want, _ := resourceSetOf(2, cfg)
	for _, typeURL := range typeURLs {
		for name, e := range want[typeURL].entries {
			if tr.applied[typeURL].entries[name].version != e.version {
				t.Errorf("%s %s: version changed by the round trip", typeURL, name)
			}
		}
	}
}

func TestLoadStateErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"not json", "{", "load state"},
		{"bad revision", `{"revision":"x","config":{}}`, "bad revision"},
		{"bad config", `{"revision":"3","config":{"nope":1}}`, "decode config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, ok, err := LoadState(dir)
			if ok || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadState: ok=%v err=%v; want error mentioning %q", ok, err, tt.want)
			}
		})
	}
}
