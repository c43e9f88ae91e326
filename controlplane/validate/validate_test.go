package validate

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/proto"
)

// valid returns a small valid configuration.
func valid() *configv1.Config {
	return &configv1.Config{
		HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{{
			Name: "main", DefaultGroup: "g",
			Routing: []*configv1.Route{{Path: "/v1/chat/completions", TargetGroup: "g"}},
		}}},
		Upstreams: []*configv1.Upstream{{Name: "a", Url: "https://api.openai.com/v1",
			Auth: &configv1.Auth{Type: "bearer", Token: "${env:OPENAI_API_KEY}"}}},
		UpstreamGroups: []*configv1.UpstreamGroup{{Name: "g", Upstreams: []*configv1.UpstreamRef{{Name: "a"}}}},
	}
}

func TestValidateValid(t *testing.T) {
	for name, c := range map[string]*configv1.Config{
		"nil":   nil,
		"empty": {},
		"small": valid(),
	} {
		t.Run(name, func(t *testing.T) {
			if err := Validate(c); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			ApplyDefaults(c)
			if err := Validate(c); err != nil {
				t.Fatalf("Validate after defaults: %v", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *configv1.Config)
		want   []string
		kind   error
	}{
		{"names required", func(c *configv1.Config) {
			c.Upstreams[0].Name = ""
			c.UpstreamGroups[0].Name = ""
			c.HttpServer.Forwards[0].Name = ""
		}, []string{
			`http_server.forwards[0].name: forward name is required`,
			`http_server.forwards[0].default_group: upstream group "g" is not defined`,
			`http_server.forwards[0].routing[0].target_group: upstream group "g" is not defined`,
			`upstreams[0].name: upstream name is required`,
			`upstream_groups[0].name: upstream group name is required`,
			`upstream_groups[0].upstreams[0].name: upstream "a" is not defined`,
		}, ErrInvalid},
		{"bad names", func(c *configv1.Config) {
			c.Upstreams[0].Name = "a/b"
			c.UpstreamGroups[0].Name = " g"
			c.HttpServer.Forwards[0].Name = "${env:NAME}"
		}, []string{
			`http_server.forwards[0].name: forward name cannot be an environment reference`,
			`http_server.forwards[0].default_group: upstream group "g" is not defined`,
			`http_server.forwards[0].routing[0].target_group: upstream group "g" is not defined`,
			`upstreams[0].name: upstream name "a/b" must not contain "/"`,
			`upstream_groups[0].name: upstream group name " g" has leading or trailing spaces`,
			`upstream_groups[0].upstreams[0].name: upstream "a" is not defined`,
		}, ErrInvalid},
		{"duplicate member", func(c *configv1.Config) {
			c.UpstreamGroups[0].Upstreams = append(c.UpstreamGroups[0].Upstreams, &configv1.UpstreamRef{Name: "a"})
		}, []string{`upstream_groups[0].upstreams[1].name: upstream "a" is already a member at upstream_groups[0].upstreams[0]`}, ErrInvalid},
		{"dangling member", func(c *configv1.Config) {
			c.UpstreamGroups[0].Upstreams[0].Name = "x"
		}, []string{`upstream_groups[0].upstreams[0].name: upstream "x" is not defined`}, ErrReference},
		{"token without bearer", func(c *configv1.Config) {
			c.Upstreams[0].Auth = &configv1.Auth{Token: "t"}
		}, []string{`upstreams[0].auth.token: token is set but auth type is "none" (want bearer)`}, ErrInvalid},
		{"basic with colon and control chars", func(c *configv1.Config) {
			c.Upstreams[0].Auth = &configv1.Auth{Type: "basic", Username: "a:b", Password: "x\ny"}
		}, []string{
			`upstreams[0].auth.username: username must not contain ":" (RFC 7617)`,
			`upstreams[0].auth.password: password contains control characters`,
		}, ErrInvalid},
		{"basic without password", func(c *configv1.Config) {
			c.Upstreams[0].Auth = &configv1.Auth{Type: "basic", Username: "u"}
		}, []string{`upstreams[0].auth.password: password is required for basic auth`}, ErrInvalid},
		{"env refs skip format checks", func(c *configv1.Config) {
			c.Upstreams[0].Url = "${env:UPSTREAM_URL}"
			c.HttpServer.Forwards[0].Address = proto.String("${env:BIND}")
			c.UpstreamGroups[0].HttpClient = &configv1.HttpClient{Proxy: &configv1.OutboundProxy{Url: "${env:HTTPS_PROXY}"}}
		}, nil, nil},
		{"route details", func(c *configv1.Config) {
			r := c.HttpServer.Forwards[0].Routing[0]
			r.Headers = map[string]string{"X-Tenant": "a", "x-tenant": "b", "bad name": "c"}
			r.Methods = []string{"POST", "post"}
			r.Model = "gpt-4*"
		}, []string{
			`http_server.forwards[0].routing[0].headers["bad name"]: "bad name" is not a valid header name`,
			`http_server.forwards[0].routing[0].headers["x-tenant"]: header "x-tenant" is already matched as "X-Tenant" (header names ignore case)`,
			`http_server.forwards[0].routing[0].methods[1]: method "post" is already listed at http_server.forwards[0].routing[0].methods[0]`,
		}, ErrInvalid},
		{"path as env ref", func(c *configv1.Config) {
			c.HttpServer.Forwards[0].Routing[0].Path = "${env:P}"
		}, []string{`http_server.forwards[0].routing[0].path: path cannot be an environment reference`}, ErrInvalid},
		{"ratelimit header key", func(c *configv1.Config) {
			c.HttpServer.Forwards[0].Ratelimit = &configv1.RateLimit{Key: "header:"}
		}, []string{`http_server.forwards[0].ratelimit.key: "" is not a valid header name`}, ErrInvalid},
		{"address", func(c *configv1.Config) {
			c.HttpServer.Forwards[0].Address = proto.String("not an address")
		}, []string{`http_server.forwards[0].address: "not an address" is not an IP address: a listener binds an IP address (0.0.0.0 for every IPv4 interface, :: for every interface, 127.0.0.1 for loopback only)`}, ErrInvalid},
		{"max_backoff shorter than initial", func(c *configv1.Config) {
			c.UpstreamGroups[0].HttpClient = &configv1.HttpClient{Retry: &configv1.Retry{Initial: proto.Uint32(1000), MaxBackoff: "500ms"}}
		}, []string{`upstream_groups[0].http_client.retry.max_backoff: max_backoff 500ms is shorter than initial 1s`}, ErrInvalid},
		{"cache sizes", func(c *configv1.Config) {
			c.UpstreamGroups[0].Cache = &configv1.Cache{MaxObjectBytes: proto.Uint32(10), MaxBytes: proto.Uint32(5)}
		}, []string{`upstream_groups[0].cache.max_object_bytes: max_object_bytes 10 is larger than max_bytes 5`}, ErrInvalid},
		{"concurrency bounds", func(c *configv1.Config) {
			c.UpstreamGroups[0].Concurrency = &configv1.Concurrency{Max: proto.Uint32(0), QueueTimeout: "0s"}
		}, []string{
			`upstream_groups[0].concurrency.max: 0 is out of range 1-100000`,
			`upstream_groups[0].concurrency.queue_timeout: duration "0s" must be positive`,
		}, ErrInvalid},
		{"nil elements", func(c *configv1.Config) {
			c.Upstreams = append(c.Upstreams, nil)
			c.UpstreamGroups[0].Upstreams = append(c.UpstreamGroups[0].Upstreams, nil)
		}, []string{`upstreams[1]: upstream is empty`, `upstream_groups[0].upstreams[1]: member is empty`}, ErrInvalid},
		{"tls needs both files", func(c *configv1.Config) {
			c.HttpServer.Forwards[0].Tls = &configv1.ServerTLS{Cert: "/etc/llmproxy/tls.crt"}
			c.UpstreamGroups[0].HttpClient = &configv1.HttpClient{Tls: &configv1.ClientTLS{}}
		}, []string{
			`http_server.forwards[0].tls.key: key is required (tls needs both cert and key)`,
			`upstream_groups[0].http_client.tls.ca: ca is required (remove the tls block to trust the system's CAs)`,
		}, ErrInvalid},
		{"tls files from the environment", func(c *configv1.Config) {
			c.HttpServer.Forwards[0].Tls = &configv1.ServerTLS{Cert: "${env:TLS_CERT}", Key: "${env:TLS_KEY}"}
			c.UpstreamGroups[0].HttpClient = &configv1.HttpClient{Tls: &configv1.ClientTLS{Ca: "/etc/ssl/internal-ca.pem"}}
		}, nil, nil},
		{"trusted proxies", func(c *configv1.Config) {
			c.HttpServer.Forwards[0].TrustedProxies = []string{"10.0.0.0/8", "192.0.2.7", "fd00::/8", "10.1.2.3/8", "10.0.0.0/33", "lb.internal", "${env:LB_CIDR}"}
		}, []string{
			`http_server.forwards[0].trusted_proxies[3]: 10.0.0.0/8 is already listed at http_server.forwards[0].trusted_proxies[0]`,
			`http_server.forwards[0].trusted_proxies[4]: "10.0.0.0/33" is not a CIDR (want e.g. 10.0.0.0/8 or fd00::/8)`,
			`http_server.forwards[0].trusted_proxies[5]: "lb.internal" is neither a CIDR (10.0.0.0/8) nor an IP address`,
		}, nil},
		{"nan threshold", func(c *configv1.Config) {
			nan := 0.0
			nan /= nan
			c.Upstreams[0].Breaker = &configv1.Breaker{Threshold: &nan}
		}, []string{`upstreams[0].breaker.threshold: threshold NaN is out of range 0.01-1.0`}, ErrInvalid},
		{"credentials in an upstream url", func(c *configv1.Config) {
			c.Upstreams[0].Url = "https://user:hunter2@api.example.com/v1?api_key=K1&Access_Token=K2&api-version=2024"
		}, []string{
			`upstreams[0].url: url must not carry a user name or password (they are not sent, and a url is shown in clear): put credentials in auth (type: basic with username and password, or type: bearer with token) or in headers`,
			`upstreams[0].url: url query parameter "Access_Token" looks like a credential (a url is shown in clear): send it in auth (type: bearer) or in headers (e.g. op: insert, key: api-key), which are kept secret`,
			`upstreams[0].url: url query parameter "api_key" looks like a credential (a url is shown in clear): send it in auth (type: bearer) or in headers (e.g. op: insert, key: api-key), which are kept secret`,
		}, ErrInvalid},
		{"bad urls are not echoed with their secrets", func(c *configv1.Config) {
			c.Upstreams[0].Url = "https://u:hunter2@api.example.com:99999/v1?key=K1"
			c.Upstreams = append(c.Upstreams, &configv1.Upstream{Name: "b", Url: "http://u:hunter2 x@h"})
		}, []string{
			`upstreams[0].url: url must not carry a user name or password (they are not sent, and a url is shown in clear): put credentials in auth (type: basic with username and password, or type: bearer with token) or in headers`,
			`upstreams[0].url: url query parameter "key" looks like a credential (a url is shown in clear): send it in auth (type: bearer) or in headers (e.g. op: insert, key: api-key), which are kept secret`,
			`upstreams[0].url: url "https://u:xxxxx@api.example.com:99999/v1?key=xxxxx" has an invalid port`,
			`upstreams[1].url: invalid url: net/url: invalid userinfo`,
		}, ErrInvalid},
		{"listener address is a host name", func(c *configv1.Config) {
			c.HttpServer.Forwards[0].Address = proto.String("proxy.example.com")
		}, []string{`http_server.forwards[0].address: "proxy.example.com" is not an IP address: a listener binds an IP address (0.0.0.0 for every IPv4 interface, :: for every interface, 127.0.0.1 for loopback only)`}, ErrInvalid},
		{"route paths that never match", func(c *configv1.Config) {
			r := c.HttpServer.Forwards[0].Routing
			r[0].Path = "/v1/chat/completions?stream=true"
			c.HttpServer.Forwards[0].Routing = append(r,
				&configv1.Route{Path: "/v1/a\x01b", TargetGroup: "g"},
				&configv1.Route{Path: "/v1/b#frag", TargetGroup: "g"},
				&configv1.Route{Path: "/v1/items/{id:[a-z]?[0-9]+}", TargetGroup: "g"}, // "?" of a regex is fine
			)
		}, []string{
			`http_server.forwards[0].routing[0].path: path must not contain "?": a route matches the request's path, never its query`,
			`http_server.forwards[0].routing[1].path: path contains control characters, which no request path holds`,
			`http_server.forwards[0].routing[2].path: path must not contain "#": a request's path never holds a fragment`,
		}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(c)
			err := Validate(c)
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Errorf("errors.Is(err, %v) is false", tt.kind)
			}
			// Defaults never change the verdict.
			ApplyDefaults(c)
			if again := Validate(c); fmt.Sprint(again) != fmt.Sprint(err) {
				t.Errorf("after ApplyDefaults:\n%v\nbefore:\n%v", again, err)
			}
		})
	}
}

func TestFieldError(t *testing.T) {
	fe := &FieldError{Path: "upstreams[0].name", Kind: ErrDuplicate, Msg: `upstream "a" is already defined`}
	if got, want := fe.Error(), `upstreams[0].name: upstream "a" is already defined`; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	if !errors.Is(fe, ErrDuplicate) || errors.Is(fe, ErrReference) {
		t.Error("errors.Is does not follow Kind")
	}
	if (&FieldError{Kind: ErrInvalid, Msg: "m"}).Error() != "m" {
		t.Error("empty path should print the message only")
	}
	other := &FieldError{Path: "p", Kind: ErrReference, Msg: "m"}
	joined := errors.Join(fe, fmt.Errorf("file.yaml:3:4: %w", other), errors.New("plain"))
	wrapped := fmt.Errorf("load config: %w", joined)
	got := Errors(wrapped)
	if len(got) != 3 || got[0] != fe || got[1] != other || got[2].Msg != "plain" || got[2].Kind != ErrInvalid {
		t.Errorf("Errors flattened wrongly: %v", got)
	}
	if Errors(nil) != nil {
		t.Error("Errors(nil) should be nil")
	}
	var as *FieldError
	if !errors.As(wrapped, &as) || as != fe {
		t.Error("errors.As does not find the first field error")
	}
}

func TestApplyDefaults(t *testing.T) {
	c := &configv1.Config{
		HttpServer: &configv1.HttpServer{
			Forwards: []*configv1.Forward{{Name: "f", DefaultGroup: "g", Ratelimit: &configv1.RateLimit{}}},
			Admin:    &configv1.Admin{},
		},
		Upstreams: []*configv1.Upstream{{Name: "u", Url: "http://u"}},
		UpstreamGroups: []*configv1.UpstreamGroup{{
			Name: "g", Upstreams: []*configv1.UpstreamRef{{Name: "u"}},
			HttpClient:  &configv1.HttpClient{Stream: proto.Bool(false), Retry: &configv1.Retry{}},
			Concurrency: &configv1.Concurrency{Max: proto.Uint32(4)},
			Cache:       &configv1.Cache{},
		}},
		Consumers: []*configv1.Consumer{{
			Name: "c", Keys: []*configv1.ConsumerKey{{Id: "k", Hash: "sha256:" + strings.Repeat("ab", 32)}},
			Limits: &configv1.ConsumerLimits{Budget: &configv1.Budget{Usd: 5}},
		}},
	}
	ApplyDefaults(c)
	want := &configv1.Config{
		HttpServer: &configv1.HttpServer{
			Forwards: []*configv1.Forward{{
				Name: "f", DefaultGroup: "g", Port: proto.Uint32(3000), Address: proto.String("0.0.0.0"), MaxBodyBytes: proto.Uint32(10485760),
				Timeout:    &configv1.ServerTimeout{Connect: proto.Uint32(10), Body: "60s"},
				Ratelimit:  &configv1.RateLimit{Enabled: proto.Bool(true), PerSecond: proto.Uint32(100), Burst: proto.Uint32(200), Key: "ip", Scope: "local"},
				ClientAuth: "off",
			}},
			Admin: &configv1.Admin{Port: proto.Uint32(9000), Address: proto.String("127.0.0.1"), Timeout: &configv1.ServerTimeout{Connect: proto.Uint32(10)}},
		},
		Upstreams: []*configv1.Upstream{{
			Name: "u", Url: "http://u", Auth: &configv1.Auth{Type: "none"},
			Breaker: &configv1.Breaker{Threshold: proto.Float64(0.5), Cooldown: proto.Uint32(30), Window: "10s", MinRequests: proto.Uint32(5), HalfOpenProbes: proto.Uint32(1)},
		}},
		UpstreamGroups: []*configv1.UpstreamGroup{{
			Name:      "g",
			Upstreams: []*configv1.UpstreamRef{{Name: "u", Weight: proto.Uint32(1)}},
			Balance:   &configv1.Balance{Strategy: "roundrobin"},
			HttpClient: &configv1.HttpClient{
				Agent: proto.String("LLMProxy/1.0"), Keepalive: proto.Uint32(60), Stream: proto.Bool(false),
				Timeout: &configv1.ClientTimeout{Connect: proto.Uint32(10), Request: proto.Uint32(300), Idle: proto.Uint32(60)},
				Retry:   &configv1.Retry{Attempts: proto.Uint32(3), Initial: proto.Uint32(500), MaxBackoff: "10s", RetryOn: []string{"connect_error", "timeout", "429", "502", "503", "504"}},
			},
			Concurrency: &configv1.Concurrency{Max: proto.Uint32(4), Queue: proto.Uint32(0), DropExcess: proto.Bool(false), QueueTimeout: "30s"},
			Cache:       &configv1.Cache{Enabled: proto.Bool(false), Backend: "memory", Ttl: "5m", MaxObjectBytes: proto.Uint32(1048576), MaxBytes: proto.Uint32(67108864), Shared: proto.Bool(false)},
		}},
		Consumers: []*configv1.Consumer{{
			Name: "c", Keys: []*configv1.ConsumerKey{{Id: "k", Hash: "sha256:" + strings.Repeat("ab", 32), Disabled: proto.Bool(false)}},
			Limits: &configv1.ConsumerLimits{Budget: &configv1.Budget{Usd: 5, Period: "month"}},
		}},
	}
	if !proto.Equal(c, want) {
		t.Errorf("got\n%v\nwant\n%v", c, want)
	}
	again := proto.Clone(c).(*configv1.Config)
	ApplyDefaults(again)
	if !proto.Equal(again, c) {
		t.Error("ApplyDefaults is not idempotent")
	}
	if err := Validate(c); err != nil {
		t.Errorf("defaults are not valid: %v", err)
	}
	ApplyDefaults(nil)
	empty := &configv1.Config{}
	ApplyDefaults(empty)
	if !proto.Equal(empty, &configv1.Config{}) {
		t.Errorf("defaults added blocks to an empty config: %v", empty)
	}
}

func TestEnvRefs(t *testing.T) {
	for _, tt := range []struct {
		s     string
		isRef bool
		name  string
		ok    bool
	}{
		{"${env:OPENAI_API_KEY}", true, "OPENAI_API_KEY", true},
		{"${env:_x1}", true, "_x1", true},
		{"${env:1X}", true, "1X", false},
		{"${env:A-B}", true, "A-B", false},
		{"${env:}", true, "", false},
		{"Bearer ${env:X}", false, "", false},
		{"${env:X", false, "", false},
		{"", false, "", false},
	} {
		if got := IsEnvRef(tt.s); got != tt.isRef {
			t.Errorf("IsEnvRef(%q) = %v; want %v", tt.s, got, tt.isRef)
		}
		if name, ok := EnvRefName(tt.s); name != tt.name || ok != tt.ok {
			t.Errorf("EnvRefName(%q) = %q, %v; want %q, %v", tt.s, name, ok, tt.name, tt.ok)
		}
	}
}

func TestResolveEnv(t *testing.T) {
	c := valid()
	c.Upstreams[0].Headers = []*configv1.HeaderOp{{Op: "insert", Key: "x-api-key", Value: "${env:MISSING}"}}
	c.HttpServer.Forwards[0].Routing[0].Headers = map[string]string{"X-Tenant": "${env:TENANT}"}
	c.UpstreamGroups[0].HttpClient = &configv1.HttpClient{
		Agent: proto.String("${env:AGENT}"),
		Retry: &configv1.Retry{RetryOn: []string{"502", "${env:RETRY}"}},
		Proxy: &configv1.OutboundProxy{Url: "${env:bad-name}"},
	}
	env := map[string]string{"OPENAI_API_KEY": "sk-1", "TENANT": "acme", "AGENT": "", "RETRY": "timeout"}
	err := ResolveEnv(c, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	var got []string
	for _, fe := range Errors(err) {
		got = append(got, fe.Error())
		if !errors.Is(fe, ErrInvalid) {
			t.Errorf("%v is not ErrInvalid", fe)
		}
	}
	want := []string{
		`upstreams[0].headers[0].value: environment variable MISSING is not set`,
		`upstream_groups[0].http_client.proxy.url: "bad-name" is not a valid environment variable name`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	checks := []struct{ what, got, want string }{
		{"token", c.Upstreams[0].Auth.Token, "sk-1"},
		{"route header", c.HttpServer.Forwards[0].Routing[0].Headers["X-Tenant"], "acme"},
		{"agent (set but empty)", c.UpstreamGroups[0].HttpClient.GetAgent(), ""},
		{"retry_on", strings.Join(c.UpstreamGroups[0].HttpClient.Retry.RetryOn, ","), "502,timeout"},
		{"unresolved stays", c.Upstreams[0].Headers[0].Value, "${env:MISSING}"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %q; want %q", ch.what, ch.got, ch.want)
		}
	}
	if c.UpstreamGroups[0].HttpClient.Agent == nil {
		t.Error("agent presence lost")
	}
	if err := ResolveEnv(nil, nil); err != nil {
		t.Errorf("ResolveEnv(nil) = %v", err)
	}
}

func TestCheckSupported(t *testing.T) {
	c := valid()
	c.HttpServer.Forwards[0].Ratelimit = &configv1.RateLimit{Scope: "global"}
	c.UpstreamGroups[0].Cache = &configv1.Cache{Enabled: proto.Bool(true)}
	c.UpstreamGroups = append(c.UpstreamGroups, &configv1.UpstreamGroup{Name: "h", Upstreams: []*configv1.UpstreamRef{{Name: "a"}},
		Cache: &configv1.Cache{Enabled: proto.Bool(false)}})
	// Every feature of the model is implemented: Validate refuses none of them.
	if err := Validate(c); err != nil {
		t.Fatalf("Validate = %v; want nil (nothing is unsupported)", err)
	}
	features := []Feature{
		{Field: "upstream_groups.cache.enabled", Value: "true", Reason: "response caching is not implemented"},
		{Field: "http_server.forwards.ratelimit.scope", Value: "global", Reason: "global rate limits need Redis"},
		{Field: "upstream_groups.concurrency", Reason: "concurrency limits are not implemented"},
	}
	err := CheckSupported(c, features)
	var got []string
	for _, fe := range Errors(err) {
		got = append(got, fe.Error())
		if !errors.Is(fe, ErrNotSupported) {
			t.Errorf("%v is not ErrNotSupported", fe)
		}
	}
	want := []string{
		`http_server.forwards[0].ratelimit.scope: global rate limits need Redis`,
		`upstream_groups[0].cache.enabled: response caching is not implemented`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := CheckSupported(c, nil); err != nil {
		t.Errorf("no features: %v", err)
	}
}

func TestUsers(t *testing.T) {
	c := valid()
	if got := UpstreamUsers(c, "a"); strings.Join(got, ",") != "upstream_groups[0].upstreams[0].name" {
		t.Errorf("UpstreamUsers = %v", got)
	}
	if got := GroupUsers(c, "g"); strings.Join(got, ",") != "http_server.forwards[0].default_group,http_server.forwards[0].routing[0].target_group" {
		t.Errorf("GroupUsers = %v", got)
	}
	if UpstreamUsers(c, "zz") != nil || GroupUsers(nil, "g") != nil {
		t.Error("unused names should have no users")
	}
}

func TestParse(t *testing.T) {
	c := valid()
	c.HttpServer.Forwards[0].Address = proto.String("127.0.0.1")
	c.HttpServer.Forwards[0].Ratelimit = &configv1.RateLimit{Enabled: proto.Bool(true), Key: "header:x-api-key", Scope: "global"}
	c.HttpServer.Forwards[0].Routing[0].Model = "gpt-*"
	c.HttpServer.Forwards[0].Tls = &configv1.ServerTLS{Cert: "${env:CERT}", Key: "/etc/llmproxy/tls.key"}
	c.HttpServer.Forwards[0].TrustedProxies = []string{"10.1.2.3/8", "192.0.2.7"}
	c.HttpServer.Admin = &configv1.Admin{Port: proto.Uint32(9100)}
	c.Upstreams[0].Headers = []*configv1.HeaderOp{{Op: "replace", Key: "x-org", Value: "${env:ORG}"}}
	c.Upstreams = append(c.Upstreams, &configv1.Upstream{Name: "b", Url: "${env:B_URL}", Auth: &configv1.Auth{Type: "basic", Username: "u", Password: "p"}})
	c.UpstreamGroups[0].Upstreams = append(c.UpstreamGroups[0].Upstreams, &configv1.UpstreamRef{Name: "b", Weight: proto.Uint32(3)})
	c.UpstreamGroups[0].Balance = &configv1.Balance{Strategy: "least_busy"}
	c.UpstreamGroups[0].HttpClient = &configv1.HttpClient{
		Retry: &configv1.Retry{Attempts: proto.Uint32(2), RetryOn: []string{"502", "timeout"}},
		Proxy: &configv1.OutboundProxy{Url: "socks5://proxy:1080"},
		Tls:   &configv1.ClientTLS{Ca: "/etc/ssl/private-ca.pem"},
	}
	c.UpstreamGroups[0].Concurrency = &configv1.Concurrency{Max: proto.Uint32(4)}
	env := map[string]string{"OPENAI_API_KEY": "sk-1", "ORG": "acme", "B_URL": "http://b.example:8080/v1?x=1", "CERT": "/etc/llmproxy/tls.crt"}
	before := proto.Clone(c)
	m, err := Parse(c, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !proto.Equal(c, before) {
		t.Error("Parse modified its argument")
	}
	if len(m.Forwards) != 1 || len(m.Upstreams) != 2 || len(m.Groups) != 1 {
		t.Fatalf("model sizes: %d forwards, %d upstreams, %d groups", len(m.Forwards), len(m.Upstreams), len(m.Groups))
	}
	f := m.Forwards[0]
	if f.Addr != "127.0.0.1:3000" || f.HeaderTimeout != 10*time.Second || f.MaxBodyBytes != 10<<20 || f.DefaultGroup != 0 {
		t.Errorf("forward = %+v", f)
	}
	if f.TLS == nil || *f.TLS != (ServerTLS{Cert: "/etc/llmproxy/tls.crt", Key: "/etc/llmproxy/tls.key"}) {
		t.Errorf("tls = %+v (cert from the environment)", f.TLS)
	}
	if fmt.Sprint(f.TrustedProxies) != "[10.0.0.0/8 192.0.2.7/32]" {
		t.Errorf("trusted proxies = %v", f.TrustedProxies)
	}
	if rl := f.RateLimit; rl == nil || rl.Header != "X-Api-Key" || rl.Scope != ScopeGlobal || rl.PerSecond != 100 || rl.Burst != 200 {
		t.Errorf("rate limit = %+v", f.RateLimit)
	}
	if r := f.Routes[0]; r.Pattern.String() != "/v1/chat/completions" || r.Model == nil || !r.Model.Match("gpt-4o") || r.Group != 0 {
		t.Errorf("route = %+v", r)
	}
	if m.Admin == nil || m.Admin.Addr != "127.0.0.1:9100" {
		t.Errorf("admin = %+v", m.Admin)
	}
	a, b := m.Upstreams[0], m.Upstreams[1]
	if a.Auth.Type != AuthBearer || a.Auth.Token != "sk-1" || a.URL.Host != "api.openai.com" || a.URL.Path != "/v1" {
		t.Errorf("upstream a = %+v", a)
	}
	if len(a.Headers) != 1 || a.Headers[0] != (HeaderOp{Op: HeaderReplace, Key: "X-Org", Value: "acme"}) {
		t.Errorf("header ops = %+v", a.Headers)
	}
	if a.Breaker != (Breaker{Threshold: 0.5, Cooldown: 30 * time.Second, Window: 10 * time.Second, MinRequests: 5, HalfOpenProbes: 1}) {
		t.Errorf("breaker = %+v", a.Breaker)
	}
	if b.Auth.Type != AuthBasic || b.URL.Host != "b.example:8080" || b.RawURL != "http://b.example:8080/v1?x=1" {
		t.Errorf("upstream b = %+v (url from the environment)", b)
	}
	g := m.Groups[0]
	if g.Strategy != StrategyLeastBusy || len(g.Members) != 2 || g.Members[1] != (Member{Upstream: 1, Weight: 3}) || g.Members[0].Weight != 1 {
		t.Errorf("group = %+v", g)
	}
	if cl := g.Client; cl.Agent != "LLMProxy/1.0" || !cl.Stream || cl.ConnectTimeout != 10*time.Second || cl.RequestTimeout != 300*time.Second ||
		cl.IdleTimeout != 60*time.Second || cl.Keepalive != 60*time.Second || cl.Proxy == nil || cl.Proxy.Host != "proxy:1080" ||
		cl.CA != "/etc/ssl/private-ca.pem" {
		t.Errorf("client = %+v", cl)
	}
	r := g.Retry
	if r == nil || r.Attempts != 2 || r.Initial != 500*time.Millisecond || r.MaxBackoff != 10*time.Second ||
		!r.On.Timeout || r.On.ConnectError || !r.On.Status(502) || r.On.Status(503) || r.On.Status(-1) || r.On.Status(700) {
		t.Errorf("retry = %+v", r)
	}
	if cc := g.Concurrency; cc == nil || cc.Max != 4 || cc.Queue != 0 || cc.QueueTimeout != 30*time.Second {
		t.Errorf("concurrency = %+v", g.Concurrency)
	}
	// The source keeps references (for redaction) and has defaults applied.
	if tok := m.Source.GetUpstreams()[0].GetAuth().GetToken(); tok != "${env:OPENAI_API_KEY}" {
		t.Errorf("source token = %q; want the reference", tok)
	}
	if m.Source.GetHttpServer().GetForwards()[0].MaxBodyBytes == nil {
		t.Error("source has no defaults applied")
	}
}

// TestParseErrors: Parse refuses what Validate refuses, and a value from the environment
// that would be refused if written, each with the field's path.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *configv1.Config)
		env    map[string]string
		want   []string
	}{
		{"invalid", func(c *configv1.Config) { c.HttpServer.Forwards[0].DefaultGroup = "zz" }, map[string]string{"OPENAI_API_KEY": "k"},
			[]string{`http_server.forwards[0].default_group: upstream group "zz" is not defined`}},
		{"unset variable", func(c *configv1.Config) {}, nil,
			[]string{`upstreams[0].auth.token: environment variable OPENAI_API_KEY is not set`}},
		{"bad value from the environment", func(c *configv1.Config) { c.Upstreams[0].Url = "${env:URL}" },
			map[string]string{"OPENAI_API_KEY": "k", "URL": "ftp://x"},
			[]string{`upstreams[0].url: url "ftp://x" must be absolute with scheme http or https`}},
		{"bad strategy from the environment", func(c *configv1.Config) { c.UpstreamGroups[0].Balance = &configv1.Balance{Strategy: "${env:S}"} },
			map[string]string{"OPENAI_API_KEY": "k", "S": "fastest"},
			[]string{`upstream_groups[0].balance.strategy: unknown strategy "fastest" (want roundrobin, weighted_roundrobin, random, response_aware, failover or least_busy)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(c)
			m, err := Parse(c, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if m != nil {
				t.Error("Parse returned a model with an error")
			}
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	if m, err := Parse(nil, nil); err != nil || len(m.Forwards) != 0 || m.Source == nil {
		t.Errorf("Parse(nil) = %+v, %v; want the empty model", m, err)
	}
}

func TestEnumNames(t *testing.T) {
	for _, s := range Strategies() {
		if got, ok := parseEnum[Strategy](strategyNames, s.String()); !ok || got != s {
			t.Errorf("strategy %d: name %q does not parse back", s, s)
		}
	}
	if len(Strategies()) != 6 || Strategies()[0] != defaultStrategy || Strategy(99).String() != "unknown" {
		t.Errorf("Strategies() = %v", Strategies())
	}
}

func TestParseTrustedProxy(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":          "10.0.0.0/8",
		"10.1.2.3/8":          "10.0.0.0/8",
		"192.0.2.7":           "192.0.2.7/32",
		"::ffff:10.0.0.1":     "10.0.0.1/32",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"2001:db8::/32":       "2001:db8::/32",
		"fe80::1%eth0":        "error",
		"10.0.0.0/33":         "error",
		"":                    "error",
	} {
		p, err := ParseTrustedProxy(in)
		got := p.String()
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("ParseTrustedProxy(%q) = %s (%v); want %s", in, got, err, want)
		}
	}
}
