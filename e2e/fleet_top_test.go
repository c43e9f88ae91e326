package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of the fleet views in llmproxyctl: top, health and usage.

// ctlTopFrame is what llmproxyctl top --once -o json prints, the parts these tests read.
type ctlTopFrame struct {
	Revision u64 `json:"revision"`
	Proxies  []struct {
		NodeID           string   `json:"node_id"`
		AckedRevision    u64      `json:"acked_revision"`
		Config           string   `json:"config"`
		Health           string   `json:"health"`
		ReportAgeSeconds *float64 `json:"report_age_seconds"`
	} `json:"proxies"`
	Upstreams []struct {
		Name        string           `json:"name"`
		Verdict     string           `json:"verdict"`
		Reason      string           `json:"reason"`
		Reporting   int              `json:"reporting"`
		BreakerOpen int              `json:"breaker_open"`
		Proxies     []fleetProxyView `json:"proxies"`
	} `json:"upstreams"`
}

// llm returns the frame's row of upstream "llm" as a fleetHealth, empty when it is missing.
func (f ctlTopFrame) llm() (h fleetHealth, reporting, open int) {
	for _, u := range f.Upstreams {
		if u.Name == "llm" {
			return fleetHealth{Verdict: u.Verdict, Reason: u.Reason, Proxies: u.Proxies}, u.Reporting, u.BreakerOpen
		}
	}
	return fleetHealth{}, 0, 0
}

// top runs llmproxyctl top --once -o json against c.
func (c *xdsCP) top(t *testing.T) ctlTopFrame {
	t.Helper()
	out, errOut, code := c.ctl(t, "", "top", "--once", "-o", "json")
	var f ctlTopFrame
	if err := json.Unmarshal([]byte(out), &f); code != 0 || err != nil {
		t.Fatalf("llmproxyctl top --once -o json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	return f
}

// TestCtlTopAgreesWithMetrics: llmproxyctl top --once -o json, run against a control plane
// and two proxies, agrees with the proxies' own /metrics: a breaker that opens on p1 shows
// open on p1 and closed on p2 (verdict degraded, open on 1 of 2) within one report
// interval, and once traffic stops every proxy's attempts and errors of the upstream equal
// its /metrics counters within one report interval (plus a second for the checks
// themselves). The table, llmproxyctl health and llmproxyctl usage say the same.
func TestCtlTopAgreesWithMetrics(t *testing.T) {
	f := startReportingFleet(t)
	cp, p1, p2 := f.cp, f.p1, f.p2

	frame := cp.top(t)
	if len(frame.Proxies) != 2 {
		t.Fatalf("top lists %d proxies; want p1 and p2: %+v", len(frame.Proxies), frame.Proxies)
	}
	for _, p := range frame.Proxies {
		if p.Config != "ACK" || p.AckedRevision != frame.Revision || p.Health != "ok" || p.ReportAgeSeconds == nil ||
			*p.ReportAgeSeconds > (3*fleetReportInterval).Seconds() {
			t.Errorf("healthy fleet, proxy %s at revision %d: %+v", p.NodeID, frame.Revision, p)
		}
	}
	if h, reporting, _ := frame.llm(); h.Verdict != "healthy" || reporting != 2 {
		t.Errorf("healthy fleet: llm %q on %d proxies (%s)", h.Verdict, reporting, h.Reason)
	}

	const model = "top-e2e-model"
	sent := 0
	for range 20 {
		if s := fleetSend(t, f.forward, model); s != http.StatusOK {
			t.Fatalf("healthy fleet answered %d", s)
		}
		sent++
	}

	// p1's mockllm fails until p1's breaker opens, as p1's /metrics shows.
	if err := f.mocks["a"].SetBehaviour(context.Background(), `{"status":503}`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !breakerOpen(t, p1) {
		if time.Now().After(deadline) {
			t.Fatalf("p1's breaker did not open after %d requests", sent)
		}
		fleetSend(t, f.forward, model)
		sent++
	}
	opened := time.Now()
	var h fleetHealth
	var reporting, open int
	harness.Eventually(t, fleetReportInterval, func() bool {
		frame = cp.top(t)
		h, reporting, open = frame.llm()
		return h.Verdict == "degraded" && reporting == 2 && open == 1 && h.proxy("p1").Breaker == "open" && h.proxy("p2").Breaker == "closed"
	}, "top: llm degraded, open on p1 of 2, within one report interval of p1's /metrics; last %+v", &h)
	t.Logf("top showed p1's breaker open %s after its /metrics did: %s", time.Since(opened).Round(time.Millisecond), h.Reason)
	if breakerOpen(t, p2) {
		t.Fatalf("p2's breaker opened too; its mockllm is healthy")
	}
	for range 10 { // p1 refuses these itself, p2 serves them
		fleetSend(t, f.forward, model)
		sent++
	}

	// Traffic stopped: top's per-proxy counts reach each proxy's /metrics.
	stopped := time.Now()
	var last string
	harness.Eventually(t, fleetReportInterval+time.Second, func() bool {
		frame = cp.top(t)
		h, _, _ = frame.llm()
		last = ""
		for node, p := range map[string]*proxy{"p1": p1, "p2": p2} {
			ms := scrape(t, p)
			req, _ := ms.sum("llmproxy_upstream_requests_total", "upstream", "llm")
			errs, _ := ms.sum("llmproxy_upstream_errors_total", "upstream", "llm")
			state, _ := ms.sum("llmproxy_circuitbreaker_state", "upstream", "llm")
			v := h.proxy(node)
			if uint64(v.TotalRequests) != uint64(req) || uint64(v.TotalErrors) != uint64(errs) || v.Stale || (v.Breaker == "open") != (state == 1) {
				last += fmt.Sprintf("%s: top %d requests, %d errors, breaker %s; /metrics %g, %g, state %g; ",
					node, v.TotalRequests, v.TotalErrors, v.Breaker, req, errs, state)
			}
		}
		return last == ""
	}, "top's views equal to /metrics: %s", &last)
	t.Logf("top's counts equalled both proxies' /metrics %s after the last request", time.Since(stopped).Round(time.Millisecond))

	// The table says the same.
	out, errOut, code := cp.ctl(t, "", "top", "--once")
	if code != 0 {
		t.Fatalf("llmproxyctl top --once: exit %d %s", code, errOut)
	}
	rows := map[string][]string{}
	for _, r := range ctlTable(out) {
		rows[r[0]] = r
	}
	if r := rows["p1"]; len(r) != 8 || r[2] != "ACK" || r[4] != "degraded: llm" {
		t.Errorf("top's row of p1: %q\n%s", r, out)
	}
	if r := rows["p2"]; len(r) != 8 || r[2] != "ACK" || r[4] != "ok" {
		t.Errorf("top's row of p2: %q\n%s", r, out)
	}
	if r := rows["llm"]; len(r) != 9 || r[1] != "degraded" || r[8] != "1/2: p1" {
		t.Errorf("top's row of llm: %q\n%s", r, out)
	}

	// health llm: the verdict and each proxy's breaker.
	out, errOut, code = cp.ctl(t, "", "health", "llm")
	if want := "llm: degraded: breaker open on 1 of 2 proxies: p1\n"; code != 0 || !strings.HasPrefix(out, want) {
		t.Fatalf("llmproxyctl health llm: exit %d %s; want it to start %q:\n%s", code, errOut, want, out)
	}
	rows = map[string][]string{}
	for _, r := range ctlTable(out) {
		rows[r[0]] = r
	}
	if rows["p1"][1] != "open" || rows["p2"][1] != "closed" {
		t.Errorf("llmproxyctl health llm: p1 %q, p2 %q\n%s", rows["p1"], rows["p2"], out)
	}

	// usage --by model: every request sent, through either proxy.
	out, errOut, code = cp.ctl(t, "", "usage", "--by", "model", "-o", "json")
	var usage fleetUsage
	if err := json.Unmarshal([]byte(out), &usage); code != 0 || err != nil {
		t.Fatalf("llmproxyctl usage --by model -o json: exit %d %v %s\n%s", code, err, errOut, out)
	}
	if req, _ := usage.entry(model); req != uint64(sent) {
		t.Errorf("llmproxyctl usage --by model: %d requests of %s; sent %d\n%s", req, model, sent, out)
	}
}
