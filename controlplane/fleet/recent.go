package fleet

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// RecentMinutes is how many minutes of each upstream's history UpstreamHealth returns in
// recent (its sparklines in the console).
const RecentMinutes = 60

// maxRecentUpstreams bounds the upstreams with a recent history. Names come from the
// proxies' configs, so the bound is reached only by a fleet with that many upstreams; then
// upstreams silent for an hour are dropped, and if none is, new names get no history.
const maxRecentUpstreams = 4096

// recentMinute is one minute of one upstream, summed over the reports received in it.
type recentMinute struct {
	start            int64 // Unix seconds of the minute's start; 0: an empty slot
	requests, errors uint64
	p50Sum, p95Sum   float64 // latencies × attempts, for the attempt-weighted mean
	maxP95           float64
	breakerNotClosed uint32
}

// recentRing is one upstream's last RecentMinutes minutes, a ring indexed by minute.
type recentRing [RecentMinutes]recentMinute

// add counts u, reported in the minute starting at start.
func (g *recentRing) add(start int64, u *reportv1.UpstreamReport) {
	m := &g[(start/60)%RecentMinutes]
	if m.start != start {
		*m = recentMinute{start: start}
	}
	n := u.GetRequests()
	m.requests += n
	m.errors += errorSum(u.GetErrors())
	m.p50Sum += u.GetLatencyP50Seconds() * float64(n)
	m.p95Sum += u.GetLatencyP95Seconds() * float64(n)
	m.maxP95 = max(m.maxP95, u.GetLatencyP95Seconds())
	if !closed(u.GetBreaker()) {
		m.breakerNotClosed++
	}
}

// newest returns the start of the ring's latest minute.
func (g *recentRing) newest() int64 {
	var n int64
	for i := range g {
		n = max(n, g[i].start)
	}
	return n
}

// points returns the minutes of the hour ending with the minute starting at now, oldest
// first, leaving out the empty ones.
func (g *recentRing) points(now int64) []*adminv1.UpstreamHealthPoint {
	var out []*adminv1.UpstreamHealthPoint
	for start := now - 60*(RecentMinutes-1); start <= now; start += 60 {
		m := &g[(start/60)%RecentMinutes]
		if m.start != start {
			continue
		}
		p := &adminv1.UpstreamHealthPoint{
			Time:                    timestamppb.New(time.Unix(start, 0)),
			Requests:                m.requests,
			Errors:                  m.errors,
			LatencyMaxP95Seconds:    m.maxP95,
			BreakerNotClosedReports: m.breakerNotClosed,
		}
		if m.requests > 0 {
			p.LatencyP50Seconds = m.p50Sum / float64(m.requests)
			p.LatencyP95Seconds = m.p95Sum / float64(m.requests)
		}
		out = append(out, p)
	}
	return out
}

// addRecentLocked counts rep's upstreams in their recent history. r.mu is held.
func (r *Reports) addRecentLocked(start int64, rep *reportv1.ProxyReport) {
	for _, u := range rep.GetUpstreams() {
		g := r.recent[u.GetName()]
		if g == nil {
			if len(r.recent) >= maxRecentUpstreams && !r.pruneRecentLocked(start) {
				continue
			}
			g = &recentRing{}
			r.recent[u.GetName()] = g
		}
		g.add(start, u)
	}
}

// pruneRecentLocked drops the histories with no minute in the last hour and reports
// whether there is room for another. r.mu is held.
func (r *Reports) pruneRecentLocked(now int64) bool {
	for name, g := range r.recent {
		if g.newest() <= now-60*RecentMinutes {
			delete(r.recent, name)
		}
	}
	return len(r.recent) < maxRecentUpstreams
}

// recentPointsLocked returns the recent history of the upstream name as of now. r.mu is
// held.
func (r *Reports) recentPointsLocked(name string, now time.Time) []*adminv1.UpstreamHealthPoint {
	g := r.recent[name]
	if g == nil {
		return nil
	}
	return g.points(minuteStart(now))
}

// minuteStart is the Unix time of the start of t's minute.
func minuteStart(t time.Time) int64 {
	return t.Unix() - t.Unix()%60
}
