package configfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/proto"
)

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown key", `
upstreams:
  - name: a
    url: http://a
    foo: 1
`, []string{`config.yaml:5:5: unknown key "foo" in upstreams[0] (valid keys: name, url, auth, headers, breaker)`}},
		{"unknown top-level key", "upstream:\n  - name: a\n",
			[]string{`config.yaml:1:1: unknown key "upstream" (valid keys: http_server, upstreams, upstream_groups, consumers, pricing)`}},
		{"unknown key in large message lists no keys", "http_server:\n  forwards:\n    - {name: a, foo: 1}\n",
			[]string{`config.yaml:3:17: unknown key "foo" in http_server.forwards[0]`}},
		{"duplicate key", "upstreams:\n  - name: a\n    name: b\n",
			[]string{`config.yaml:3:5: duplicate key "name" in upstreams[0] (first at line 2)`}},
		{"duplicate top-level key", "upstreams: []\nupstreams: []\n",
			[]string{`config.yaml:2:1: duplicate key "upstreams" (first at line 1)`}},
		{"duplicate map key", "http_server:\n  forwards:\n    - routing:\n        - headers: {x: a, x: b}\n",
			[]string{`config.yaml:4:27: duplicate key "x" in http_server.forwards[0].routing[0].headers (first at line 4)`}},
		{"stream and stream_mode", "upstream_groups:\n  - http_client: {stream: true, stream_mode: false}\n",
			[]string{`config.yaml:2:33: "stream" and "stream_mode" in upstream_groups[0].http_client set the same field; use only "stream"`}},
		{"string for integer", "http_server:\n  forwards:\n    - port: \"3000\"\n",
			[]string{`config.yaml:3:13: http_server.forwards[0].port: expected an integer 0-4294967295, got string "3000"`}},
		{"negative integer", "http_server:\n  forwards:\n    - port: -1\n",
			[]string{`config.yaml:3:13: http_server.forwards[0].port: -1 is out of range (expected an integer 0-4294967295)`}},
		{"overflow", "http_server:\n  forwards:\n    - max_body_bytes: 4294967296\n",
			[]string{`config.yaml:3:23: http_server.forwards[0].max_body_bytes: 4294967296 is out of range (expected an integer 0-4294967295)`}},
		{"float for integer", "http_server:\n  forwards:\n    - port: 3000.5\n",
			[]string{`config.yaml:3:13: http_server.forwards[0].port: expected an integer 0-4294967295, got number 3000.5`}},
		{"string for number", "upstreams:\n  - breaker: {threshold: half}\n",
			[]string{`config.yaml:2:26: upstreams[0].breaker.threshold: expected a number, got string "half"`}},
		{"infinite number", "upstreams:\n  - breaker: {threshold: .inf}\n",
			[]string{`config.yaml:2:26: upstreams[0].breaker.threshold: expected a finite number, got .inf`}},
		{"string for bool", "upstream_groups:\n  - http_client: {stream: yes}\n",
			[]string{`config.yaml:2:27: upstream_groups[0].http_client.stream: expected a boolean (true or false), got string "yes"`}},
		{"list for string", "upstreams:\n  - name: [a]\n",
			[]string{`config.yaml:2:11: upstreams[0].name: expected a string, got a list`}},
		{"scalar for list", "upstreams: a\n",
			[]string{`config.yaml:1:12: upstreams: expected a list, got string "a"`}},
		{"scalar for message", "http_server: 1\n",
			[]string{`config.yaml:1:14: http_server: expected a mapping, got integer 1`}},
		{"top level not a mapping", "- a\n",
			[]string{`config.yaml:1:1: the top level: expected a mapping, got a list`}},
		{"null list item", "upstream_groups:\n  - http_client:\n      retry:\n        retry_on: [502, ~]\n",
			[]string{`config.yaml:4:25: upstream_groups[0].http_client.retry.retry_on[1]: expected a string, got null`}},
		{"several at once", "upstreams:\n  - name: a\n    bogus: 1\n    breaker: {cooldown: x}\nupstream_groups: {}\n", []string{
			`config.yaml:3:5: unknown key "bogus" in upstreams[0] (valid keys: name, url, auth, headers, breaker)`,
			`config.yaml:4:25: upstreams[0].breaker.cooldown: expected an integer 0-4294967295, got string "x"`,
			`config.yaml:5:18: upstream_groups: expected a list, got a mapping`,
		}},
		{"syntax error", "upstreams:\n  - name: a\n   url: b\n",
			[]string{`config.yaml:1: invalid YAML: did not find expected '-' indicator`}},
		{"tab indentation", "upstreams:\n\t- name: a\n",
			[]string{`config.yaml:2: invalid YAML: found character that cannot start any token`}},
		{"two documents", "upstreams: []\n---\nupstreams: []\n",
			[]string{`config.yaml:2:1: only one YAML document is allowed`}},
		{"merge key", "upstreams:\n  - &u {name: a}\n  - <<: *u\n",
			[]string{`config.yaml:3:5: merge keys (<<) are not supported in upstreams[1]`}},
		{"non-scalar key", "? [a]\n: 1\n",
			[]string{`config.yaml:1:3: keys must be plain names, got a list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode("config.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Decode succeeded: %v", c)
			}
			if c != nil {
				t.Error("config returned with an error")
			}
			checkLines(t, err, tt.want)
			if !errors.Is(err, validate.ErrInvalid) {
				t.Error("decode error is not validate.ErrInvalid")
			}
			var de *Error
			if !errors.As(err, &de) || de.File != "config.yaml" {
				t.Errorf("errors.As(*Error) failed or wrong file: %#v", de)
			}
		})
	}
}

func TestDecodeValues(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want *configv1.Config
	}{
		{"empty", "", &configv1.Config{}},
		{"comments only", "# nothing\n", &configv1.Config{}},
		{"null document", "~\n", &configv1.Config{}},
		{"empty mapping", "{}\n", &configv1.Config{}},
		{"null values leave fields unset", "http_server:\nupstreams: ~\nupstream_groups:\n  - name: g\n    balance:\n", &configv1.Config{
			UpstreamGroups: []*configv1.UpstreamGroup{{Name: "g"}},
		}},
		{"presence of zero values", "http_server:\n  forwards:\n    - {port: 0, address: \"\", max_body_bytes: 0x10}\n", &configv1.Config{
			HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{{Port: proto.Uint32(0), Address: proto.String(""), MaxBodyBytes: proto.Uint32(16)}}},
		}},
		{"empty blocks are set", "http_server: {}\nupstream_groups:\n  - {cache: {}, concurrency: {}}\n", &configv1.Config{
			HttpServer:     &configv1.HttpServer{},
			UpstreamGroups: []*configv1.UpstreamGroup{{Cache: &configv1.Cache{}, Concurrency: &configv1.Concurrency{}}},
		}},
		{"integers for a double, scalars for strings", "upstreams:\n  - name: 42\n    url: 1.50\n    breaker: {threshold: 1}\n", &configv1.Config{
			Upstreams: []*configv1.Upstream{{Name: "42", Url: "1.50", Breaker: &configv1.Breaker{Threshold: proto.Float64(1)}}},
		}},
		{"retry_on mixes ints and words", "upstream_groups:\n  - http_client:\n      retry:\n        retry_on: [502, timeout, \"429\"]\n", &configv1.Config{
			UpstreamGroups: []*configv1.UpstreamGroup{{HttpClient: &configv1.HttpClient{Retry: &configv1.Retry{RetryOn: []string{"502", "timeout", "429"}}}}},
		}},
		{"stream_mode alias", "upstream_groups:\n  - http_client: {stream_mode: false}\n", &configv1.Config{
			UpstreamGroups: []*configv1.UpstreamGroup{{HttpClient: &configv1.HttpClient{Stream: proto.Bool(false)}}},
		}},
		{"aliases", "upstreams:\n  - {name: &n a, url: *n}\n", &configv1.Config{
			Upstreams: []*configv1.Upstream{{Name: "a", Url: "a"}},
		}},
		{"route headers", "http_server:\n  forwards:\n    - routing:\n        - headers: {X-Tenant: a, x-n: 1}\n", &configv1.Config{
			HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{{Routing: []*configv1.Route{{Headers: map[string]string{"X-Tenant": "a", "x-n": "1"}}}}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode("config.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !proto.Equal(c, tt.want) {
				t.Errorf("got %v; want %v", c, tt.want)
			}
		})
	}
}

// TestDecodeAliasBomb checks that aliases cannot make decoding explode.
func TestDecodeAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 12; i++ {
		b.WriteString("a" + itoa(i) + ": &a" + itoa(i) + " [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + itoa(i-1))
		}
		b.WriteString("]\n")
	}
	b.WriteString("upstreams: *a11\n")
	_, err := Decode("bomb.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("alias bomb decoded")
	}
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

// fullConfig sets every field of the model.
func fullConfig() *configv1.Config {
	return &configv1.Config{
		HttpServer: &configv1.HttpServer{
			Forwards: []*configv1.Forward{{
				Name: "gateway", Port: proto.Uint32(8080), Address: proto.String("127.0.0.1"), DefaultGroup: "chat",
				Routing: []*configv1.Route{{
					Path: "/v1/chat/completions", TargetGroup: "chat", Model: "gpt-*",
					Headers: map[string]string{"X-Tenant": "a", "anthropic-version": "2023-06-01"},
					Methods: []string{"POST"},
				}},
				Ratelimit:    &configv1.RateLimit{Enabled: proto.Bool(true), PerSecond: proto.Uint32(10), Burst: proto.Uint32(20), Key: "header:X-Key", Scope: "global"},
				Timeout:      &configv1.ServerTimeout{Connect: proto.Uint32(5)},
				MaxBodyBytes: proto.Uint32(1 << 20),
			}},
			Admin: &configv1.Admin{Port: proto.Uint32(9000), Address: proto.String("127.0.0.1"), Timeout: &configv1.ServerTimeout{Connect: proto.Uint32(10)}},
		},
		Upstreams: []*configv1.Upstream{{
			Name: "openai", Url: "https://api.openai.com/v1",
			Auth:    &configv1.Auth{Type: "basic", Token: "t", Username: "u", Password: "p: with 'quotes' and \"more\"\n"},
			Headers: []*configv1.HeaderOp{{Op: "insert", Key: "x-a", Value: "true"}, {Op: "remove", Key: "x-b"}},
			Breaker: &configv1.Breaker{Threshold: proto.Float64(0.25), Cooldown: proto.Uint32(15), Window: "30s", MinRequests: proto.Uint32(10), HalfOpenProbes: proto.Uint32(2)},
		}},
		UpstreamGroups: []*configv1.UpstreamGroup{{
			Name:      "chat",
			Upstreams: []*configv1.UpstreamRef{{Name: "openai", Weight: proto.Uint32(3)}},
			Balance:   &configv1.Balance{Strategy: "least_busy"},
			HttpClient: &configv1.HttpClient{
				Agent: proto.String("LLMProxy/1.0"), Keepalive: proto.Uint32(60), Stream: proto.Bool(false),
				Timeout: &configv1.ClientTimeout{Connect: proto.Uint32(5), Request: proto.Uint32(120), Idle: proto.Uint32(30)},
				Retry:   &configv1.Retry{Attempts: proto.Uint32(2), Initial: proto.Uint32(200), MaxBackoff: "2s", RetryOn: []string{"502", "timeout"}},
				Proxy:   &configv1.OutboundProxy{Url: "http://user:pass@proxy:8080"},
			},
			Concurrency: &configv1.Concurrency{Max: proto.Uint32(64), Queue: proto.Uint32(0), DropExcess: proto.Bool(true), QueueTimeout: "15s"},
			Cache:       &configv1.Cache{Enabled: proto.Bool(true), Backend: "redis", Ttl: "10m", MaxObjectBytes: proto.Uint32(1), MaxBytes: proto.Uint32(2), Shared: proto.Bool(false)},
		}},
	}
}

func roundTrip(t *testing.T, c *configv1.Config) {
	t.Helper()
	out, err := Encode(c)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	back, err := Decode("encoded.yaml", out)
	if err != nil {
		t.Fatalf("Decode(Encode(c)): %v\n%s", err, out)
	}
	if !proto.Equal(back, c) {
		t.Fatalf("Decode(Encode(c)) differs:\n got  %v\n want %v\nYAML:\n%s", back, c, out)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Run("full", func(t *testing.T) { roundTrip(t, fullConfig()) })
	t.Run("empty", func(t *testing.T) { roundTrip(t, &configv1.Config{}) })
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Decode(f, data)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c)
			validate.ApplyDefaults(c)
			roundTrip(t, c)
		})
	}
}

// TestEncodeReadable checks the shape of Encode's output.
func TestEncodeReadable(t *testing.T) {
	out, err := Encode(fullConfig())
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{
		"http_server:\n  forwards:\n    - name: gateway\n      port: 8080\n      address: 127.0.0.1\n      default_group: chat\n",
		"      routing:\n        - path: /v1/chat/completions\n          target_group: chat\n          model: gpt-*\n          headers:\n            X-Tenant: a\n            anthropic-version: \"2023-06-01\"\n          methods:\n            - POST\n",
		"    breaker:\n      threshold: 0.25\n      cooldown: 15\n      window: 30s\n",
		"      - op: insert\n        key: x-a\n        value: \"true\"\n",
		"        retry_on:\n          - \"502\"\n          - timeout\n",
		"upstream_groups:\n  - name: chat\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks\n%s\nfull output:\n%s", want, text)
		}
	}
	if i, j := strings.Index(text, "http_server:"), strings.Index(text, "upstreams:"); i != 0 || j < i {
		t.Errorf("keys not in proto order:\n%s", text)
	}
	empty, err := Encode(nil)
	if err != nil || string(empty) != "{}\n" {
		t.Errorf("Encode(nil) = %q, %v; want \"{}\\n\"", empty, err)
	}
}

func TestEncodeErrors(t *testing.T) {
	bad := &configv1.Config{Upstreams: []*configv1.Upstream{{Name: "a\xff"}}}
	if _, err := Encode(bad); err == nil || !strings.Contains(err.Error(), "upstreams[0].name: string is not valid UTF-8") {
		t.Errorf("invalid UTF-8: got %v", err)
	}
	nan := &configv1.Config{Upstreams: []*configv1.Upstream{{Breaker: &configv1.Breaker{Threshold: proto.Float64(zero() / zero())}}}}
	if _, err := Encode(nan); err == nil || !strings.Contains(err.Error(), "upstreams[0].breaker.threshold: number NaN is not finite") {
		t.Errorf("NaN: got %v", err)
	}
}

func zero() float64 { return 0 }

func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{"", "{}", "upstreams: [{name: a, url: *x}]", "a: &a [*a]", "upstream_groups: [{http_client: {retry: {retry_on: [1, x]}}}]",
		"upstreams: [{name: \"\\xff\\u0000\"}]", "upstreams: [{breaker: {threshold: 1e308}}]", "upstreams: [{name: \"a\\r\\nb \"}]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode("fuzz.yaml", data)
		if err != nil {
			return
		}
		out, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode of a decoded config: %v", err)
		}
		back, err := Decode("encoded.yaml", out)
		if err != nil {
			t.Fatalf("Decode(Encode(c)): %v\n%s", err, out)
		}
		if !proto.Equal(back, c) {
			t.Fatalf("round trip differs:\n got  %v\n want %v", back, c)
		}
		// Defaults and validation must not panic on anything that decodes.
		validate.ApplyDefaults(c)
		_ = validate.Validate(c)
	})
}
