package fleet

import (
	"fmt"
	"testing"
	"time"

	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

func withLatency(u *reportv1.UpstreamReport, p50, p95 float64) *reportv1.UpstreamReport {
	u.LatencyP50Seconds, u.LatencyP95Seconds = p50, p95
	return u
}

func TestUpstreamHealthRecentHistory(t *testing.T) {
	c := &clock{now: t0}
	r := newReports(t, openSQLite(t), c, statusList{"p1", "p2"})
	r.ingest(report("p1", withLatency(upstream("openai", closedState, 10, 0), 0.1, 0.2)))
	r.ingest(report("p2", withLatency(upstream("openai", openState, 30, 3), 0.3, 0.4)))

	pts := r.UpstreamHealth("openai").GetRecent()
	if len(pts) != 1 {
		t.Fatalf("one minute of reports: %d points; want 1", len(pts))
	}
	p := pts[0]
	if got, want := p.GetTime().AsTime(), t0.Truncate(time.Minute); !got.Equal(want) {
		t.Errorf("point time %s; want the minute's start %s", got, want)
	}
	if p.GetRequests() != 40 || p.GetErrors() != 3 || p.GetBreakerNotClosedReports() != 1 {
		t.Errorf("point %v; want 40 requests, 3 errors, 1 report with the breaker not closed", p)
	}
	// Attempt-weighted: p50 (10×0.1 + 30×0.3)/40, p95 (10×0.2 + 30×0.4)/40.
	if !near(p.GetLatencyP50Seconds(), 0.25) || !near(p.GetLatencyP95Seconds(), 0.35) || p.GetLatencyMaxP95Seconds() != 0.4 {
		t.Errorf("latency p50 %g, p95 %g, max p95 %g; want 0.25, 0.35, 0.4", p.GetLatencyP50Seconds(), p.GetLatencyP95Seconds(), p.GetLatencyMaxP95Seconds())
	}

	// Two minutes later an idle report: a point without latency; the silent minute between
	// is left out.
	c.Add(2 * time.Minute)
	r.ingest(report("p1", withLatency(upstream("openai", closedState, 0, 0), 0, 0)))
	pts = r.UpstreamHealth("openai").GetRecent()
	if len(pts) != 2 || pts[1].GetRequests() != 0 || pts[1].GetLatencyP95Seconds() != 0 || !pts[1].GetTime().AsTime().After(pts[0].GetTime().AsTime()) {
		t.Fatalf("after an idle minute: %v; want the first point, then an empty one", pts)
	}

	// An hour on, the first minute's slot is reused and its counts do not leak in.
	c.Add(58 * time.Minute)
	r.ingest(report("p1", withLatency(upstream("openai", closedState, 5, 1), 1, 2)))
	pts = r.UpstreamHealth("openai").GetRecent()
	if len(pts) != 2 || pts[1].GetRequests() != 5 || pts[1].GetErrors() != 1 || pts[1].GetLatencyP95Seconds() != 2 {
		t.Fatalf("an hour later: %v; want the idle minute and the new one (5 requests, 1 error)", pts)
	}
	if got := r.UpstreamHealth("other").GetRecent(); len(got) != 0 {
		t.Errorf("unreported upstream: %v; want no history", got)
	}
}

func TestRecentHistoryBounded(t *testing.T) {
	c := &clock{now: t0}
	r := newReports(t, openSQLite(t), c, nil)
	ups := make([]*reportv1.UpstreamReport, 0, maxRecentUpstreams)
	for i := range maxRecentUpstreams {
		ups = append(ups, upstream(fmt.Sprintf("u%d", i), closedState, 1, 0))
	}
	r.mu.Lock()
	r.addRecentLocked(minuteStart(c.Now()), report("p1", ups...))
	r.addRecentLocked(minuteStart(c.Now()), report("p1", upstream("late", closedState, 1, 0)))
	_, tracked := r.recent["late"]
	r.mu.Unlock()
	if tracked {
		t.Fatalf("a history beyond %d upstreams was kept", maxRecentUpstreams)
	}
	// An hour on, the silent ones make room.
	c.Add(time.Hour)
	r.ingest(report("p1", upstream("late", closedState, 1, 0)))
	if got := r.UpstreamHealth("late").GetRecent(); len(got) != 1 {
		t.Fatalf("after the others fell silent: %v; want a history of late", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recent) != 1 {
		t.Errorf("%d histories kept; want only late's", len(r.recent))
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
