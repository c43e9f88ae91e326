package redact

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
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
	if Config(nil) != nil || Message((*configv1.Upstream)(nil)) != nil {
		t.Error("nil in, nil out")
	}
	if got := Message(in.Upstreams[0]).Auth.Token; got != Marker {
		t.Errorf("Message(upstream): token %q", got)
	}
	if got := Message(in.UpstreamGroups[0]).HttpClient.Proxy.Url; got != "http://user:<redacted>@proxy.example.com:8080" {
		t.Errorf("Message(group): url %q", got)
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
	next.Upstreams = append(next.Upstreams, &configv1.Upstream{Name: "fresh", Url: "http://e", Auth: &configv1.Auth{Type: "basic", Username: "u", Password: Marker}})
	err := Restore(next, prev)
	var got []string
	for _, fe := range validate.Errors(err) {
		got = append(got, fe.Error())
	}
	want := []string{
		`upstreams[0].auth.token: the token is "<redacted>" but there is no previous value to restore: send the secret itself`,
		`upstreams[0].headers[1].value: the value is "<redacted>" but there is no previous value to restore: send the secret itself`,
		`upstreams[4].auth.password: the password is "<redacted>" but there is no previous value to restore: send the secret itself`,
		`upstream_groups[0].http_client.proxy.url: the url's password is "<redacted>" but there is no previous value to restore: send the secret itself`,
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

// TestRestoreFollowsOrigin: a hidden secret comes back only while the url it is sent to
// keeps its scheme, host and port.
func TestRestoreFollowsOrigin(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(c *configv1.Config)
		want   string // the one error expected; "" for none
	}{
		{"same url", func(c *configv1.Config) {}, ""},
		{"new path, same origin", func(c *configv1.Config) { c.Upstreams[0].Url = "https://api.openai.com/v2" }, ""},
		{"explicit default port", func(c *configv1.Config) { c.Upstreams[0].Url = "https://API.openai.com:443/v1" }, ""},
		{"new host", func(c *configv1.Config) { c.Upstreams[0].Url = "https://evil.example/v1" },
			`upstreams[0].auth.token: the token is "<redacted>" but its url now points to https://evil.example:443 instead of https://api.openai.com:443: send the secret itself, a stored secret is kept only while the scheme, host and port stay the same` + "\n" +
				`upstreams[0].headers[1].value: the value is "<redacted>" but its url now points to https://evil.example:443 instead of https://api.openai.com:443: send the secret itself, a stored secret is kept only while the scheme, host and port stay the same`},
		{"new scheme", func(c *configv1.Config) { c.Upstreams[1].Url = "https://b" },
			`upstreams[1].auth.password: the password is "<redacted>" but its url now points to https://b:443 instead of http://b:80: send the secret itself, a stored secret is kept only while the scheme, host and port stay the same`},
		{"header follows the upstream url", func(c *configv1.Config) {
			c.Upstreams[0].Url = "https://api.openai.com:8443/v1"
			c.Upstreams[0].Auth.Token = "sk-new"
		}, `upstreams[0].headers[1].value: the value is "<redacted>" but its url now points to https://api.openai.com:8443 instead of https://api.openai.com:443: send the secret itself, a stored secret is kept only while the scheme, host and port stay the same`},
		{"to an env reference", func(c *configv1.Config) { c.Upstreams[1].Url = "${env:B_URL}" },
			`upstreams[1].auth.password: the password is "<redacted>" but its url now points to ${env:B_URL} instead of http://b:80: send the secret itself, a stored secret is kept only while the scheme, host and port stay the same`},
		{"outbound proxy moved", func(c *configv1.Config) {
			c.UpstreamGroups[0].HttpClient.Proxy.Url = "http://user:<redacted>@elsewhere.example.com:8080"
		}, `upstream_groups[0].http_client.proxy.url: the url's password is "<redacted>" but its url now points to http://elsewhere.example.com:8080 instead of http://proxy.example.com:8080: send the secret itself, a stored secret is kept only while the scheme, host and port stay the same`},
		{"outbound proxy new user, same origin", func(c *configv1.Config) {
			c.UpstreamGroups[0].HttpClient.Proxy.Url = "http://other:<redacted>@proxy.example.com:8080"
		}, ""},
		{"new secret with a new host", func(c *configv1.Config) {
			c.Upstreams[1].Url = "http://c"
			c.Upstreams[1].Auth.Password = "fresh"
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prev := sample()
			next := Config(prev)
			tt.mutate(next)
			err := Restore(next, prev)
			var got []string
			for _, fe := range validate.Errors(err) {
				got = append(got, fe.Error())
			}
			if strings.Join(got, "\n") != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), tt.want)
			}
			if tt.want != "" {
				return
			}
			for _, s := range []string{next.Upstreams[0].Auth.Token, next.Upstreams[1].Auth.Password, next.Upstreams[0].Headers[1].Value, next.UpstreamGroups[0].HttpClient.Proxy.Url} {
				if strings.Contains(s, Marker) {
					t.Errorf("%q left hidden", s)
				}
			}
		})
	}
}

// TestEveryMarkedFieldHidden walks the config's descriptors: every field marked as a
// secret in config.proto, set to a secret-shaped value, is hidden by Config and restored by
// Restore, without this test naming the fields.
func TestEveryMarkedFieldHidden(t *testing.T) {
	marked := 0
	var walk func(md protoreflect.MessageDescriptor, path []protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool)
	walk = func(md protoreflect.MessageDescriptor, path []protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		defer delete(seen, md.FullName())
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			p := append(append([]protoreflect.FieldDescriptor(nil), path...), fd)
			if fd.Message() != nil && !fd.IsMap() {
				walk(fd.Message(), p, seen)
				continue
			}
			kind := Kind(fd)
			if kind == configv1.Secret_SECRET_UNSPECIFIED {
				continue
			}
			marked++
			t.Run(string(fd.FullName()), func(t *testing.T) {
				secret := "S3cret-" + string(fd.Name())
				value := secret
				if kind == configv1.Secret_SECRET_URL_PASSWORD {
					value = "http://user:" + secret + "@host.example:8080"
				}
				c := &configv1.Config{}
				set(c.ProtoReflect(), p, value)
				shown := Config(c)
				b, err := protojson.Marshal(shown)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), secret) {
					t.Fatalf("%s shown: %s", secret, b)
				}
				if !strings.Contains(string(b), Marker) {
					t.Fatalf("no %q in %s", Marker, b)
				}
				if err := Restore(shown, c); err != nil {
					t.Fatalf("Restore: %v", err)
				}
				if !proto.Equal(shown, c) {
					t.Errorf("not restored:\n got  %v\n want %v", shown, c)
				}
			})
		}
	}
	md := (&configv1.Config{}).ProtoReflect().Descriptor()
	walk(md, nil, map[protoreflect.FullName]bool{})
	if marked < 4 {
		t.Errorf("found %d marked fields; config.proto marks at least 4", marked)
	}
	var names []string
	for _, fd := range Fields(md) {
		names = append(names, string(fd.FullName()))
	}
	if len(names) != marked {
		t.Errorf("Fields found %d fields, the walk %d: %v", len(names), marked, names)
	}
	for _, want := range []string{"Auth.token", "Auth.password", "HeaderOp.value", "OutboundProxy.url"} {
		if !slices.Contains(names, "llmproxy.config.v1."+want) {
			t.Errorf("Fields = %v; lacks %s", names, want)
		}
	}
}

// set stores value at the field path p of m, creating the messages and list elements on the
// way. A `key` sibling of the secret is given a credential header name, so a header value
// counts as a secret.
func set(m protoreflect.Message, p []protoreflect.FieldDescriptor, value string) {
	for _, fd := range p[:len(p)-1] {
		if fd.IsList() {
			l := m.Mutable(fd).List()
			el := l.NewElement()
			l.Append(el)
			m = el.Message()
		} else {
			m = m.Mutable(fd).Message()
		}
		if f := m.Descriptor().Fields().ByName("name"); f != nil {
			m.Set(f, protoreflect.ValueOfString("n"))
		}
	}
	last := p[len(p)-1]
	if k := m.Descriptor().Fields().ByName("key"); k != nil && k != last {
		m.Set(k, protoreflect.ValueOfString("X-Api-Key"))
	}
	switch {
	case last.IsList():
		m.Mutable(last).List().Append(protoreflect.ValueOfString(value))
	case last.IsMap():
		m.Mutable(last).Map().Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfString(value))
	default:
		m.Set(last, protoreflect.ValueOfString(value))
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

// TestReplaceAttr: a config logged by mistake, bare or packed in an Any, shows no secret.
func TestReplaceAttr(t *testing.T) {
	packed, err := anypb.New(sample().Upstreams[0])
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}))
	log.Info("oops", "config", sample(), "resource", packed, "n", 3)
	got := out.String()
	for _, secret := range []string{"sk-secret", "ak-secret", `"pw"`, "user:pass@"} {
		if strings.Contains(got, secret) {
			t.Errorf("log shows %s: %s", secret, got)
		}
	}
	for _, want := range []string{`"token":"<redacted>"`, `"url":"http://user:<redacted>@proxy.example.com:8080"`, `"n":3`, `"name":"openai"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s: %s", want, got)
		}
	}
}
