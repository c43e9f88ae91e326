package redact

import (
	"errors"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/proto"
)

func sample() *configv1.Config {
	return &configv1.Config{
		Upstreams: []*configv1.Upstream{
			{Name: "openai", Url: "https://api.openai.com/v1", Auth: &configv1.Auth{Type: "bearer", Token: "sk-secret"},
				Headers: []*configv1.HeaderOp{
					{Op: "insert", Key: "anthropic-version", Value: "2023-06-01"},
					{Op: "replace", Key: "X-Api-Key", Value: "ak-secret"},
					{Op: "remove", Key: "Authorization"},
				}},
			{Name: "basic", Url: "http://b", Auth: &configv1.Auth{Type: "basic", Username: "user", Password: "pw"}},
			{Name: "env", Url: "http://c", Auth: &configv1.Auth{Type: "bearer", Token: "${env:OPENAI_API_KEY}"}},
			{Name: "none", Url: "http://d"},
		},
		UpstreamGroups: []*configv1.UpstreamGroup{
			{Name: "g", HttpClient: &configv1.HttpClient{Proxy: &configv1.OutboundProxy{Url: "http://user:pass@proxy.example.com:8080"}}},
			{Name: "h", HttpClient: &configv1.HttpClient{Proxy: &configv1.OutboundProxy{Url: "http://proxy.example.com:8080"}}},
		},
	}
}

func TestConfig(t *testing.T) {
	in := sample()
	orig := proto.Clone(in)
	out := Config(in)
	if !proto.Equal(in, orig) {
		t.Fatal("Config modified its argument")
	}
	checks := []struct{ what, got, want string }{
		{"bearer token", out.Upstreams[0].Auth.Token, Marker},
		{"plain header", out.Upstreams[0].Headers[0].Value, "2023-06-01"},
		{"api key header", out.Upstreams[0].Headers[1].Value, Marker},
		{"empty header value", out.Upstreams[0].Headers[2].Value, ""},
		{"username", out.Upstreams[1].Auth.Username, "user"},
		{"password", out.Upstreams[1].Auth.Password, Marker},
		{"env ref", out.Upstreams[2].Auth.Token, "${env:OPENAI_API_KEY}"},
		{"proxy url", out.UpstreamGroups[0].HttpClient.Proxy.Url, "http://user:<redacted>@proxy.example.com:8080"},
		{"proxy url without password", out.UpstreamGroups[1].HttpClient.Proxy.Url, "http://proxy.example.com:8080"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q; want %q", c.what, c.got, c.want)
		}
	}
	if out.Upstreams[3].Auth != nil {
		t.Error("redaction created an auth block")
	}
	if Config(nil) != nil || Upstream(nil) != nil || UpstreamGroup(nil) != nil {
		t.Error("nil in, nil out")
	}
	if got := Upstream(in.Upstreams[0]).Auth.Token; got != Marker {
		t.Errorf("Upstream: token %q", got)
	}
	if got := UpstreamGroup(in.UpstreamGroups[0]).HttpClient.Proxy.Url; got != "http://user:<redacted>@proxy.example.com:8080" {
		t.Errorf("UpstreamGroup: url %q", got)
	}
}

func TestURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"http://proxy:8080", "http://proxy:8080"},
		{"http://user@proxy:8080", "http://user@proxy:8080"},
		{"http://user:p%40ss@proxy:8080/path?q=1", "http://user:<redacted>@proxy:8080/path?q=1"},
		{"socks5://u:p@h:1080", "socks5://u:<redacted>@h:1080"},
		{"http://u:a@b@h", "http://u:<redacted>@h"},
		{"user:pass@proxy:8080", Marker},
		{"${env:HTTPS_PROXY}", "${env:HTTPS_PROXY}"},
		{"http://u:<redacted>@h", "http://u:<redacted>@h"},
	} {
		if got := URL(tt.in); got != tt.want {
			t.Errorf("URL(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	prev := sample()
	next := Config(prev)
	if err := Restore(next, prev); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if !proto.Equal(next, prev) {
		t.Errorf("round trip differs:\n got  %v\n want %v", next, prev)
	}
}

func TestRestoreChanges(t *testing.T) {
	prev := sample()
	next := Config(prev)
	// A new secret replaces the old one; a reordered list still restores by name.
	next.Upstreams[1].Auth.Password = "new-pw"
	next.Upstreams[0], next.Upstreams[1] = next.Upstreams[1], next.Upstreams[0]
	if err := Restore(next, prev); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if next.Upstreams[0].Auth.Password != "new-pw" || next.Upstreams[1].Auth.Token != "sk-secret" {
		t.Errorf("restored wrongly: %v", next.Upstreams)
	}
}

func TestRestoreErrors(t *testing.T) {
	prev := sample()
	next := Config(prev)
	next.Upstreams[0].Name = "renamed"
	next.UpstreamGroups[0].Name = "other"
	next.Upstreams = append(next.Upstreams, &configv1.Upstream{Name: "fresh", Auth: &configv1.Auth{Type: "basic", Username: "u", Password: Marker}})
	err := Restore(next, prev)
	var got []string
	for _, fe := range validate.Errors(err) {
		got = append(got, fe.Error())
	}
	want := []string{
		`upstreams[0].auth.token: the token is "<redacted>" but there is no previous value to restore`,
		`upstreams[0].headers[1].value: the header value is "<redacted>" but there is no previous value to restore`,
		`upstreams[4].auth.password: the password is "<redacted>" but there is no previous value to restore`,
		`upstream_groups[0].http_client.proxy.url: the proxy password is "<redacted>" but there is no previous value to restore`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !errors.Is(err, validate.ErrInvalid) {
		t.Error("not ErrInvalid")
	}
	if err := Restore(Config(sample()), nil); len(validate.Errors(err)) != 4 {
		t.Errorf("nil prev: got %v; want 4 errors", err)
	}
	if err := Restore(nil, prev); err != nil {
		t.Errorf("nil next: %v", err)
	}
}

func TestRestoreSingle(t *testing.T) {
	prev := sample()
	u := Upstream(prev.Upstreams[0])
	if err := RestoreUpstream(u, prev.Upstreams[0]); err != nil || !proto.Equal(u, prev.Upstreams[0]) {
		t.Errorf("RestoreUpstream: %v, %v", err, u)
	}
	u = Upstream(prev.Upstreams[0])
	if err := RestoreUpstream(u, nil); err == nil || !strings.HasPrefix(err.Error(), "auth.token: ") {
		t.Errorf("RestoreUpstream without prev: %v", err)
	}
	g := UpstreamGroup(prev.UpstreamGroups[0])
	if err := RestoreUpstreamGroup(g, prev.UpstreamGroups[0]); err != nil || !proto.Equal(g, prev.UpstreamGroups[0]) {
		t.Errorf("RestoreUpstreamGroup: %v, %v", err, g)
	}
	g = UpstreamGroup(prev.UpstreamGroups[0])
	if err := RestoreUpstreamGroup(g, nil); err == nil || !errors.Is(err, validate.ErrInvalid) {
		t.Errorf("RestoreUpstreamGroup without prev: %v", err)
	}
}

func TestSensitiveHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"Authorization": true, "x-api-key": true, "api-key": true, "X-Goog-Api-Key": true, "Cookie": true,
		"anthropic-version": false, "X-Custom-Proxy-Header": false, "OpenAI-Organization": false,
	} {
		if got := SensitiveHeader(name); got != want {
			t.Errorf("SensitiveHeader(%q) = %v; want %v", name, got, want)
		}
	}
}
