package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/store/storetest"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type statusList []string

func (s statusList) Changed() <-chan struct{} { return nil }

func (s statusList) Proxies() []*adminv1.ProxyStatus {
	var out []*adminv1.ProxyStatus
	for _, n := range s {
		out = append(out, &adminv1.ProxyStatus{NodeId: n, Connected: true})
	}
	return out
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newReports(t *testing.T, st store.UsageStore, c *clock, status StatusSource) *Reports {
	t.Helper()
	r, err := New(t.Context(), Options{Store: st, Status: status, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var t0 = time.Date(2026, 3, 1, 10, 0, 30, 0, time.UTC)

func upstream(name string, state reportv1.BreakerState, requests, fails uint64) *reportv1.UpstreamReport {
	return &reportv1.UpstreamReport{
		Name: name, Breaker: state, Requests: requests, TotalRequests: requests,
		Errors: &reportv1.ErrorCounts{Status_5Xx: fails}, TotalErrors: fails, PromptTokens: 10 * requests, CompletionTokens: requests,
	}
}

func report(node string, ups ...*reportv1.UpstreamReport) *reportv1.ProxyReport {
	return &reportv1.ProxyReport{
		NodeId:         node,
		Interval:       durationpb.New(5 * time.Second),
		ReportInterval: durationpb.New(5 * time.Second),
		Upstreams:      ups,
	}
}

const (
	closedState = reportv1.BreakerState_BREAKER_STATE_CLOSED
	openState   = reportv1.BreakerState_BREAKER_STATE_OPEN
	halfState   = reportv1.BreakerState_BREAKER_STATE_HALF_OPEN
)

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		fresh, notClosed, open int
		unhealthy              []string
		want, reason           string
	}{
		{0, 0, 0, nil, VerdictUnknown, "no proxy with a fresh report has this upstream"},
		{1, 0, 0, nil, VerdictHealthy, "breaker closed on the only proxy"},
		{3, 0, 0, nil, VerdictHealthy, "breaker closed on all 3 proxies"},
		{3, 1, 1, []string{"p2"}, VerdictDegraded, "breaker open on 1 of 3 proxies: p2"},
		{3, 2, 1, []string{"p1", "p3"}, VerdictDegraded, "breaker open or half-open on 2 of 3 proxies: p1, p3"},
		{2, 2, 2, []string{"p1", "p2"}, VerdictDown, "breaker open on all 2 proxies"},
		{2, 2, 0, []string{"p1", "p2"}, VerdictDown, "breaker half-open on all 2 proxies"},
	} {
		got, reason := verdict(tc.fresh, tc.notClosed, tc.open, tc.unhealthy)
		if got != tc.want || reason != tc.reason {
			t.Errorf("verdict(%d fresh, %d not closed, %d open) = %q, %q; want %q, %q", tc.fresh, tc.notClosed, tc.open, got, reason, tc.want, tc.reason)
		}
	}
}

func TestUpstreamHealthAcrossProxies(t *testing.T) {
	c := &clock{now: t0}
	r := newReports(t, openSQLite(t), c, statusList{"p1", "p2", "p3"})
	for _, n := range []string{"p1", "p2"} {
		r.openStream(n)
	}
	r.ingest(report("p1", upstream("openai", closedState, 10, 1), upstream("local", closedState, 4, 0)))
	r.ingest(report("p2", upstream("openai", closedState, 20, 0)))

	h := r.UpstreamHealth("openai")
	if h.GetVerdict() != VerdictHealthy || len(h.GetProxies()) != 2 || h.GetProxies()[0].GetNodeId() != "p1" {
		t.Fatalf("all closed: %v; want healthy with p1, p2", h)
	}
	if h.GetRequestsPerSecond() != 6 || h.GetErrorRate() != 1.0/30 {
		t.Errorf("sums: %g req/s, error rate %g; want 6 and 1/30", h.GetRequestsPerSecond(), h.GetErrorRate())
	}

	// p1's breaker opens: it reports at once.
	c.Add(time.Second)
	r.ingest(report("p1", upstream("openai", openState, 5, 5), upstream("local", closedState, 0, 0)))
	h = r.UpstreamHealth("openai")
	if h.GetVerdict() != VerdictDegraded || h.GetReason() != "breaker open on 1 of 2 proxies: p1" {
		t.Fatalf("open on p1: %q %q; want degraded on p1", h.GetVerdict(), h.GetReason())
	}
	if v := h.GetProxies()[0]; v.GetBreaker() != "open" || v.GetErrorsByKind().GetStatus_5Xx() != 5 || v.GetStale() {
		t.Errorf("p1 view: %v; want open, 5 status_5xx, fresh", v)
	}
	if got := r.UpstreamHealth("local").GetVerdict(); got != VerdictHealthy {
		t.Errorf("local: %q; want healthy (only p1 has it, closed)", got)
	}

	// Both open: down.
	r.ingest(report("p2", upstream("openai", openState, 0, 0)))
	if got := r.UpstreamHealth("openai"); got.GetVerdict() != VerdictDown {
		t.Fatalf("open on both: %q %q; want down", got.GetVerdict(), got.GetReason())
	}

	// p2 falls silent for more than three report intervals: it no longer counts.
	c.Add(10 * time.Second)
	r.ingest(report("p1", upstream("openai", closedState, 1, 0)))
	c.Add(6 * time.Second)
	h = r.UpstreamHealth("openai")
	if h.GetVerdict() != VerdictHealthy || !h.GetProxies()[1].GetStale() || h.GetProxies()[0].GetStale() {
		t.Fatalf("p2 silent 16s: %v; want healthy from p1 alone, p2 listed stale", h)
	}
	// A closed stream makes a proxy stale at once.
	r.closeStream("p1")
	if got := r.UpstreamHealth("openai").GetVerdict(); got != VerdictUnknown {
		t.Fatalf("no open stream: %q; want unknown", got)
	}
	if got := r.UpstreamHealth("nowhere"); got.GetVerdict() != VerdictUnknown || len(got.GetProxies()) != 0 {
		t.Fatalf("unreported upstream: %v", got)
	}
}

func TestProxiesCarryReportSummary(t *testing.T) {
	c := &clock{now: t0}
	r := newReports(t, openSQLite(t), c, statusList{"p1", "p2", "p3"})
	r.openStream("p1")
	r.openStream("p2")
	rep := report("p1", upstream("a", closedState, 10, 2), upstream("b", halfState, 0, 0))
	rep.Revision = "12"
	rep.Upstreams[0].InFlight = 3
	r.ingest(rep)
	r.ingest(report("p2", upstream("a", closedState, 1, 0)))
	c.Add(20 * time.Second)
	r.ingest(report("p1", rep.GetUpstreams()...))
	ps := r.Proxies()
	if len(ps) != 3 {
		t.Fatalf("%d proxies; want the 3 of the ADS status", len(ps))
	}
	p1, p2, p3 := ps[0].GetHealth(), ps[1].GetHealth(), ps[2].GetHealth()
	if p1.GetStatus() != ProxyDegraded || fmt.Sprint(p1.GetUnhealthyUpstreams()) != "[b]" || p1.GetUpstreams() != 2 ||
		p1.GetInFlight() != 3 || p1.GetRequestsPerSecond() != 2 || p1.GetErrorRate() != 0.2 || ps[0].GetLastReportTime().AsTime() != t0.Add(20*time.Second) {
		t.Errorf("p1: %v (report at %v); want degraded by b, 2 upstreams, 3 in flight, 2 req/s, error rate 0.2, report time +20s", p1, ps[0].GetLastReportTime().AsTime())
	}
	if p2.GetStatus() != ProxyStale {
		t.Errorf("p2 silent for 20s: %q; want stale", p2.GetStatus())
	}
	if p3.GetStatus() != ProxyUnknown || ps[2].GetLastReportTime() != nil {
		t.Errorf("p3 never reported: %v; want unknown without a report time", ps[2])
	}
}

func TestUsageFromRollups(t *testing.T) {
	c := &clock{now: t0}
	st := openSQLite(t)
	r := newReports(t, st, c, nil)
	rep := report("p1", upstream("openai", closedState, 3, 1))
	rep.Models = []*reportv1.UsageCounts{{Name: "gpt-4o", Requests: 3, Errors: 1, PromptTokens: 30, CompletionTokens: 3}}
	rep.Consumers = []*reportv1.UsageCounts{{Name: "team-a", Requests: 3, PromptTokens: 30, CompletionTokens: 3}}
	r.ingest(rep)
	c.Add(time.Minute)
	rep = report("p2", upstream("openai", closedState, 2, 0))
	rep.Models = []*reportv1.UsageCounts{{Name: "gpt-4o", Requests: 1}, {Name: "llama", Requests: 1, PromptTokens: 100}}
	r.ingest(rep)

	ask := func(r *Reports, by, window, step string) *adminv1.GetUsageResponse {
		t.Helper()
		resp, err := r.Usage(t.Context(), &adminv1.GetUsageRequest{By: by, Window: window, Step: step})
		if err != nil {
			t.Fatalf("Usage(%s): %v", by, err)
		}
		return resp
	}
	models := ask(r, "model", "1h", "")
	if got := entries(models); got != "llama:1/0/100/0 gpt-4o:4/1/30/3" {
		t.Errorf("by model: %s; want llama (more tokens) then gpt-4o", got)
	}
	if tot := models.GetTotal(); tot.GetRequests() != 5 || tot.GetPromptTokens() != 130 {
		t.Errorf("total %v; want 5 requests, 130 prompt tokens", tot)
	}
	if got := entries(ask(r, "upstream", "1h", "")); got != "openai:5/1/50/5" {
		t.Errorf("by upstream: %s", got)
	}
	if got := entries(ask(r, "consumer", "1h", "")); got != "team-a:3/0/30/3" {
		t.Errorf("by consumer: %s", got)
	}
	// A window of one minute covers the current minute only.
	if got := entries(ask(r, "model", "1m", "")); got != "llama:1/0/100/0 gpt-4o:1/0/0/0" {
		t.Errorf("by model over 1m: %s", got)
	}
	// A time series: one point per minute, empty minutes included.
	ts := ask(r, "upstream", "3m", "1m")
	pts := ts.GetEntries()[0].GetPoints()
	if len(pts) != 3 || pts[0].GetRequests() != 0 || pts[1].GetRequests() != 3 || pts[2].GetRequests() != 2 ||
		!pts[0].GetTime().AsTime().Equal(ts.GetStartTime().AsTime()) {
		t.Errorf("points %v; want 0, 3, 2 from the start time", pts)
	}

	// The rollups are in the store: a restarted control plane answers the same.
	again := newReports(t, st, c, nil)
	if got := entries(ask(again, "model", "1h", "")); got != "llama:1/0/100/0 gpt-4o:4/1/30/3" {
		t.Errorf("after a restart: %s", got)
	}
}

// entries renders name:requests/errors/prompt/completion in answer order.
func entries(r *adminv1.GetUsageResponse) string {
	var b []string
	for _, e := range r.GetEntries() {
		b = append(b, fmt.Sprintf("%s:%d/%d/%d/%d", e.GetName(), e.GetRequests(), e.GetErrors(), e.GetPromptTokens(), e.GetCompletionTokens()))
	}
	return strings.Join(b, " ")
}

func TestParseUsageQuery(t *testing.T) {
	for _, tc := range []struct {
		req        *adminv1.GetUsageRequest
		wantFields string
		want       UsageQuery
	}{
		{&adminv1.GetUsageRequest{By: "model"}, "", UsageQuery{By: "model", Window: time.Hour}},
		{&adminv1.GetUsageRequest{By: "consumer", Window: "7d", Step: "1h"}, "", UsageQuery{By: "consumer", Window: 7 * 24 * time.Hour, Step: time.Hour}},
		{&adminv1.GetUsageRequest{}, "by", UsageQuery{}},
		{&adminv1.GetUsageRequest{By: "route", Window: "forever"}, "by window", UsageQuery{}},
		{&adminv1.GetUsageRequest{By: "model", Window: "30s"}, "window", UsageQuery{}},
		{&adminv1.GetUsageRequest{By: "model", Window: "32d"}, "window", UsageQuery{}},
		{&adminv1.GetUsageRequest{By: "model", Window: "1h", Step: "90s"}, "step", UsageQuery{}},
		{&adminv1.GetUsageRequest{By: "model", Window: "1h", Step: "2h"}, "step", UsageQuery{}},
		{&adminv1.GetUsageRequest{By: "model", Window: "31d", Step: "1m"}, "step", UsageQuery{}},
	} {
		q, err := ParseUsageQuery(tc.req)
		var fields []string
		for _, fe := range validate.Errors(err) {
			fields = append(fields, fe.Path)
			if !errors.Is(fe, validate.ErrInvalid) {
				t.Errorf("%v: %v is not ErrInvalid", tc.req, fe)
			}
		}
		if got := strings.Join(fields, " "); got != tc.wantFields {
			t.Errorf("ParseUsageQuery(%v): faults in %q (%v); want %q", tc.req, got, err, tc.wantFields)
		}
		if err == nil && q != tc.want {
			t.Errorf("ParseUsageQuery(%v) = %+v; want %+v", tc.req, q, tc.want)
		}
	}
}

// TestReplicasAgreeOnPostgres: two control planes on one PostgreSQL, each receiving the
// reports of its own proxy, answer the same usage.
func TestReplicasAgreeOnPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t, "fleet_test")
	c := &clock{now: t0}
	var replicas []*Reports
	for range 2 {
		st, err := store.Open(t.Context(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		replicas = append(replicas, newReports(t, st, c, nil))
	}
	for i, r := range replicas {
		rep := report(fmt.Sprintf("p%d", i))
		rep.Models = []*reportv1.UsageCounts{{Name: "gpt-4o", Requests: uint64(i + 1), PromptTokens: 10}}
		r.ingest(rep)
		if err := r.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range replicas {
		resp, err := r.Usage(t.Context(), &adminv1.GetUsageRequest{By: "model"})
		if err != nil {
			t.Fatal(err)
		}
		if got := entries(resp); got != "gpt-4o:3/0/20/0" {
			t.Errorf("replica %d: %s; want both proxies' requests", i, got)
		}
	}
}

// TestStreamReports runs the service over gRPC with a token check: a good stream is
// ingested, a stream without the token, an invalid report and a change of node id end
// with the right codes.
func TestStreamReports(t *testing.T) {
	srvCtx, stop := context.WithCancel(t.Context())
	defer stop()
	ctx := t.Context()
	r, err := New(srvCtx, Options{
		Store: openSQLite(t),
		Authorize: func(ctx context.Context) error {
			md, _ := metadata.FromIncomingContext(ctx)
			if v := md.Get("authorization"); len(v) == 1 && v[0] == "Bearer s3cret" {
				return nil
			}
			return status.Error(codes.Unauthenticated, "bad token")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	r.Register(gs)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := reportv1.NewReportServiceClient(conn)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")

	send := func(ctx context.Context, reps ...*reportv1.ProxyReport) (*reportv1.StreamReportsResponse, error) {
		s, err := client.StreamReports(ctx)
		if err != nil {
			return nil, err
		}
		for _, rep := range reps {
			if err := s.Send(rep); err != nil {
				break // the status comes from CloseAndRecv
			}
		}
		return s.CloseAndRecv()
	}

	resp, err := send(authed, report("p1", upstream("a", openState, 1, 1)), report("p1", upstream("a", openState, 0, 0)))
	if err != nil || resp.GetReceived() != 2 {
		t.Fatalf("good stream: %v, %v; want 2 received", resp, err)
	}
	if got := r.UpstreamHealth("a"); len(got.GetProxies()) != 1 || got.GetProxies()[0].GetBreaker() != "open" {
		t.Fatalf("after the stream: %v", got)
	}
	if _, err := send(ctx, report("p1")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without the token: %v; want Unauthenticated", err)
	}
	bad := report("")
	bad.ReportInterval = nil
	_, err = send(authed, bad)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "node_id: required") || !strings.Contains(err.Error(), "report_interval: required") {
		t.Errorf("invalid report: %v; want InvalidArgument naming node_id and report_interval", err)
	}
	if _, err := send(authed, report("p1"), report("p2")); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "node_id") {
		t.Errorf("node id changed on a stream: %v; want InvalidArgument", err)
	}

	// An open stream ends when the control plane stops.
	s, err := client.StreamReports(authed)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(report("p3")); err != nil {
		t.Fatal(err)
	}
	stop()
	if _, err := s.CloseAndRecv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream at shutdown: %v; want Unavailable", err)
	}
}
