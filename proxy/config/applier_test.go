package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// registryContents is a copy of what a registry holds, to compare before and after.
type registryContents struct {
	upstreams    map[upstreamKey]*upstreamState
	transports   int
	limiters     int
	rateLimiters map[rateKey]*rateState
}

func contents(r *Registry) registryContents {
	r.mu.Lock()
	defer r.mu.Unlock()
	return registryContents{
		upstreams:    maps.Clone(r.st.upstreams),
		transports:   len(r.st.transports),
		limiters:     len(r.st.limiters),
		rateLimiters: maps.Clone(r.st.rateLimiters),
	}
}

func (c registryContents) equal(d registryContents) bool {
	return maps.Equal(c.upstreams, d.upstreams) && c.transports == d.transports &&
		c.limiters == d.limiters && maps.Equal(c.rateLimiters, d.rateLimiters)
}

func (c registryContents) upstreamNames() string {
	var names []string
	for k := range c.upstreams {
		names = append(names, k.name+"="+k.url)
	}
	return fmt.Sprint(names)
}

// testApplier returns an Applier storing in a fresh Holder, whose install fails while
// *failInstall is true.
func testApplier(t *testing.T, failInstall *bool) (*Applier, *Holder, *Registry) {
	t.Helper()
	m := telemetry.NewMetrics()
	reg := NewRegistry(m, nil)
	t.Cleanup(reg.Close)
	h := &Holder{}
	install := func(rt *Runtime) error {
		if failInstall != nil && *failInstall {
			return errors.New("listen tcp 127.0.0.1:3100: address already in use")
		}
		h.Store(rt)
		return nil
	}
	return NewApplier(h, reg, install, Options{Env: env, Metrics: m}), h, reg
}

func TestBuildRegistersNothing(t *testing.T) {
	reg := NewRegistry(nil, nil)
	defer reg.Close()
	m, err := validate.Parse(decode(t, baseYAML), env)
	if err != nil {
		t.Fatal(err)
	}
	rt := Build(m, reg, Options{})
	if c := contents(reg); len(c.upstreams) != 0 || c.transports != 0 || c.limiters != 0 || len(c.rateLimiters) != 0 {
		t.Fatalf("Build registered state: %+v", c)
	}
	reg.Commit(rt)
	if c := contents(reg); len(c.upstreams) != 2 || c.transports != 1 || c.limiters != 1 || len(c.rateLimiters) != 1 {
		t.Fatalf("after Commit: %+v; want 2 upstreams, 1 transport, 1 limiter, 1 rate limiter", c)
	}
	again := Build(m, reg, Options{})
	if again.Groups[0].Members[0].Breaker != rt.Groups[0].Members[0].Breaker || again.Groups[0].Transport != rt.Groups[0].Transport {
		t.Error("a second Build of the same model does not share the committed state")
	}
}

func TestApplierRefusesWithoutTouchingState(t *testing.T) {
	failInstall := false
	a, h, reg := testApplier(t, &failInstall)
	if err := a.Apply("1", decode(t, baseYAML)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	running, before := h.Load(), contents(reg)
	if running == nil || running.Revision != "1" {
		t.Fatalf("holder = %v; want revision 1", running)
	}

	// An invalid configuration, a configuration whose install fails, and one that adds an
	// upstream and a group but fails to install: none changes the holder or the registry.
	invalid := strings.Replace(baseYAML, "default_group: g", "default_group: zz", 1)
	err := a.Apply("2", decode(t, invalid))
	if fes := validate.Errors(err); len(fes) != 1 || fes[0].Path != "http_server.forwards[0].default_group" {
		t.Errorf("Apply(invalid) = %v; want the field error", err)
	}
	// A certificate or CA file this proxy cannot read: refused with the field's path.
	missing := strings.Replace(baseYAML, "      default_group: g\n", "      default_group: g\n      tls: {cert: /nonexistent/c.crt, key: /nonexistent/c.key}\n", 1)
	missing = strings.Replace(missing, "      retry:", "      tls: {ca: /nonexistent/ca.pem}\n      retry:", 1)
	err = a.Apply("2", decode(t, missing))
	if fes := validate.Errors(err); len(fes) != 2 || fes[0].Path != "http_server.forwards[0].tls" || fes[1].Path != "upstream_groups[0].http_client.tls.ca" {
		t.Errorf("Apply(missing files) = %v; want both field errors", err)
	}
	failInstall = true
	// grown adds group i over a new upstream c.
	grown := baseYAML + "  - name: i\n    upstreams: [{name: c}]\n"
	grown = strings.Replace(grown, "upstream_groups:", "  - name: c\n    url: http://c.example\nupstream_groups:", 1)
	if err := a.Apply("3", decode(t, grown)); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Apply with a failing install = %v", err)
	}
	if h.Load() != running {
		t.Error("a refused configuration replaced the running runtime")
	}
	if after := contents(reg); !after.equal(before) {
		t.Errorf("a refused configuration changed the registry: %s; was %s", after.upstreamNames(), before.upstreamNames())
	}
	if got := breakerGauges(t, a.opts.Metrics); got != "a=0 b=0" {
		t.Errorf("breaker state gauges %q after a refused configuration; want a=0 b=0", got)
	}
	// The revision that failed to install is applied once the install works.
	failInstall = false
	if err := a.Apply("3", decode(t, grown)); err != nil || h.Load().Revision != "3" {
		t.Fatalf("Apply after the install recovered: %v, revision %q", err, h.Load().Revision)
	}
	if n := len(contents(reg).upstreams); n != 3 {
		t.Errorf("registry holds %d upstreams; want 3", n)
	}
}

func TestApplierSwapKeepsBreakersAndPrunes(t *testing.T) {
	a, h, reg := testApplier(t, nil)
	if err := a.Apply("1", decode(t, baseYAML)); err != nil {
		t.Fatal(err)
	}
	rt1 := h.Load()
	upA, upB := rt1.Groups[0].Members[0], rt1.Groups[0].Members[1]
	openBreaker(t, upA.Breaker)

	// Group h and the rate limit go; upstream b moves to another URL; a is unchanged.
	y := strings.Replace(baseYAML, "http://b.example", "http://b2.example", 1)
	y = strings.Replace(y, "        - {path: /v1/messages, target_group: h, model: \"claude-*\"}\n", "", 1)
	y = strings.Replace(y, "      ratelimit: {enabled: true, per_second: 5, burst: 2, key: \"header:X-Api-Key\"}\n", "", 1)
	y = y[:strings.Index(y, "  - name: h\n")]
	y = strings.Replace(y, "      routing:\n", "", 1)
	if err := a.Apply("2", decode(t, y)); err != nil {
		t.Fatal(err)
	}
	rt2 := h.Load()
	if rt2 == rt1 || rt2.Revision != "2" || len(rt2.Groups) != 1 {
		t.Fatalf("holder = revision %q with %d groups; want revision 2 with 1", rt2.Revision, len(rt2.Groups))
	}
	if a2 := rt2.Groups[0].Members[0]; a2.Breaker != upA.Breaker || a2.Breaker.State() != breaker.Open {
		t.Error("the unchanged upstream lost its breaker across the swap")
	}
	if rt2.Groups[0].Members[1].Breaker == upB.Breaker {
		t.Error("the moved upstream kept its old breaker")
	}
	c := contents(reg)
	if len(c.upstreams) != 2 || len(c.rateLimiters) != 0 || c.limiters != 1 {
		t.Errorf("after the swap the registry holds %s, %d rate limiters, %d limiters; want a and the new b, none, 1",
			c.upstreamNames(), len(c.rateLimiters), c.limiters)
	}
	for k := range c.upstreams {
		if k.name == "b" && k.url != "http://b2.example" {
			t.Errorf("registry kept b at %s", k.url)
		}
	}
	if got := breakerGauges(t, a.opts.Metrics); got != "a=1 b=0" {
		t.Errorf("breaker state gauges %q; want a=1 (open) b=0", got)
	}

	// The same revision again is not rebuilt.
	if err := a.Apply("2", decode(t, y)); err != nil || h.Load() != rt2 {
		t.Errorf("re-applying revision 2: %v; runtime replaced: %v", err, h.Load() != rt2)
	}
}

// breakerGauges returns the llmproxy_circuitbreaker_state series as "upstream=value ...".
func breakerGauges(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "llmproxy_circuitbreaker_state" {
			continue
		}
		for _, s := range mf.GetMetric() {
			out = append(out, fmt.Sprintf("%s=%g", s.GetLabel()[0].GetValue(), s.GetGauge().GetValue()))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestEveryStrategyBuilds checks that every strategy of the contract has its picker.
func TestEveryStrategyBuilds(t *testing.T) {
	members := []balancer.Member{{Weight: 1, Stats: balancer.NewStats()}, {Weight: 2, Stats: balancer.NewStats()}}
	seen := map[string]validate.Strategy{}
	for _, s := range validate.Strategies() {
		p := picker(s, members)
		typ := fmt.Sprintf("%T", p)
		if prev, dup := seen[typ]; dup {
			t.Errorf("strategies %v and %v both build a %s", prev, s, typ)
		}
		seen[typ] = s
		if i := p.Pick(nil); i < 0 || i > 1 {
			t.Errorf("%v: Pick = %d", s, i)
		}
	}
}
