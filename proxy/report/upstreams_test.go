package report

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/forward"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

func TestQuantile(t *testing.T) {
	bounds := []float64{0.1, 0.5, 1}
	for _, tc := range []struct {
		name    string
		buckets []uint64
		count   uint64
		q, want float64
	}{
		{"empty", []uint64{0, 0, 0}, 0, 0.5, 0},
		{"all in first bucket", []uint64{10, 10, 10}, 10, 0.5, 0.05},
		{"interpolated in second", []uint64{0, 10, 10}, 10, 0.5, 0.3},
		{"p95 across buckets", []uint64{50, 90, 100}, 100, 0.95, 0.75},
		{"above the last bound", []uint64{0, 0, 1}, 10, 0.95, 1},
		{"exact bucket edge", []uint64{5, 10, 10}, 10, 0.5, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantile(tc.q, bounds, tc.buckets, tc.count); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("quantile(%g) = %g; want %g", tc.q, got, tc.want)
			}
		})
	}
}

// proxyConfig: upstream "ok" in two groups, "limited" answering 429, "bad" answering 503
// behind a breaker that opens after two failures.
const proxyConfig = `
http_server:
  forwards:
    - name: f
      port: 3999
      default_group: g
      routing:
        - path: /ok2
          target_group: g2
        - path: /limited
          target_group: gl
        - path: /bad
          target_group: gb
        - path: /cached
          target_group: gc
upstreams:
  - name: ok
    url: "{{ok}}"
  - name: limited
    url: "{{limited}}"
  - name: bad
    url: "{{bad}}"
    breaker:
      threshold: 0.5
      min_requests: 2
      cooldown: 600
upstream_groups:
  - name: g
    upstreams: [{name: ok}]
  - name: g2
    upstreams: [{name: ok}]
  - name: gl
    upstreams: [{name: limited}]
  - name: gb
    upstreams: [{name: bad}]
  - name: gc
    upstreams: [{name: ok}]
    cache: {enabled: true}
`

// testProxy is a compiled config served by the real forward handler.
type testProxy struct {
	url     string
	holder  *config.Holder
	metrics *telemetry.Metrics
	reg     *config.Registry
}

func newTestProxy(t *testing.T) *testProxy {
	t.Helper()
	backend := func(status int, body string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	yaml := strings.NewReplacer(
		"{{ok}}", backend(200, `{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}`),
		"{{limited}}", backend(429, `{"error":{"message":"slow down"}}`),
		"{{bad}}", backend(503, `{"error":{"message":"down"}}`),
	).Replace(proxyConfig)
	c, err := configfile.Decode("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	m := telemetry.NewMetrics()
	reg := config.NewRegistry(m, nil)
	t.Cleanup(reg.Close)
	rt, err := config.Compile(c, reg, config.Options{Metrics: m, Revision: "7"})
	if err != nil {
		t.Fatal(err)
	}
	h := config.NewHolder(rt)
	srv := httptest.NewServer(forward.New(h, "f", forward.Deps{Metrics: m}))
	t.Cleanup(srv.Close)
	return &testProxy{url: srv.URL, holder: h, metrics: m, reg: reg}
}

func (p *testProxy) send(t *testing.T, path string, n int) {
	t.Helper()
	for range n {
		resp, err := http.Post(p.url+path, "application/json", strings.NewReader(`{"model":"m1","messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func byName(r *reportv1.ProxyReport) map[string]*reportv1.UpstreamReport {
	out := map[string]*reportv1.UpstreamReport{}
	for _, u := range r.GetUpstreams() {
		out[u.GetName()] = u
	}
	return out
}

// metricSum adds the samples of a counter family whose upstream label is upstream.
func metricSum(t *testing.T, m *telemetry.Metrics, family, upstream string) uint64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "upstream" && l.GetValue() == upstream {
					sum += s.GetCounter().GetValue()
				}
			}
		}
	}
	return uint64(sum)
}

func TestUpstreamsAndModelsFromTheRequestPath(t *testing.T) {
	p := newTestProxy(t)
	src := []Source{Upstreams(p.holder), Models(p.metrics.Models)}
	collect := func() *reportv1.ProxyReport {
		r := &reportv1.ProxyReport{}
		for _, s := range src {
			s.Collect(r)
		}
		return r
	}
	p.send(t, "/", 3)
	p.send(t, "/ok2", 2)
	p.send(t, "/limited", 2)
	p.send(t, "/bad", 3) // two 503s open the breaker; the third is refused by the proxy

	r := collect()
	got := byName(r)
	if len(r.GetUpstreams()) != 3 {
		t.Fatalf("upstreams %v; want ok, limited, bad once each", r.GetUpstreams())
	}
	ok := got["ok"]
	if ok.GetRequests() != 5 || ok.GetPromptTokens() != 35 || ok.GetCompletionTokens() != 15 || errorSum(ok) != 0 {
		t.Errorf("ok: %v; want 5 requests over both groups, 35+15 tokens, no errors", ok)
	}
	if p50, p95 := ok.GetLatencyP50Seconds(), ok.GetLatencyP95Seconds(); p50 <= 0 || p95 < p50 {
		t.Errorf("ok latency p50 %g p95 %g; want 0 < p50 ≤ p95", p50, p95)
	}
	if l := got["limited"]; l.GetRequests() != 2 || l.GetRateLimited() != 2 || errorSum(l) != 0 || l.GetBreaker() != reportv1.BreakerState_BREAKER_STATE_CLOSED {
		t.Errorf("limited: %v; want 2 requests, 2 rate limited, no errors, breaker closed", l)
	}
	if b := got["bad"]; b.GetRequests() != 2 || b.GetErrors().GetStatus_5Xx() != 2 || b.GetBreaker() != reportv1.BreakerState_BREAKER_STATE_OPEN {
		t.Errorf("bad: %v; want 2 attempts, 2 status_5xx, breaker open", b)
	}
	for _, name := range []string{"ok", "limited", "bad"} {
		u := got[name]
		if want := metricSum(t, p.metrics, "llmproxy_upstream_requests_total", name); u.GetTotalRequests() != want {
			t.Errorf("%s total_requests %d; /metrics says %d", name, u.GetTotalRequests(), want)
		}
		if want := metricSum(t, p.metrics, "llmproxy_upstream_errors_total", name); u.GetTotalErrors() != want {
			t.Errorf("%s total_errors %d; /metrics says %d", name, u.GetTotalErrors(), want)
		}
	}
	if len(r.GetModels()) != 1 {
		t.Fatalf("models %v; want m1 only", r.GetModels())
	}
	if m := r.GetModels()[0]; m.GetName() != "m1" || m.GetRequests() != 10 || m.GetErrors() != 3 || m.GetPromptTokens() != 35 || m.GetCompletionTokens() != 15 {
		t.Errorf("model: %v; want m1 with 10 requests, 3 errors (5xx), 35+15 tokens", m)
	}

	// The next report carries only what happened since.
	p.send(t, "/", 1)
	r = collect()
	got = byName(r)
	if ok := got["ok"]; ok.GetRequests() != 1 || ok.GetTotalRequests() != 6 {
		t.Errorf("second report ok: %v; want 1 request, total 6", ok)
	}
	if b := got["bad"]; b.GetRequests() != 0 || b.GetTotalErrors() != 2 || b.GetBreaker() != reportv1.BreakerState_BREAKER_STATE_OPEN {
		t.Errorf("second report bad: %v; want no new attempts, total errors 2, still open", b)
	}
	if m := r.GetModels(); len(m) != 1 || m[0].GetRequests() != 1 {
		t.Errorf("second report models %v; want m1 with 1 request", m)
	}
}

func errorSum(u *reportv1.UpstreamReport) uint64 {
	e := u.GetErrors()
	return e.GetConnectError() + e.GetTimeout() + e.GetStatus_5Xx() + e.GetStreamBroken() + e.GetOther()
}

func TestBoundKeepsUnhealthyUpstreamsAndFoldsModels(t *testing.T) {
	r := &reportv1.ProxyReport{}
	n := 1030
	for i := range n {
		u := &reportv1.UpstreamReport{Name: fmt.Sprintf("u%04d", i), Requests: uint64(i)}
		if i == 3 {
			u.Breaker = reportv1.BreakerState_BREAKER_STATE_OPEN
		}
		r.Upstreams = append(r.Upstreams, u)
	}
	for i := range 300 {
		r.Models = append(r.Models, &reportv1.UsageCounts{Name: fmt.Sprintf("m%d", i), Requests: uint64(i + 1), PromptTokens: 1})
	}
	r.Models = append(r.Models, &reportv1.UsageCounts{Name: telemetry.UsageOther, Requests: 1000})
	bound(r)
	if len(r.Upstreams) != 1024 || r.TruncatedUpstreams != uint32(n-1024) {
		t.Fatalf("%d upstreams, %d truncated; want 1024 and %d", len(r.Upstreams), r.TruncatedUpstreams, n-1024)
	}
	if got := byName(r); got["u0003"] == nil || got["u1029"] == nil || got["u0004"] != nil {
		t.Errorf("kept the wrong upstreams: open u0003 kept %v, busiest u1029 kept %v, idle u0004 dropped %v",
			got["u0003"] != nil, got["u1029"] != nil, got["u0004"] == nil)
	}
	if len(r.Models) != 256 {
		t.Fatalf("%d models; want 256", len(r.Models))
	}
	var requests, tokens uint64
	others := 0
	for _, m := range r.Models {
		requests += m.GetRequests()
		tokens += m.GetPromptTokens()
		if m.GetName() == telemetry.UsageOther {
			others++
		}
	}
	if want := uint64(300*301/2 + 1000); requests != want || tokens != 300 || others != 1 {
		t.Errorf("models after folding: %d requests, %d tokens, %d %q entries; want %d, 300, 1", requests, tokens, others, telemetry.UsageOther, want)
	}
}

func TestCachesFromTheRequestPath(t *testing.T) {
	p := newTestProxy(t)
	src := Caches(p.holder, p.metrics)
	collect := func() []*reportv1.CacheCounts {
		r := &reportv1.ProxyReport{}
		src.Collect(r)
		return r.GetCaches()
	}
	p.send(t, "/cached", 3) // one miss stores the answer, two hits
	p.send(t, "/", 2)       // group g has no cache: not reported
	got := collect()
	if len(got) != 1 || got[0].GetGroup() != "gc" || got[0].GetMisses() != 1 || got[0].GetHits() != 2 {
		t.Fatalf("caches %v; want gc with 1 miss and 2 hits", got)
	}
	p.send(t, "/cached", 1)
	got = collect()
	if len(got) != 1 || got[0].GetMisses() != 0 || got[0].GetHits() != 1 {
		t.Errorf("second report caches %v; want gc with 1 hit since the first report", got)
	}
}
