package forward

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testProxy is a forward named "f" served by an httptest server.
type testProxy struct {
	URL     string
	Runtime *config.Runtime
	Metrics *telemetry.Metrics
	Reg     *config.Registry
}

// newTestProxy compiles yamlCfg (with {{U0}}, {{U1}}, … replaced by the upstream URLs)
// and serves its forward "f".
func newTestProxy(t testing.TB, yamlCfg string, upstreams ...string) *testProxy {
	t.Helper()
	return newTestProxyDeps(t, Deps{}, yamlCfg, upstreams...)
}

// newTestProxyDeps is newTestProxy with the handler's collaborators deps (Metrics is set
// to the proxy's own).
func newTestProxyDeps(t testing.TB, deps Deps, yamlCfg string, upstreams ...string) *testProxy {
	t.Helper()
	for i, u := range upstreams {
		yamlCfg = strings.ReplaceAll(yamlCfg, "{{U"+string(rune('0'+i))+"}}", u)
	}
	c, err := configfile.Decode("test.yaml", []byte(yamlCfg))
	if err != nil {
		t.Fatalf("decode config: %v", err)
	}
	m := telemetry.NewMetrics()
	reg := config.NewRegistry(m, nil)
	t.Cleanup(reg.Close)
	rt, err := config.Compile(c, reg, config.Options{Metrics: m, Env: func(k string) (string, bool) {
		if k == "TEST_TOKEN" {
			return "sekrit", true
		}
		return "", false
	}})
	if err != nil {
		t.Fatalf("compile config: %v", err)
	}
	h := config.NewHolder(rt)
	deps.Metrics = m
	srv := httptest.NewServer(New(h, "f", deps))
	t.Cleanup(srv.Close)
	return &testProxy{URL: srv.URL, Runtime: rt, Metrics: m, Reg: reg}
}

// jsonUpstream is an upstream answering every request with benchAnswer; it returns its URL.
func jsonUpstream(t testing.TB) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, benchAnswer)
	}))
	t.Cleanup(up.Close)
	return up.URL
}

// simpleConfig is one forward over one group of the given upstream lines.
func simpleConfig(groupExtra string, upstreamNames ...string) string {
	var b strings.Builder
	b.WriteString("http_server:\n  forwards:\n    - name: f\n      port: 3999\n      default_group: g\nupstreams:\n")
	for i, n := range upstreamNames {
		b.WriteString("  - name: " + n + "\n    url: \"{{U" + string(rune('0'+i)) + "}}\"\n")
	}
	b.WriteString("upstream_groups:\n  - name: g\n    upstreams:\n")
	for _, n := range upstreamNames {
		b.WriteString("      - name: " + n + "\n")
	}
	b.WriteString(groupExtra)
	return b.String()
}

type errorBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// checkProxyError asserts status and an OpenAI-style error body.
func checkProxyError(t *testing.T, resp *http.Response, status int, code string) errorBody {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("status = %d; want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if eb.Error.Code != code || eb.Error.Message == "" || eb.Error.Type == "" {
		t.Errorf("error body = %+v; want code %q with message and type", eb, code)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("error answer has no X-Request-Id")
	}
	return eb
}

func post(t testing.TB, url, body string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func upstreamRequests(t testing.TB, p *testProxy, upstream string) float64 {
	t.Helper()
	return counterValue(p.Metrics.UpstreamRequests.WithLabelValues("g", upstream))
}

// counterValue reads a counter or gauge.
func counterValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
