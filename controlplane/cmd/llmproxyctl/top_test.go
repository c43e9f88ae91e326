package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// reportingFleet is a fixed fleet whose reports the fleet views answer from: four
// proxies (one per CONFIG state) and upstream "a" seen open on p1, closed on p2 and open
// on p3, whose report is stale.
type reportingFleet struct {
	mu    sync.Mutex
	usage *adminv1.GetUsageRequest // the last usage request
}

func (*reportingFleet) Proxies() []*adminv1.ProxyStatus {
	reported := timestamppb.New(time.Now().Add(-42 * time.Second))
	return []*adminv1.ProxyStatus{
		{NodeId: "p1", Connected: true, AckedRevision: 1, LastReportTime: reported,
			Health: &adminv1.ProxyHealth{Status: "degraded", UnhealthyUpstreams: []string{"a"}, Upstreams: 1, RequestsPerSecond: 5, ErrorRate: 0.5, InFlight: 2}},
		{NodeId: "p2", Connected: true, AckedRevision: 0, LastNackRevision: 1, LastNackError: "bad", LastReportTime: reported,
			Health: &adminv1.ProxyHealth{Status: "ok", Upstreams: 1, RequestsPerSecond: 15}},
		{NodeId: "p3", Connected: false, AckedRevision: 1, LastReportTime: timestamppb.New(time.Now().Add(-time.Minute)),
			Health: &adminv1.ProxyHealth{Status: "stale", Upstreams: 1}},
		{NodeId: "p4", Connected: true, Health: &adminv1.ProxyHealth{Status: "unknown"}},
	}
}

func (*reportingFleet) UpstreamHealth(name string) *adminv1.UpstreamHealth {
	interval := durationpb.New(2 * time.Second)
	now := timestamppb.New(time.Now().Add(-42 * time.Second))
	return &adminv1.UpstreamHealth{
		Name: name, Verdict: "degraded", Reason: "breaker open on 1 of 2 proxies: p1",
		RequestsPerSecond: 20, ErrorRate: 0.125, InFlight: 2,
		Proxies: []*adminv1.ProxyUpstreamHealth{
			{NodeId: "p1", Breaker: "open", ReportTime: now, Interval: interval, Requests: 10, Errors: 5,
				ErrorsByKind: &adminv1.UpstreamErrors{Status_5Xx: 4, Timeout: 1}, RateLimited: 1,
				LatencyP50Seconds: 0.010, LatencyP95Seconds: 0.200, InFlight: 2, TotalRequests: 110, TotalErrors: 9},
			{NodeId: "p2", Breaker: "closed", ReportTime: now, Interval: interval, Requests: 30, RateLimited: 2,
				LatencyP50Seconds: 0.020, LatencyP95Seconds: 0.050, TotalRequests: 300},
			{NodeId: "p3", Breaker: "open", Stale: true, ReportTime: timestamppb.New(time.Now().Add(-time.Minute)), Interval: interval,
				Requests: 100, RateLimited: 50, LatencyP50Seconds: 5, LatencyP95Seconds: 9, TotalRequests: 1000},
		},
	}
}

func (f *reportingFleet) Usage(_ context.Context, req *adminv1.GetUsageRequest) (*adminv1.GetUsageResponse, error) {
	f.mu.Lock()
	f.usage = proto.Clone(req).(*adminv1.GetUsageRequest)
	f.mu.Unlock()
	if req.GetWindow() == "forever" {
		return nil, status.Error(codes.InvalidArgument, `window: "forever": want a duration such as 15m, 1h or 7d`)
	}
	end := time.Date(2026, 1, 2, 15, 4, 0, 0, time.Local)
	return &adminv1.GetUsageResponse{
		By: req.GetBy(), StartTime: timestamppb.New(end.Add(-time.Hour)), EndTime: timestamppb.New(end),
		Entries: []*adminv1.UsageEntry{
			{Name: "gpt-4o", Requests: 7, Errors: 1, PromptTokens: 700, CompletionTokens: 70},
			{Name: "", Requests: 2},
		},
		Total: &adminv1.UsageEntry{Requests: 9, Errors: 1, PromptTokens: 700, CompletionTokens: 70},
	}, nil
}

// lastUsage returns the last usage request the fleet answered.
func (f *reportingFleet) lastUsage() *adminv1.GetUsageRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.usage
}

// TestTopOnce checks one frame of top: the CONFIG state of each proxy, the upstream sums
// over fresh reports only (the stale p3 counts nowhere), the highest latency of a fresh
// proxy, and the same figures in -o json and -o yaml.
func TestTopOnce(t *testing.T) {
	addr := startServerWith(t, seed, &reportingFleet{})

	out, errOut, code := ctl(t, addr, "", "top", "--once")
	if code != 0 {
		t.Fatalf("top --once: exit %d: %s", code, errOut)
	}
	rows := tableRows(out)
	want := [][]string{
		{"NODE", "REVISION", "CONFIG", "LAST REPORT", "HEALTH", "REQ/S", "ERR%", "IN-FLIGHT"},
		{"p1", "1", "ACK", "42s ago", "degraded: a", "5.0", "50.0%", "2"},
		{"p2", "0", "NACK 1", "42s ago", "ok", "15.0", "0.0%", "0"},
		{"p3", "1", "offline", "1m0s ago", "stale", "0.0", "0.0%", "0"},
		{"p4", "0", "pending", "-", "unknown", "0.0", "0.0%", "0"},
		{""},
		{"UPSTREAM", "VERDICT", "REQ/S", "ERR%", "429s", "P50", "P95", "IN-FLIGHT", "BREAKER OPEN"},
		{"a", "degraded", "20.0", "12.5%", "3", "20ms", "200ms", "2", "1/2: p1"},
	}
	if len(rows) != len(want)+2 || !strings.Contains(rows[0][1], "revision 1, 4 proxies, 1 upstream") {
		t.Fatalf("top --once printed\n%s", out)
	}
	for i, w := range want {
		if got := strings.Join(rows[i+2], "|"); got != strings.Join(w, "|") {
			t.Errorf("row %d: got %s; want %s", i+2, got, strings.Join(w, "|"))
		}
	}

	type frame struct {
		Revision uint64 `json:"revision" yaml:"revision"`
		Proxies  []struct {
			NodeID           string   `json:"node_id" yaml:"node_id"`
			Config           string   `json:"config" yaml:"config"`
			ReportAgeSeconds *float64 `json:"report_age_seconds" yaml:"report_age_seconds"`
		} `json:"proxies" yaml:"proxies"`
		Upstreams []struct {
			Name              string  `json:"name" yaml:"name"`
			Verdict           string  `json:"verdict" yaml:"verdict"`
			RateLimited       uint64  `json:"rate_limited" yaml:"rate_limited"`
			LatencyP95Seconds float64 `json:"latency_p95_seconds" yaml:"latency_p95_seconds"`
			Reporting         int     `json:"reporting" yaml:"reporting"`
			BreakerOpen       int     `json:"breaker_open" yaml:"breaker_open"`
			Proxies           []struct {
				NodeID            string  `json:"node_id" yaml:"node_id"`
				Breaker           string  `json:"breaker" yaml:"breaker"`
				Stale             bool    `json:"stale" yaml:"stale"`
				RequestsPerSecond float64 `json:"requests_per_second" yaml:"requests_per_second"`
				TotalRequests     uint64  `json:"total_requests" yaml:"total_requests"`
			} `json:"proxies" yaml:"proxies"`
		} `json:"upstreams" yaml:"upstreams"`
	}
	check := func(format string, f frame) {
		t.Helper()
		if f.Revision != 1 || len(f.Proxies) != 4 || f.Proxies[1].Config != "NACK" || f.Proxies[3].ReportAgeSeconds != nil ||
			f.Proxies[0].ReportAgeSeconds == nil || *f.Proxies[0].ReportAgeSeconds < 42 {
			t.Errorf("-o %s proxies: %+v", format, f.Proxies)
		}
		if len(f.Upstreams) != 1 {
			t.Fatalf("-o %s upstreams: %+v", format, f.Upstreams)
		}
		u := f.Upstreams[0]
		if u.Name != "a" || u.Verdict != "degraded" || u.RateLimited != 3 || u.LatencyP95Seconds != 0.2 || u.Reporting != 2 || u.BreakerOpen != 1 ||
			len(u.Proxies) != 3 || u.Proxies[0].RequestsPerSecond != 5 || u.Proxies[2].TotalRequests != 1000 || !u.Proxies[2].Stale {
			t.Errorf("-o %s upstream: %+v", format, u)
		}
	}
	jsonOut, errOut, code := ctl(t, addr, "", "top", "--once", "-o", "json")
	var fj frame
	if err := json.Unmarshal([]byte(jsonOut), &fj); code != 0 || err != nil {
		t.Fatalf("top --once -o json: exit %d %v %s\n%s", code, err, errOut, jsonOut)
	}
	check("json", fj)
	yamlOut, errOut, code := ctl(t, addr, "", "top", "--once", "-o", "yaml")
	var fy frame
	if err := yaml.Unmarshal([]byte(yamlOut), &fy); code != 0 || err != nil || strings.Contains(yamlOut, "{") {
		t.Fatalf("top --once -o yaml: exit %d %v %s\n%s", code, err, errOut, yamlOut)
	}
	check("yaml", fy)
}

// frameWriter collects what top writes and cancels the view once it holds n frames.
type frameWriter struct {
	bytes.Buffer
	frames int
	n      int
	cancel context.CancelFunc
}

func (w *frameWriter) Write(p []byte) (int, error) {
	w.frames++
	if w.frames == w.n {
		w.cancel()
	}
	return w.Buffer.Write(p)
}

// frameAfterBlank matches the header line of a frame that follows a blank line.
var frameAfterBlank = regexp.MustCompile(`\n\n\d\d:\d\d:\d\d  revision`)

// TestTopLive checks the live view: a frame per interval until interrupted, each drawn
// over the last on a terminal, a blank line apart otherwise.
func TestTopLive(t *testing.T) {
	addr := startServerWith(t, seed, &reportingFleet{})
	for _, redraw := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		w := &frameWriter{n: 3, cancel: cancel}
		c := &cli{server: addr, timeout: 10 * time.Second, getenv: func(string) string { return "" }, stdout: w}
		client, _, done, err := c.connect()
		if err != nil {
			t.Fatal(err)
		}
		err = c.topLive(ctx, client, minTopInterval, redraw)
		done()
		if err != nil {
			t.Fatalf("redraw %v: %v", redraw, err)
		}
		out := w.String()
		if got := strings.Count(out, "every 100ms, Ctrl-C quits"); got != 3 {
			t.Errorf("redraw %v: %d frames; want 3:\n%s", redraw, got, out)
		}
		switch cleared := strings.Count(out, clearScreen); {
		case redraw && (cleared != 3 || !strings.HasPrefix(out, clearScreen)):
			t.Errorf("on a terminal, %d of 3 frames clear the screen:\n%q", cleared, out)
		case !redraw && (cleared != 0 || len(frameAfterBlank.FindAllString(out, -1)) != 2):
			t.Errorf("off a terminal, frames are not a blank line apart (%d clears):\n%s", cleared, out)
		}
	}
}

// TestHealthAndUsage checks the health and usage commands: their tables, their -o json
// in the REST API's shape, the request usage sends, and their errors.
func TestHealthAndUsage(t *testing.T) {
	fl := &reportingFleet{}
	addr := startServerWith(t, seed, fl)

	out, errOut, code := ctl(t, addr, "", "health", "a")
	rows := tableRows(out)
	if code != 0 || len(rows) != 7 || rows[0][0] != "a: degraded: breaker open on 1 of 2 proxies: p1" ||
		!strings.HasPrefix(rows[1][0], "fresh proxies: 2; 20.0 attempts/s, 12.5% errors, 3 answered 429, 2 in flight") {
		t.Fatalf("health a: exit %d %s\n%s", code, errOut, out)
	}
	if got, want := strings.Join(rows[4], "|"), "p1|open|42s ago|5.0|50.0%|timeout 1, status_5xx 4|1|10ms|200ms|2|110|9"; got != want {
		t.Errorf("health a, p1's row: got %s; want %s", got, want)
	}
	if got := rows[6][2]; !strings.HasSuffix(got, "(stale)") {
		t.Errorf("health a, p3's report is not marked stale: %q", got)
	}
	jsonOut, _, code := ctl(t, addr, "", "health", "a", "-o", "json")
	var h struct {
		Verdict string `json:"verdict"`
		Proxies []struct {
			TotalRequests string `json:"total_requests"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal([]byte(jsonOut), &h); code != 0 || err != nil || h.Verdict != "degraded" || len(h.Proxies) != 3 || h.Proxies[1].TotalRequests != "300" {
		t.Errorf("health a -o json: exit %d %v\n%s", code, err, jsonOut)
	}

	out, errOut, code = ctl(t, addr, "", "usage", "--by", "model", "--window", "24h")
	want := "usage by model from 2026-01-02 14:04 to 2026-01-02 15:04\n" +
		"MODEL            REQUESTS  ERRORS  PROMPT TOKENS  COMPLETION TOKENS\n" +
		"gpt-4o           7         1       700            70\n" +
		"(body not read)  2         0       0              0\n" +
		"total            9         1       700            70\n"
	if code != 0 || out != want {
		t.Errorf("usage --by model: exit %d %s\n%s\nwant\n%s", code, errOut, out, want)
	}
	if req := fl.lastUsage(); req.GetBy() != "model" || req.GetWindow() != "24h" || req.GetStep() != "" {
		t.Errorf("usage sent %v", req)
	}
	jsonOut, _, code = ctl(t, addr, "", "usage", "--by", "consumer", "--step", "5m", "-o", "json")
	if req := fl.lastUsage(); code != 0 || !strings.Contains(jsonOut, `"by": "consumer"`) || req.GetWindow() != "1h" || req.GetStep() != "5m" {
		t.Errorf("usage --by consumer --step 5m -o json: exit %d, sent %v\n%s", code, req, jsonOut)
	}

	for _, tt := range []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"top json without once", []string{"top", "-o", "json"}, exitUsage, "-o json needs --once"},
		{"top interval too short", []string{"top", "--interval", "10ms"}, exitUsage, "--interval 10ms: want at least 100ms"},
		{"top with an argument", []string{"top", "a"}, exitUsage, "usage: llmproxyctl top"},
		{"health without upstream", []string{"health"}, exitUsage, "accepts 1 arg"},
		{"health of a missing upstream", []string{"health", "nope"}, exitNotFound, `upstream "nope" not found`},
		{"usage without by", []string{"usage"}, exitUsage, "usage needs --by model, consumer, upstream"},
		{"usage step in a table", []string{"usage", "--by", "model", "--step", "5m"}, exitUsage, "--step needs -o json or -o yaml"},
		{"usage bad window", []string{"usage", "--by", "model", "--window", "forever"}, exitInvalid, `window: "forever"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := ctl(t, addr, "", tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tt.code, tt.want)
			}
		})
	}
}

// TestTopCells checks the cells whose text depends on the value's size.
func TestTopCells(t *testing.T) {
	age := func(s float64) *float64 { return &s }
	for _, tt := range []struct{ got, want string }{
		{ageText(nil), "-"},
		{ageText(age(1.5)), "1.5s ago"},
		{ageText(age(42.4)), "42s ago"},
		{ageText(age(190)), "3m10s ago"},
		{latencyText(0), "-"},
		{latencyText(0.00042), "420µs"},
		{latencyText(0.0123), "12ms"},
		{latencyText(1.234), "1.23s"},
		{breakerText(topUpstream{}), "-"},
		{breakerText(topUpstream{Reporting: 5, BreakerOpen: 3, BreakerHalfOpen: 1, Proxies: []topView{
			{NodeID: "a", Breaker: "open"}, {NodeID: "b", Breaker: "half_open"}, {NodeID: "c", Breaker: "closed"},
			{NodeID: "d", Breaker: "open"}, {NodeID: "e", Breaker: "open"}, {NodeID: "f", Breaker: "open", Stale: true},
		}}), "4/5: a, b (half-open), d and 1 more"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q; want %q", tt.got, tt.want)
		}
	}
}
