package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of proxy reports: passive health and usage collected by the control plane.

// fleetReportInterval is the proxies' --report-interval in these tests.
const fleetReportInterval = 2 * time.Second

// fleetBootstrap has one upstream whose URL each proxy resolves from its own environment,
// so the two proxies reach different mockllm instances under one upstream name.
const fleetBootstrap = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
upstreams:
  - name: llm
    url: ${env:FLEET_E2E_LLM_URL}
    breaker:
      threshold: 0.5
      min_requests: 4
      cooldown: 600
upstream_groups:
  - name: g
    upstreams:
      - name: llm
`

// u64 reads a proto uint64, which JSON carries as a string.
type u64 uint64

func (v *u64) UnmarshalJSON(b []byte) error {
	s := string(b)
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	n, err := strconv.ParseUint(s, 10, 64)
	*v = u64(n)
	return err
}

type fleetProxyView struct {
	NodeID        string `json:"node_id"`
	Breaker       string `json:"breaker"`
	Stale         bool   `json:"stale"`
	TotalRequests u64    `json:"total_requests"`
	TotalErrors   u64    `json:"total_errors"`
}

type fleetHealth struct {
	Verdict string           `json:"verdict"`
	Reason  string           `json:"reason"`
	Proxies []fleetProxyView `json:"proxies"`
}

func (h fleetHealth) proxy(node string) fleetProxyView {
	for _, p := range h.Proxies {
		if p.NodeID == node {
			return p
		}
	}
	return fleetProxyView{}
}

type fleetUsage struct {
	Entries []struct {
		Name     string `json:"name"`
		Requests u64    `json:"requests"`
		Errors   u64    `json:"errors"`
	} `json:"entries"`
}

func (u fleetUsage) entry(name string) (requests, errors uint64) {
	for _, e := range u.Entries {
		if e.Name == name {
			return uint64(e.Requests), uint64(e.Errors)
		}
	}
	return 0, 0
}

// scrape reads a proxy's /metrics.
func scrape(t *testing.T, p *proxy) resMetrics {
	t.Helper()
	resp, err := http.Get(p.Admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", p.Admin, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := resParseMetrics(string(b))
	if err != nil {
		t.Fatalf("parse /metrics of %s: %v", p.Admin, err)
	}
	return ms
}

// fleetSend sends one chat request on a new connection, so that the kernel spreads the
// requests over the proxies sharing the forward port, and returns its status.
func fleetSend(t *testing.T, forward, model string) int {
	t.Helper()
	a := mustSend(t, http.MethodPost, forward+"/v1/chat/completions", chat(model), "Connection", "close")
	return a.Status
}

// reportingFleet is a control plane and two proxies, p1 and p2, reporting every
// fleetReportInterval, whose upstream "llm" reaches mockllm "a" through p1 and "b" through
// p2; both serve the forward.
type reportingFleet struct {
	cp      *xdsCP
	mocks   map[string]*mock
	p1, p2  *proxy
	forward string
}

// startReportingFleet starts a reportingFleet and waits until both proxies have applied
// the bootstrap revision and reported, as /api/v1/proxies shows.
func startReportingFleet(t *testing.T) reportingFleet {
	t.Helper()
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, fleetBootstrap, map[string]any{"Port": port}))
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, "sqlite:"+t.TempDir()+"/cp.db", grpcAddr, httpAddr, "--bootstrap", boot)
	interval := []string{"--report-interval", fleetReportInterval.String()}
	f := reportingFleet{
		cp:      cp,
		mocks:   mocks,
		p1:      xdsStartProxyWith(t, grpcAddr, "p1", t.TempDir(), []string{"FLEET_E2E_LLM_URL=" + mocks["a"].URL}, interval...),
		p2:      xdsStartProxyWith(t, grpcAddr, "p2", t.TempDir(), []string{"FLEET_E2E_LLM_URL=" + mocks["b"].URL}, interval...),
		forward: fmt.Sprintf("http://127.0.0.1:%d", port),
	}
	cp.waitFleet(t, 1, "p1", "p2")
	var listed struct {
		Proxies []struct {
			NodeID         string `json:"node_id"`
			LastReportTime string `json:"last_report_time"`
			Health         struct {
				Status string `json:"status"`
			} `json:"health"`
		} `json:"proxies"`
	}
	harness.Eventually(t, 3*fleetReportInterval, func() bool {
		cp.do(t, http.MethodGet, "/api/v1/proxies", "", &listed)
		ok := 0
		for _, p := range listed.Proxies {
			if p.LastReportTime != "" && p.Health.Status == "ok" {
				ok++
			}
		}
		return ok == 2
	}, "both proxies reporting in /api/v1/proxies; last %+v", &listed)
	return f
}

// breakerOpen reports whether p's /metrics shows the breaker of upstream "llm" open.
func breakerOpen(t *testing.T, p *proxy) bool {
	t.Helper()
	v, _ := scrape(t, p).sum("llmproxy_circuitbreaker_state", "upstream", "llm")
	return v == 1
}

// TestFleetReports: a control plane and two proxies whose upstream "llm" reaches a mockllm
// of their own. When one mockllm fails, that proxy's breaker opens and the fleet verdict
// turns degraded within one report interval; the per-proxy views agree with each proxy's
// own /metrics; usage by model counts every request sent.
func TestFleetReports(t *testing.T) {
	f := startReportingFleet(t)
	cp, mocks, p1, p2, forward := f.cp, f.mocks, f.p1, f.p2, f.forward

	const model = "fleet-e2e-model"
	sent, failed := 0, 0
	count := func(status int) {
		sent++
		if status >= 500 {
			failed++
		}
	}
	for range 20 {
		if s := fleetSend(t, forward, model); s != http.StatusOK {
			t.Fatalf("healthy fleet answered %d", s)
		}
		count(http.StatusOK)
	}
	var h fleetHealth
	cp.do(t, http.MethodGet, "/api/v1/upstreams/llm/health", "", &h)
	if h.Verdict != "healthy" {
		t.Fatalf("healthy fleet: verdict %q (%s)", h.Verdict, h.Reason)
	}

	// p1's mockllm fails: requests through p1 fail until its breaker opens.
	if err := mocks["a"].SetBehaviour(context.Background(), `{"status":503}`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !breakerOpen(t, p1) {
		if time.Now().After(deadline) {
			t.Fatalf("p1's breaker did not open after %d requests", sent)
		}
		count(fleetSend(t, forward, model))
	}
	opened := time.Now()
	harness.Eventually(t, fleetReportInterval, func() bool {
		cp.do(t, http.MethodGet, "/api/v1/upstreams/llm/health", "", &h)
		return h.Verdict == "degraded" && h.proxy("p1").Breaker == "open" && h.proxy("p2").Breaker == "closed"
	}, "verdict degraded (open on p1, closed on p2) within one report interval of /metrics; last %+v", &h)
	t.Logf("health endpoint agreed with p1's /metrics %s after the breaker opened: %s", time.Since(opened).Round(time.Millisecond), h.Reason)
	if breakerOpen(t, p2) {
		t.Fatalf("p2's breaker opened too; its mockllm is healthy")
	}
	for range 10 { // more traffic: p1 refuses it itself, p2 serves it
		count(fleetSend(t, forward, model))
	}

	// Traffic stopped: within a report interval (or two, as one may be on its way) every
	// proxy's view in the health endpoint equals its own /metrics.
	var last string
	harness.Eventually(t, 2*fleetReportInterval+time.Second, func() bool {
		cp.do(t, http.MethodGet, "/api/v1/upstreams/llm/health", "", &h)
		last = ""
		for node, p := range map[string]*proxy{"p1": p1, "p2": p2} {
			ms := scrape(t, p)
			req, _ := ms.sum("llmproxy_upstream_requests_total", "upstream", "llm")
			errs, _ := ms.sum("llmproxy_upstream_errors_total", "upstream", "llm")
			v := h.proxy(node)
			if uint64(v.TotalRequests) != uint64(req) || uint64(v.TotalErrors) != uint64(errs) || v.Stale {
				last += fmt.Sprintf("%s: report %d requests %d errors, /metrics %g and %g; ", node, v.TotalRequests, v.TotalErrors, req, errs)
			}
		}
		return last == ""
	}, "health views equal to /metrics: %s", &last)

	// Usage by model counts every request sent, through either proxy; by upstream, every
	// attempt the proxies' /metrics count.
	var usage fleetUsage
	harness.Eventually(t, 2*fleetReportInterval+time.Second, func() bool {
		cp.do(t, http.MethodGet, "/api/v1/usage?by=model&window=1h", "", &usage)
		req, errs := usage.entry(model)
		return req == uint64(sent) && errs == uint64(failed)
	}, "usage by model: %d requests, %d errors; last %+v", sent, failed, &usage)
	var attempts float64
	for _, p := range []*proxy{p1, p2} {
		n, _ := scrape(t, p).sum("llmproxy_upstream_requests_total", "upstream", "llm")
		attempts += n
	}
	cp.do(t, http.MethodGet, "/api/v1/usage?by=upstream&window=1h", "", &usage)
	if req, _ := usage.entry("llm"); req != uint64(attempts) {
		t.Errorf("usage by upstream: %d attempts; the proxies' /metrics count %g", req, attempts)
	}
	t.Logf("%d requests (%d failed) through two proxies; %g upstream attempts", sent, failed, attempts)

	// Usage is in the store: a restarted control plane answers the same.
	cp.proc.Stop(10 * time.Second)
	cp = xdsStartCP(t, cp.store, cp.grpcAddr, cp.httpAddr)
	cp.do(t, http.MethodGet, "/api/v1/usage?by=model&window=1h", "", &usage)
	if req, _ := usage.entry(model); req != uint64(sent) {
		t.Errorf("after a control-plane restart: usage by model %d; want %d", req, sent)
	}
}
