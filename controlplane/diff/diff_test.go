package diff_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/diff"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

const (
	secret1 = "sk-diff-secret-one"
	secret2 = "sk-diff-secret-two"
	proxyPW = "proxy-pass-word"
)

func base() *configv1.Config {
	return &configv1.Config{
		HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{{
			Name: "main", Port: proto.Uint32(3000), DefaultGroup: "g1",
			Routing: []*configv1.Route{
				{Path: "/v1/chat/completions", TargetGroup: "g1"},
				{Path: "/v1/embeddings", TargetGroup: "g1"},
			},
		}}},
		Upstreams: []*configv1.Upstream{
			{Name: "openai", Url: "https://api.openai.com", Auth: &configv1.Auth{Type: "bearer", Token: secret1},
				Headers: []*configv1.HeaderOp{{Op: "insert", Key: "x-api-key", Value: secret1}}},
			{Name: "local", Url: "http://127.0.0.1:8000"},
		},
		UpstreamGroups: []*configv1.UpstreamGroup{{
			Name: "g1", Upstreams: []*configv1.UpstreamRef{{Name: "openai"}, {Name: "local"}},
			HttpClient: &configv1.HttpClient{Proxy: &configv1.OutboundProxy{Url: "http://u:" + proxyPW + "@proxy:8080"}},
		}},
	}
}

// field is a FieldDiff in short: values as JSON text, "" when absent.
type field struct {
	path, old, new string
	secret         bool
}

type res struct {
	kind, name, action string
	fields             []field
}

func short(ds []*adminv1.ResourceDiff) []res {
	js := func(v proto.Message) string {
		if v == nil || !v.ProtoReflect().IsValid() {
			return ""
		}
		b, _ := protojson.Marshal(v)
		return string(b)
	}
	var out []res
	for _, d := range ds {
		r := res{kind: d.GetKind(), name: d.GetName(), action: d.GetAction()}
		for _, f := range d.GetFields() {
			r.fields = append(r.fields, field{f.GetPath(), js(f.GetOld()), js(f.GetNew()), f.GetSecret()})
		}
		out = append(out, r)
	}
	return out
}

func TestConfigs(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(c *configv1.Config)
		want      []res
		resources []string
	}{
		{name: "identical", edit: func(*configv1.Config) {}},
		{
			name:      "plain field",
			edit:      func(c *configv1.Config) { c.Upstreams[1].Url = "http://127.0.0.1:9000" },
			want:      []res{{"upstream", "local", "changed", []field{{"url", `"http://127.0.0.1:8000"`, `"http://127.0.0.1:9000"`, false}}}},
			resources: []string{"upstream/local"},
		},
		{
			name: "secret rotated: only that it changed",
			edit: func(c *configv1.Config) {
				c.Upstreams[0].Auth.Token = secret2
				c.Upstreams[0].Headers[0].Value = secret2
			},
			want: []res{{"upstream", "openai", "changed", []field{
				{"auth.token", "", "", true},
				{`headers[0].value`, "", "", true},
			}}},
			resources: []string{"upstream/openai"},
		},
		{
			name: "secret replaced by an env reference: redacted old value",
			edit: func(c *configv1.Config) { c.Upstreams[0].Auth.Token = "${env:OPENAI_KEY}" },
			want: []res{{"upstream", "openai", "changed", []field{
				{"auth.token", `"<redacted>"`, `"${env:OPENAI_KEY}"`, true},
			}}},
			resources: []string{"upstream/openai"},
		},
		{
			name: "proxy host changed: password stays redacted",
			edit: func(c *configv1.Config) {
				c.UpstreamGroups[0].HttpClient.Proxy.Url = "http://u:" + proxyPW + "@other:8080"
			},
			want: []res{{"upstream_group", "g1", "changed", []field{
				{"http_client.proxy.url", `"http://u:<redacted>@proxy:8080"`, `"http://u:<redacted>@other:8080"`, true},
			}}},
			resources: []string{"upstream_group/g1"},
		},
		{
			name: "route keyed by path, member keyed by name",
			edit: func(c *configv1.Config) {
				f := c.HttpServer.Forwards[0]
				f.Routing = []*configv1.Route{
					{Path: "/v1/embeddings", TargetGroup: "g1"},
					{Path: "/v1/chat/completions", TargetGroup: "g2", Methods: []string{"POST"}},
				}
				c.UpstreamGroups[0].Upstreams[1].Weight = proto.Uint32(3)
			},
			want: []res{
				{"forward", "main", "changed", []field{
					{`routing["/v1/chat/completions"].methods`, "", `["POST"]`, false},
					{`routing["/v1/chat/completions"].target_group`, `"g1"`, `"g2"`, false},
				}},
				{"upstream_group", "g1", "changed", []field{{`upstreams["local"].weight`, "", "3", false}}},
			},
			resources: []string{"forward/main", "upstream_group/g1"},
		},
		{
			name: "added and removed resources, settings",
			edit: func(c *configv1.Config) {
				c.Upstreams = c.Upstreams[:1]
				c.UpstreamGroups[0].Upstreams = c.UpstreamGroups[0].Upstreams[:1]
				c.Upstreams = append(c.Upstreams, &configv1.Upstream{Name: "anthropic", Url: "https://api.anthropic.com",
					Auth: &configv1.Auth{Type: "bearer", Token: secret2}})
				c.HttpServer.Admin = &configv1.Admin{Port: proto.Uint32(9100)}
			},
			want: []res{
				{"http_server", "", "added", []field{{"admin.port", "", "9100", false}}},
				{"upstream", "anthropic", "added", []field{
					{"auth.token", "", `"<redacted>"`, true},
					{"auth.type", "", `"bearer"`, false},
					{"name", "", `"anthropic"`, false},
					{"url", "", `"https://api.anthropic.com"`, false},
				}},
				{"upstream", "local", "removed", []field{
					{"name", `"local"`, "", false},
					{"url", `"http://127.0.0.1:8000"`, "", false},
				}},
				{"upstream_group", "g1", "changed", []field{{`upstreams["local"].name`, `"local"`, "", false}}},
			},
			resources: []string{"http_server", "upstream/anthropic", "upstream/local", "upstream_group/g1"},
		},
		{
			name: "consumer key added, hash withheld; pricing is its own settings",
			edit: func(c *configv1.Config) {
				c.Consumers = []*configv1.Consumer{{Name: "team", Keys: []*configv1.ConsumerKey{{Id: "k1", Hash: "sha256:" + strings.Repeat("a", 64)}}}}
				c.Pricing = []*configv1.Price{{Model: "gpt-4o*", InputPerMillion: 2.5}}
			},
			want: []res{
				{"consumer", "team", "added", []field{
					{"keys[0].hash", "", `"<redacted>"`, true},
					{"keys[0].id", "", `"k1"`, false},
					{"name", "", `"team"`, false},
				}},
				{"pricing", "", "added", []field{
					{"pricing[0].input_per_million", "", "2.5", false},
					{"pricing[0].model", "", `"gpt-4o*"`, false},
				}},
			},
			resources: []string{"consumer/team", "pricing"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, next := base(), base()
			tt.edit(next)
			before := proto.Clone(old)
			got := diff.Configs(old, next)
			if !proto.Equal(before, old) {
				t.Fatal("Configs modified its argument")
			}
			if s := short(got); !slices.EqualFunc(s, tt.want, func(a, b res) bool {
				return a.kind == b.kind && a.name == b.name && a.action == b.action && slices.Equal(a.fields, b.fields)
			}) {
				t.Errorf("Configs:\n got %+v\nwant %+v", s, tt.want)
			}
			for _, d := range got {
				b, _ := protojson.Marshal(d)
				for _, s := range []string{secret1, secret2, proxyPW} {
					if strings.Contains(string(b), s) {
						t.Errorf("diff leaks a secret: %s", b)
					}
				}
			}
			if r := diff.Resources(old, next); !slices.Equal(r, tt.resources) {
				t.Errorf("Resources: %q; want %q", r, tt.resources)
			}
		})
	}
}

func TestConfigsFromEmpty(t *testing.T) {
	got := diff.Configs(nil, base())
	var kinds []string
	for _, d := range got {
		if d.GetAction() != diff.Added {
			t.Errorf("%s/%s: action %q; want added", d.GetKind(), d.GetName(), d.GetAction())
		}
		kinds = append(kinds, d.GetKind()+"/"+d.GetName())
	}
	want := []string{"forward/main", "upstream/local", "upstream/openai", "upstream_group/g1"}
	if !slices.Equal(kinds, want) {
		t.Errorf("resources from empty: %q; want %q", kinds, want)
	}
	if got := diff.Configs(base(), nil); len(got) != 4 || got[0].GetAction() != diff.Removed {
		t.Errorf("to empty: %v", short(got))
	}
}
