package configfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// TestLoadExamples loads a reproduction of every configuration example of LLMProxy's README
// (and one with all our extensions) and checks what they mean.
func TestLoadExamples(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, c *configv1.Config)
	}{
		{"quickstart.yaml", func(t *testing.T, c *configv1.Config) {
			f := c.HttpServer.Forwards[0]
			eq(t, "forward", f.Name, "llm_openai_service")
			eq(t, "port", f.GetPort(), uint32(3000))
			eq(t, "default_group", f.DefaultGroup, "openai_main_group")
			eq(t, "admin address", c.HttpServer.Admin.GetAddress(), "127.0.0.1")
			u := c.Upstreams[0]
			eq(t, "auth type", u.Auth.Type, "bearer")
			eq(t, "token", u.Auth.Token, "YOUR_OPENAI_API_KEY_HERE")
			g := c.UpstreamGroups[0]
			eq(t, "request timeout", g.HttpClient.Timeout.GetRequest(), uint32(300))
			// Defaults.
			eq(t, "stream default", g.HttpClient.GetStream(), true)
			eq(t, "strategy default", g.Balance.Strategy, "roundrobin")
			eq(t, "weight default", g.Upstreams[0].GetWeight(), uint32(1))
			eq(t, "breaker default", u.Breaker.GetThreshold(), 0.5)
			eq(t, "connect default", f.Timeout.GetConnect(), uint32(10))
			eq(t, "max body default", f.GetMaxBodyBytes(), uint32(10<<20))
			eq(t, "no ratelimit", f.Ratelimit == nil, true)
			eq(t, "no retry", g.HttpClient.Retry == nil, true)
		}},
		{"http_server.yaml", func(t *testing.T, c *configv1.Config) {
			f := c.HttpServer.Forwards[0]
			eq(t, "routes", len(f.Routing), 3)
			eq(t, "route 2", f.Routing[2].Path, "/api/items/{id:[0-9]+}")
			eq(t, "route 2 target", f.Routing[2].TargetGroup, "item_api_group")
			eq(t, "ratelimit", f.Ratelimit.GetEnabled(), true)
			eq(t, "per_second", f.Ratelimit.GetPerSecond(), uint32(100))
			eq(t, "burst", f.Ratelimit.GetBurst(), uint32(200))
			eq(t, "key default", f.Ratelimit.Key, "ip")
			eq(t, "scope default", f.Ratelimit.Scope, "local")
			eq(t, "admin timeout", c.HttpServer.Admin.Timeout.GetConnect(), uint32(10))
		}},
		{"routing.yaml", func(t *testing.T, c *configv1.Config) {
			eq(t, "routes", len(c.HttpServer.Forwards[0].Routing), 14)
			eq(t, "groups", len(c.UpstreamGroups), 15)
		}},
		{"upstreams.yaml", func(t *testing.T, c *configv1.Config) {
			a := c.Upstreams[1]
			eq(t, "headers", len(a.Headers), 2)
			eq(t, "header key", a.Headers[0].Key, "anthropic-version")
			eq(t, "header value", a.Headers[0].Value, "2023-06-01")
			eq(t, "threshold", a.Breaker.GetThreshold(), 0.4)
			eq(t, "cooldown", a.Breaker.GetCooldown(), uint32(45))
			eq(t, "window default", a.Breaker.Window, "10s")
			b := c.Upstreams[2]
			eq(t, "basic", b.Auth.Type, "basic")
			eq(t, "username", b.Auth.Username, "user")
			eq(t, "remove op", b.Headers[1].Op, "remove")
			g := c.UpstreamGroups[0]
			eq(t, "strategy", g.Balance.Strategy, "weighted_roundrobin")
			eq(t, "weight", g.Upstreams[0].GetWeight(), uint32(8))
			eq(t, "agent", g.HttpClient.GetAgent(), "LLMProxy/1.0 (OpenAI-Group)")
			eq(t, "keepalive", g.HttpClient.GetKeepalive(), uint32(90))
			eq(t, "idle", g.HttpClient.Timeout.GetIdle(), uint32(90))
			eq(t, "attempts", g.HttpClient.Retry.GetAttempts(), uint32(3))
			eq(t, "initial", g.HttpClient.Retry.GetInitial(), uint32(1000))
			eq(t, "retry_on default", strings.Join(g.HttpClient.Retry.RetryOn, ","), "connect_error,timeout,429,502,503,504")
			eq(t, "proxy", g.HttpClient.Proxy.Url, "http://user:pass@your-proxy-server.com:8080")
			// stream_mode is an alias of stream.
			eq(t, "stream_mode", c.UpstreamGroups[1].HttpClient.GetStream(), false)
		}},
		{"multitenant.yaml", func(t *testing.T, c *configv1.Config) {
			eq(t, "forwards", len(c.HttpServer.Forwards), 2)
			eq(t, "b per_second", c.HttpServer.Forwards[1].Ratelimit.GetPerSecond(), uint32(20))
			eq(t, "b strategy", c.UpstreamGroups[1].Balance.Strategy, "failover")
			eq(t, "b members", len(c.UpstreamGroups[1].Upstreams), 2)
		}},
		{"response_aware.yaml", func(t *testing.T, c *configv1.Config) {
			eq(t, "strategy", c.UpstreamGroups[0].Balance.Strategy, "response_aware")
			eq(t, "threshold", c.Upstreams[4].Breaker.GetThreshold(), 0.3)
			eq(t, "auth default", c.Upstreams[1].Auth.Type, "none")
		}},
		{"consumers.yaml", func(t *testing.T, c *configv1.Config) {
			eq(t, "client_auth", c.HttpServer.Forwards[0].ClientAuth, "required")
			cs := c.Consumers[0]
			eq(t, "name", cs.Name, "team-search")
			eq(t, "keys", len(cs.Keys), 2)
			eq(t, "timestamp-looking expires_at", cs.Keys[0].ExpiresAt, "2030-01-31T00:00:00Z")
			eq(t, "disabled", cs.Keys[1].GetDisabled(), true)
			eq(t, "disabled default", cs.Keys[0].GetDisabled(), false)
			eq(t, "models", strings.Join(cs.Models, ","), "gpt-4o*,o3-mini")
			eq(t, "rpm", cs.Limits.GetRequestsPerMinute(), uint32(600))
			eq(t, "tpd", cs.Limits.GetTokensPerDay(), uint64(5000000))
			eq(t, "budget", cs.Limits.Budget.Usd, 250.5)
			eq(t, "label", cs.Labels["cost_center"], "cc-42")
			eq(t, "pricing order", c.Pricing[1].Model, "gpt-4o*")
			eq(t, "integer price", c.Pricing[1].OutputPerMillion, 10.0)
		}},
		{"extensions.yaml", func(t *testing.T, c *configv1.Config) {
			f := c.HttpServer.Forwards[0]
			eq(t, "max_body_bytes", f.GetMaxBodyBytes(), uint32(2<<20))
			eq(t, "model", f.Routing[0].Model, "claude-*")
			eq(t, "methods", strings.Join(f.Routing[2].Methods, ","), "POST,GET")
			eq(t, "headers", f.Routing[2].Headers["X-Tenant"], "research")
			eq(t, "key", f.Ratelimit.Key, "header:X-Api-Key")
			eq(t, "scope", f.Ratelimit.Scope, "global")
			eq(t, "env token", c.Upstreams[0].Auth.Token, "${env:OPENAI_API_KEY}")
			eq(t, "window", c.Upstreams[0].Breaker.Window, "30s")
			eq(t, "probes", c.Upstreams[0].Breaker.GetHalfOpenProbes(), uint32(2))
			eq(t, "timestamp-looking value", c.Upstreams[1].Headers[1].Value, "2023-06-01")
			g := c.UpstreamGroups[0]
			eq(t, "retry_on", strings.Join(g.HttpClient.Retry.RetryOn, ","), "connect_error,timeout,429,502,503")
			eq(t, "max_backoff", g.HttpClient.Retry.MaxBackoff, "2s")
			eq(t, "concurrency", g.Concurrency.GetMax(), uint32(64))
			eq(t, "drop_excess", g.Concurrency.GetDropExcess(), true)
			eq(t, "cache backend", g.Cache.Backend, "redis")
			eq(t, "cache shared", g.Cache.GetShared(), true)
			cc := c.UpstreamGroups[1].Concurrency
			eq(t, "queue default", cc.GetQueue(), uint32(0))
			eq(t, "queue_timeout default", cc.QueueTimeout, "30s")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			c, err := load(tt.file, data)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// load is Parse then Validate.
func load(name string, data []byte) (*configv1.Config, error) {
	f, err := Parse(name, data)
	if err != nil {
		return nil, err
	}
	return f.Validate()
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %v; want %v", what, got, want)
	}
}

// errLines splits a joined error into its lines.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// checkLines compares every error line with want, exactly and in order.
func checkLines(t *testing.T, err error, want []string) {
	t.Helper()
	got := errLines(err)
	if len(got) != len(want) {
		t.Errorf("got %d errors; want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
		return
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("error %d:\n got  %s\n want %s", i, got[i], want[i])
		}
	}
}

// base is a valid configuration the invalid cases below break one way each.
const base = `
http_server:
  forwards:
    - name: main
      default_group: g
upstreams:
  - name: a
    url: https://api.openai.com/v1
upstream_groups:
  - name: g
    upstreams:
      - name: a
`

func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"duplicate upstream", `
upstreams:
  - name: a
    url: https://a.example
  - name: a
    url: https://b.example
`, []string{`config.yaml:5:11: upstreams[1].name: upstream "a" is already defined at upstreams[0]`}},
		{"duplicate group and forward", `
http_server:
  forwards:
    - {name: f, port: 3001, default_group: g}
    - {name: f, port: 3002, default_group: g}
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups:
  - {name: g, upstreams: [{name: a}]}
  - {name: g, upstreams: [{name: a}]}
`, []string{
			`config.yaml:5:14: http_server.forwards[1].name: forward "f" is already defined at http_server.forwards[0]`,
			`config.yaml:9:12: upstream_groups[1].name: upstream group "g" is already defined at upstream_groups[0]`,
		}},
		{"dangling references", `
http_server:
  forwards:
    - name: main
      default_group: nope
      routing:
        - path: /v1/x
          target_group: missing
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups:
  - name: g
    upstreams:
      - name: a
      - name: x
`, []string{
			`config.yaml:5:22: http_server.forwards[0].default_group: upstream group "nope" is not defined`,
			`config.yaml:8:25: http_server.forwards[0].routing[0].target_group: upstream group "missing" is not defined`,
			`config.yaml:14:15: upstream_groups[0].upstreams[1].name: upstream "x" is not defined`,
		}},
		{"bearer without token", `
upstreams:
  - name: a
    url: https://a.example
    auth:
      type: bearer
`, []string{`config.yaml:6:7: upstreams[0].auth.token: token is required for bearer auth`}},
		{"basic without username", `
upstreams:
  - name: a
    url: https://a.example
    auth: {type: basic, password: x}
`, []string{`config.yaml:5:11: upstreams[0].auth.username: username is required for basic auth`}},
		{"unknown auth type", `
upstreams:
  - name: a
    url: https://a.example
    auth: {type: Bearer, token: x}
`, []string{`config.yaml:5:18: upstreams[0].auth.type: unknown auth type "Bearer" (want none, bearer or basic)`}},
		{"threshold out of range", `
upstreams:
  - name: a
    url: https://a.example
    breaker: {threshold: 1.5, cooldown: 0}
`, []string{
			`config.yaml:5:26: upstreams[0].breaker.threshold: threshold 1.5 is out of range 0.01-1.0`,
			`config.yaml:5:41: upstreams[0].breaker.cooldown: 0 is out of range 1-3600`,
		}},
		{"weight 0", base + `        weight: 0
`, []string{`config.yaml:13:17: upstream_groups[0].upstreams[0].weight: 0 is out of range 1-65535`}},
		{"duplicate route path", `
http_server:
  forwards:
    - name: main
      default_group: g
      routing:
        - {path: /v1/chat/completions, target_group: g}
        - {path: /v1/chat/completions, target_group: g, model: "gpt-*"}
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups: [{name: g, upstreams: [{name: a}]}]
`, []string{`config.yaml:8:18: http_server.forwards[0].routing[1].path: duplicate route path "/v1/chat/completions" (first at http_server.forwards[0].routing[0])`}},
		{"bad route pattern and glob", `
http_server:
  forwards:
    - name: main
      default_group: g
      routing:
        - {path: "/api/{id:[0-9+}", target_group: g}
        - {path: v1/x, target_group: g}
        - {path: /v1/y, target_group: g, model: "gpt-[", methods: ["PO ST"]}
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups: [{name: g, upstreams: [{name: a}]}]
`, []string{
			`config.yaml:7:18: http_server.forwards[0].routing[0].path: ` + patternErr(t, "/api/{id:[0-9+}"),
			`config.yaml:8:18: http_server.forwards[0].routing[1].path: ` + patternErr(t, "v1/x"),
			`config.yaml:9:49: http_server.forwards[0].routing[2].model: invalid model glob "gpt-[": syntax error in pattern`,
			`config.yaml:9:68: http_server.forwards[0].routing[2].methods[0]: "PO ST" is not a valid HTTP method`,
		}},
		{"bad duration", `
upstreams:
  - name: a
    url: https://a.example
    breaker: {window: 10}
  - name: b
    url: https://b.example
    breaker: {window: "-1s"}
`, []string{
			`config.yaml:5:23: upstreams[0].breaker.window: invalid duration "10" (want a number with a unit, e.g. "500ms", "10s")`,
			`config.yaml:8:23: upstreams[1].breaker.window: duration "-1s" must be positive`,
		}},
		{"bad retry_on", `
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups:
  - name: g
    upstreams: [{name: a}]
    http_client:
      retry:
        retry_on: [502, 42, "connect-error", 502]
`, []string{
			`config.yaml:8:25: upstream_groups[0].http_client.retry.retry_on[1]: "42" is neither an HTTP status 100-599 nor one of connect_error, reset or timeout`,
			`config.yaml:8:29: upstream_groups[0].http_client.retry.retry_on[2]: "connect-error" is neither an HTTP status 100-599 nor one of connect_error, reset or timeout`,
			`config.yaml:8:46: upstream_groups[0].http_client.retry.retry_on[3]: "502" is already listed at upstream_groups[0].http_client.retry.retry_on[0]`,
		}},
		{"bad strategy", `
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups:
  - name: g
    upstreams: [{name: a}]
    balance: {strategy: round_robin}
`, []string{`config.yaml:6:25: upstream_groups[0].balance.strategy: unknown strategy "round_robin" (want roundrobin, weighted_roundrobin, random, response_aware, failover or least_busy)`}},
		{"bad env name", `
upstreams:
  - name: a
    url: https://a.example
    auth: {type: bearer, token: "${env:1KEY}"}
    headers:
      - {op: insert, key: x-api-key, value: "${env:}"}
`, []string{
			`config.yaml:5:33: upstreams[0].auth.token: "1KEY" is not a valid environment variable name (letters, digits and _, not starting with a digit)`,
			`config.yaml:7:45: upstreams[0].headers[0].value: "" is not a valid environment variable name (letters, digits and _, not starting with a digit)`,
		}},
		{"header ops", `
upstreams:
  - name: a
    url: https://a.example
    headers:
      - {op: add, key: x}
      - {op: insert, key: "bad key", value: v}
      - {op: replace, key: x-b}
`, []string{
			`config.yaml:6:14: upstreams[0].headers[0].op: unknown header op "add" (want insert, replace or remove)`,
			`config.yaml:7:27: upstreams[0].headers[1].key: "bad key" is not a valid header name`,
			`config.yaml:8:9: upstreams[0].headers[2].value: value is required for replace`,
		}},
		{"urls", `
upstreams:
  - {name: a, url: "api.openai.com/v1"}
  - {name: b, url: "ftp://x.example"}
  - {name: c, url: "https://"}
  - {name: d}
upstream_groups:
  - name: g
    upstreams: [{name: a}]
    http_client:
      proxy: {url: "http://user:secret@:8080"}
`, []string{
			`config.yaml:3:20: upstreams[0].url: url "api.openai.com/v1" must be absolute with scheme http or https`,
			`config.yaml:4:20: upstreams[1].url: url "ftp://x.example" must be absolute with scheme http or https`,
			`config.yaml:5:20: upstreams[2].url: url "https://" has no host`,
			`config.yaml:6:5: upstreams[3].url: url is required`,
			`config.yaml:11:20: upstream_groups[0].http_client.proxy.url: proxy url "http://user:xxxxx@:8080" has no host`,
		}},
		{"ranges", `
http_server:
  forwards:
    - name: main
      port: 0
      default_group: g
      ratelimit: {per_second: 10001, burst: 0, key: cookie, scope: cluster}
      timeout: {connect: 0}
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups:
  - name: g
    upstreams: [{name: a}]
    http_client:
      keepalive: 0
      timeout: {connect: 121, request: 1201, idle: 4}
      retry: {attempts: 0, initial: 99}
    concurrency: {queue: 5}
    cache: {backend: disk, ttl: 5}
`, []string{
			`config.yaml:5:13: http_server.forwards[0].port: 0 is out of range 1-65535`,
			`config.yaml:7:31: http_server.forwards[0].ratelimit.per_second: 10001 is out of range 1-10000`,
			`config.yaml:7:45: http_server.forwards[0].ratelimit.burst: 0 is out of range 1-20000`,
			`config.yaml:7:53: http_server.forwards[0].ratelimit.key: unknown rate limit key "cookie" (want ip or header:NAME)`,
			`config.yaml:7:68: http_server.forwards[0].ratelimit.scope: unknown scope "cluster" (want local or global)`,
			`config.yaml:8:26: http_server.forwards[0].timeout.connect: 0 is out of range 1-3600`,
			`config.yaml:14:18: upstream_groups[0].http_client.keepalive: 0 is out of range 5-600`,
			`config.yaml:15:26: upstream_groups[0].http_client.timeout.connect: 121 is out of range 1-120`,
			`config.yaml:15:40: upstream_groups[0].http_client.timeout.request: 1201 is out of range 1-1200`,
			`config.yaml:15:52: upstream_groups[0].http_client.timeout.idle: 4 is out of range 5-1800`,
			`config.yaml:16:25: upstream_groups[0].http_client.retry.attempts: 0 is out of range 1-100`,
			`config.yaml:16:37: upstream_groups[0].http_client.retry.initial: 99 is out of range 100-10000`,
			`config.yaml:17:18: upstream_groups[0].concurrency.max: max is required when concurrency is set`,
			`config.yaml:18:22: upstream_groups[0].cache.backend: unknown cache backend "disk" (want memory or redis)`,
			`config.yaml:18:33: upstream_groups[0].cache.ttl: invalid duration "5" (want a number with a unit, e.g. "500ms", "10s")`,
		}},
		{"listener conflict", `
http_server:
  forwards:
    - {name: a, port: 3000, default_group: g}
    - {name: b, port: 3000, address: 127.0.0.1, default_group: g}
    - {name: c, port: 9000, default_group: g}
  admin: {port: 9000}
upstreams: [{name: a, url: "http://a:1"}]
upstream_groups: [{name: g, upstreams: [{name: a}]}]
`, []string{
			`config.yaml:5:23: http_server.forwards[1].port: address 127.0.0.1:3000 conflicts with forward "a" on 0.0.0.0:3000`,
			`config.yaml:7:17: http_server.admin.port: address 127.0.0.1:9000 conflicts with forward "c" on 0.0.0.0:9000`,
		}},
		{"group without members", `
upstream_groups:
  - name: g
`, []string{`config.yaml:3:5: upstream_groups[0].upstreams: at least one upstream is required`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load("config.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("load succeeded; want %d errors", len(tt.want))
			}
			if c != nil {
				t.Errorf("config returned with an error")
			}
			checkLines(t, err, tt.want)
			for _, fe := range validate.Errors(err) {
				if fe.Path == "" || !errors.Is(err, fe.Kind) {
					t.Errorf("field error %v: empty path or kind not found by errors.Is", fe)
				}
			}
		})
	}
}

func patternErr(t *testing.T, p string) string {
	t.Helper()
	_, err := route.ParsePattern(p)
	if err == nil {
		t.Fatalf("pattern %q accepted", p)
	}
	return err.Error()
}

// TestLoadKinds checks the Kind of each error class, as the admin API maps them to statuses.
func TestLoadKinds(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		kind error
	}{
		{"duplicate", base + "  - name: g\n    upstreams: [{name: a}]\n", validate.ErrDuplicate},
		{"reference", strings.Replace(base, "default_group: g", "default_group: h", 1), validate.ErrReference},
		{"invalid", strings.Replace(base, "https://api", "ftp://api", 1), validate.ErrInvalid},
		{"decode", base + "foo: 1\n", validate.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load("config.yaml", []byte(tt.yaml))
			if !errors.Is(err, tt.kind) {
				t.Fatalf("got %v; want kind %v", err, tt.kind)
			}
		})
	}
}

// TestLoadEveryError checks that validation reports all faults in one call.
func TestLoadEveryError(t *testing.T) {
	const five = `
http_server:
  forwards:
    - name: main
      default_group: nope
upstreams:
  - name: a
    url: https://api.openai.com/v1
    auth: {type: bearer}
    breaker: {threshold: 0}
  - name: a
    url: https://api.openai.com/v1
upstream_groups:
  - name: g
    upstreams: [{name: a, weight: 0}]
`
	_, err := load("config.yaml", []byte(five))
	fes := validate.Errors(err)
	if len(fes) != 5 {
		t.Fatalf("got %d errors; want 5:\n%v", len(fes), err)
	}
	wantPaths := []string{
		"http_server.forwards[0].default_group",
		"upstreams[0].auth.token",
		"upstreams[0].breaker.threshold",
		"upstreams[1].name",
		"upstream_groups[0].upstreams[0].weight",
	}
	for i, fe := range fes {
		if fe.Path != wantPaths[i] {
			t.Errorf("error %d: path %q; want %q", i, fe.Path, wantPaths[i])
		}
	}
}

// TestParseStdin checks that a file read from standard input keeps its positions.
func TestParseStdin(t *testing.T) {
	_, err := load("<stdin>", []byte(strings.Replace(base, "default_group: g", "default_group: h", 1)))
	want := `<stdin>:5:22: http_server.forwards[0].default_group: upstream group "h" is not defined`
	if err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
}

// TestLocate checks that errors found after decoding (a proxy's compile step, a control
// plane's answer) point into the file, and that paths not in it get the file name only.
func TestLocate(t *testing.T) {
	f, err := Parse("config.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	err = f.Locate(errors.Join(
		&validate.FieldError{Path: "upstreams[0].url", Kind: validate.ErrInvalid, Msg: "bad"},
		&validate.FieldError{Path: "upstreams[0].auth.token", Kind: validate.ErrInvalid, Msg: "missing"},
		&validate.FieldError{Path: "pricing", Kind: validate.ErrNotSupported, Msg: "no"},
		errors.New("plain"),
	))
	checkLines(t, err, []string{
		"config.yaml:8:10: upstreams[0].url: bad",
		"config.yaml:7:5: upstreams[0].auth.token: missing",
		"config.yaml: pricing: no",
		"config.yaml: plain",
	})
	if !errors.Is(err, validate.ErrNotSupported) {
		t.Error("located errors lost their kind")
	}
	if f.Locate(nil) != nil {
		t.Error("Locate(nil) is not nil")
	}
}

// TestTooLarge: a file over MaxFileBytes is refused with its size, before it is read or
// parsed.
func TestTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, []byte("upstreams:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 100<<20); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s: file is too large: 104857600 bytes, over the limit of %d bytes (16 MiB) for a configuration", p, MaxFileBytes)
	if _, err := ReadFile(p); err == nil || err.Error() != want {
		t.Errorf("ReadFile: %v; want %s", err, want)
	}
	_, err := Parse("<stdin>", make([]byte, MaxFileBytes+1))
	if err == nil || !strings.Contains(err.Error(), "<stdin>: file is too large: 16777217 bytes") || !errors.Is(err, validate.ErrInvalid) {
		t.Errorf("Parse: %v", err)
	}
}
