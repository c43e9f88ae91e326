package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

const baseYAML = `
http_server:
  forwards:
    - name: f
      address: 127.0.0.1
      port: 3100
      default_group: g
      routing:
        - {path: /v1/messages, target_group: h, model: "claude-*"}
      ratelimit: {enabled: true, per_second: 5, burst: 2, key: "header:X-Api-Key"}
upstreams:
  - name: a
    url: http://a.example/v1
    auth: {type: bearer, token: "${env:KEY_A}"}
  - name: b
    url: http://b.example
    auth: {type: basic, username: u, password: p}
upstream_groups:
  - name: g
    upstreams: [{name: a}, {name: b, weight: 3}]
    http_client:
      retry: {attempts: 2, retry_on: ["502", connect_error]}
    concurrency: {max: 4, queue: 8}
  - name: h
    upstreams: [{name: b}]
    balance: {strategy: failover}
`

func decode(t *testing.T, y string) *configv1.Config {
	t.Helper()
	c, err := configfile.Decode("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func env(k string) (string, bool) {
	if k == "KEY_A" {
		return "sk-a", true
	}
	return "", false
}

func compile(t *testing.T, reg *Registry, y string) *Runtime {
	t.Helper()
	rt, err := Compile(decode(t, y), reg, Options{Env: env, Revision: "7", Metrics: telemetry.NewMetrics()})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return rt
}

func TestCompile(t *testing.T) {
	reg := NewRegistry(nil, nil)
	defer reg.Close()
	rt := compile(t, reg, baseYAML)
	if rt.Revision != "7" || len(rt.Forwards) != 1 || len(rt.Groups) != 2 {
		t.Fatalf("runtime: revision %q, %d forwards, %d groups", rt.Revision, len(rt.Forwards), len(rt.Groups))
	}
	f := rt.Forward("f")
	if f == nil || f.Addr != "127.0.0.1:3100" || !f.NeedsModel || f.DefaultGroup != 0 {
		t.Fatalf("forward = %+v", f)
	}
	if f.HeaderTimeout != 10*time.Second || f.MaxBodyBytes != 10<<20 {
		t.Errorf("defaults: header timeout %v, max body %d", f.HeaderTimeout, f.MaxBodyBytes)
	}
	if f.RateLimit == nil || f.RateLimit.Header != "X-Api-Key" {
		t.Errorf("rate limit = %+v", f.RateLimit)
	}
	if tgt, pat := f.Router.Match("POST", "/v1/messages", nil, "claude-3"); tgt != 1 || pat != "/v1/messages" {
		t.Errorf("route = %d %q; want group 1", tgt, pat)
	}
	if f.Route("/v1/messages").Pattern() != "/v1/messages" || f.Route("").Pattern() != "default" {
		t.Error("route metrics patterns wrong")
	}
	g := rt.Groups[0]
	a, b := g.Members[0], g.Members[1]
	if a.Auth != "Bearer sk-a" || a.URL.Path != "/v1" || b.Auth != "Basic dTpw" || b.Weight != 3 {
		t.Errorf("members: a %q %q, b %q w%d", a.Auth, a.URL.Path, b.Auth, b.Weight)
	}
	if g.Retry == nil || g.Retry.Attempts != 2 || !g.Retry.ConnectError || g.Retry.Timeout ||
		!g.Retry.RetryStatus(502) || g.Retry.RetryStatus(503) || g.Retry.MaxBackoff != 10*time.Second || g.Retry.Initial != 500*time.Millisecond {
		t.Errorf("retry = %+v", g.Retry)
	}
	if g.Limiter == nil || rt.Groups[1].Limiter != nil || rt.Groups[1].Retry != nil {
		t.Error("concurrency limiter / retry presence wrong")
	}
	if !g.Stream || g.Agent != "LLMProxy/1.0" || g.IdleTimeout != 60*time.Second || g.ConnectTimeout != 10*time.Second {
		t.Errorf("client defaults: %+v", g)
	}
	if rt.Groups[1].Members[0].Breaker != b.Breaker {
		t.Error("one upstream in two groups must have one breaker")
	}
	if g.Transport != rt.Groups[1].Transport {
		t.Error("groups with the same client settings should share a transport")
	}
	// The source keeps env references (for redaction) and has defaults applied.
	if tok := rt.Source.GetUpstreams()[0].GetAuth().GetToken(); tok != "${env:KEY_A}" {
		t.Errorf("source token = %q; want the reference", tok)
	}
	if rt.Source.GetHttpServer().GetForwards()[0].MaxBodyBytes == nil {
		t.Error("source has no defaults applied")
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, yaml, wantPath string
		kind                 error
	}{
		{"missing env", strings.Replace(baseYAML, "KEY_A", "NOPE", 1), "upstreams[0].auth.token", validate.ErrInvalid},
		{"invalid", strings.Replace(baseYAML, "default_group: g", "default_group: zz", 1), "http_server.forwards[0].default_group", validate.ErrReference},
		{"forward certificate missing on this proxy", strings.Replace(baseYAML, "      default_group: g\n",
			"      default_group: g\n      tls: {cert: /nonexistent/fwd.crt, key: /nonexistent/fwd.key}\n", 1), "http_server.forwards[0].tls", validate.ErrInvalid},
		{"upstream CA missing on this proxy", strings.Replace(baseYAML, "      retry:", "      tls: {ca: /nonexistent/ca.pem}\n      retry:", 1),
			"upstream_groups[0].http_client.tls.ca", validate.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(decode(t, tt.yaml), NewRegistry(nil, nil), Options{Env: env})
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %v is not %v", err, tt.kind)
			}
			found := false
			for _, fe := range validate.Errors(err) {
				found = found || fe.Path == tt.wantPath
			}
			if !found {
				t.Errorf("error %q does not name %s", err, tt.wantPath)
			}
			if tt.kind == validate.ErrNotSupported && !strings.Contains(err.Error(), "not supported yet") {
				t.Errorf("error %q; want it to say not supported yet", err)
			}
		})
	}
}

// openBreaker fails calls through b until it opens.
func openBreaker(t *testing.T, b *breaker.Breaker) {
	t.Helper()
	for range 10 {
		if done, ok := b.Allow(); ok {
			done(false)
		}
	}
	if b.State() != breaker.Open {
		t.Fatalf("breaker state %v; want open", b.State())
	}
}

func TestRegistryKeepsStateAcrossCompiles(t *testing.T) {
	reg := NewRegistry(telemetry.NewMetrics(), nil)
	defer reg.Close()
	rt1 := compile(t, reg, baseYAML)
	reg.Commit(rt1)
	a1, b1 := rt1.Groups[0].Members[0], rt1.Groups[0].Members[1]
	openBreaker(t, a1.Breaker)
	// Same a, changed b (URL), changed group client settings.
	y2 := strings.Replace(baseYAML, "http://b.example", "http://b2.example", 1)
	y2 = strings.Replace(y2, "concurrency: {max: 4, queue: 8}", "concurrency: {max: 4, queue: 8}\n    http_client: {keepalive: 30, retry: {attempts: 2}}", 1)
	y2 = strings.Replace(y2, "    http_client:\n      retry: {attempts: 2, retry_on: [\"502\", connect_error]}\n", "", 1)
	rt2 := compile(t, reg, y2)
	a2, b2 := rt2.Groups[0].Members[0], rt2.Groups[0].Members[1]
	if a2.Breaker != a1.Breaker || a2.Stats != a1.Stats || a2.Breaker.State() != breaker.Open {
		t.Error("unchanged upstream lost its breaker state")
	}
	if b2.Breaker == b1.Breaker {
		t.Error("changed upstream kept its old breaker")
	}
	if rt2.Groups[0].Transport == rt1.Groups[0].Transport {
		t.Error("changed client settings kept the old transport")
	}
	if rt2.Groups[1].Transport != rt1.Groups[1].Transport {
		t.Error("unchanged client settings lost their transport")
	}
	if rt2.Groups[0].Limiter != rt1.Groups[0].Limiter {
		t.Error("unchanged concurrency settings lost their limiter")
	}
	if rt2.Forwards[0].RateLimit.Limiter != rt1.Forwards[0].RateLimit.Limiter {
		t.Error("unchanged rate limit lost its limiter")
	}
	reg.Commit(rt2)
	reg.mu.Lock()
	nUp, nTr := len(reg.st.upstreams), len(reg.st.transports)
	reg.mu.Unlock()
	// b's URL changed in both groups: only a and the new b remain.
	want := map[string]bool{"a": true, "b": true}
	reg.mu.Lock()
	for k := range reg.st.upstreams {
		if !want[k.name] || (k.name == "b" && k.url != "http://b2.example") {
			t.Errorf("registry kept %s %s after prune", k.name, k.url)
		}
	}
	reg.mu.Unlock()
	if nUp != 2 || nTr != 2 {
		t.Errorf("after prune: %d upstream entries, %d transports; want 2 and 2", nUp, nTr)
	}
}

func TestHolder(t *testing.T) {
	var h Holder
	if h.Load() != nil {
		t.Fatal("zero Holder not empty")
	}
	ch, cancel := h.Subscribe()
	defer cancel()
	m := telemetry.NewMetrics()
	rt1 := &Runtime{Revision: "41", Metrics: m}
	rt2 := &Runtime{Revision: "42", Metrics: m}
	h.Store(rt1)
	if old := h.Store(rt2); old != rt1 {
		t.Error("Store did not return the previous runtime")
	}
	select {
	case <-ch:
	default:
		t.Fatal("no notification after Store")
	}
	if h.Load() != rt2 {
		t.Error("Load is not the latest")
	}
	var got float64
	if mm, err := m.Registry.Gather(); err == nil {
		for _, f := range mm {
			if f.GetName() == "llmproxy_config_version" {
				got = f.GetMetric()[0].GetGauge().GetValue()
			}
		}
	}
	if got != 42 {
		t.Errorf("llmproxy_config_version = %v; want 42", got)
	}
}
