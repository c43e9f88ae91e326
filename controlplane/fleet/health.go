package fleet

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// Proxy health statuses (adminv1.ProxyHealth.status).
const (
	ProxyOK       = "ok"
	ProxyDegraded = "degraded"
	ProxyStale    = "stale"
	ProxyUnknown  = "unknown"
)

// Upstream verdicts (adminv1.UpstreamHealth.verdict).
const (
	VerdictHealthy  = "healthy"
	VerdictDegraded = "degraded"
	VerdictDown     = "down"
	VerdictUnknown  = "unknown"
)

// maxUnhealthyNames bounds ProxyHealth.unhealthy_upstreams.
const maxUnhealthyNames = 20

// Proxies returns the ADS status of every proxy with, for those that reported, the time of
// their last report and a health summary. It satisfies admin.Fleet.
func (r *Reports) Proxies() []*adminv1.ProxyStatus {
	if r.opts.Status == nil {
		return nil
	}
	ps := r.opts.Status.Proxies()
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetLocked(now)
	for _, p := range ps {
		st := r.proxies[p.GetNodeId()]
		if st == nil || st.report == nil {
			p.Health = &adminv1.ProxyHealth{Status: ProxyUnknown}
			continue
		}
		p.LastReportTime = timestamppb.New(st.received)
		p.Health = proxyHealth(st, r.fresh(st, now))
	}
	return ps
}

// Changed returns the Status's change signal (ADS status only: a report is not a change a
// write waits for); without a Status, a channel that is never closed.
func (r *Reports) Changed() <-chan struct{} {
	if r.opts.Status == nil {
		return make(chan struct{})
	}
	return r.opts.Status.Changed()
}

// forgetLocked drops proxies silent for longer than ForgetAfter. r.mu is held.
func (r *Reports) forgetLocked(now time.Time) {
	for node, st := range r.proxies {
		if st.streams == 0 && now.Sub(st.received) > r.opts.ForgetAfter {
			delete(r.proxies, node)
		}
	}
}

// fresh reports whether st's last report counts: its stream is open and the report is
// younger than StaleIntervals of its interval.
func (r *Reports) fresh(st *proxyState, now time.Time) bool {
	if st.report == nil || st.streams == 0 {
		return false
	}
	return now.Sub(st.received) <= StaleIntervals*st.report.GetReportInterval().AsDuration()
}

// proxyHealth summarizes one proxy's last report.
func proxyHealth(st *proxyState, fresh bool) *adminv1.ProxyHealth {
	rep := st.report
	h := &adminv1.ProxyHealth{
		Status:         ProxyOK,
		Upstreams:      uint32(len(rep.GetUpstreams())) + rep.GetTruncatedUpstreams(),
		ReportInterval: rep.GetReportInterval(),
		Revision:       rep.GetRevision(),
	}
	var requests, errs uint64
	for _, u := range rep.GetUpstreams() {
		requests += u.GetRequests()
		errs += errorSum(u.GetErrors())
		h.InFlight += u.GetInFlight()
		if !closed(u.GetBreaker()) {
			h.Status = ProxyDegraded
			if len(h.UnhealthyUpstreams) < maxUnhealthyNames {
				h.UnhealthyUpstreams = append(h.UnhealthyUpstreams, u.GetName())
			}
		}
	}
	h.RequestsPerSecond = perSecond(requests, rep.GetInterval().AsDuration())
	h.ErrorRate = ratio(errs, requests)
	if !fresh {
		h.Status = ProxyStale
	}
	return h
}

// UpstreamHealth returns every reporting proxy's view of the upstream name and the fleet
// verdict. It satisfies admin.FleetReports; the caller checks that the upstream exists.
func (r *Reports) UpstreamHealth(name string) *adminv1.UpstreamHealth {
	now := r.now()
	out := &adminv1.UpstreamHealth{Name: name}
	var fresh, notClosed, open int
	var unhealthy []string
	var requests, errs uint64
	r.mu.Lock()
	r.forgetLocked(now)
	for node, st := range r.proxies {
		u := st.upstream(name)
		if u == nil {
			continue
		}
		isFresh := r.fresh(st, now)
		v := &adminv1.ProxyUpstreamHealth{
			NodeId:            node,
			Breaker:           breakerName(u.GetBreaker()),
			Stale:             !isFresh,
			ReportTime:        timestamppb.New(st.received),
			Interval:          st.report.GetInterval(),
			Requests:          u.GetRequests(),
			Errors:            errorSum(u.GetErrors()),
			ErrorsByKind:      errorsByKind(u.GetErrors()),
			RateLimited:       u.GetRateLimited(),
			LatencyP50Seconds: u.GetLatencyP50Seconds(),
			LatencyP95Seconds: u.GetLatencyP95Seconds(),
			InFlight:          u.GetInFlight(),
			TotalRequests:     u.GetTotalRequests(),
			TotalErrors:       u.GetTotalErrors(),
		}
		out.Proxies = append(out.Proxies, v)
		if !isFresh {
			continue
		}
		fresh++
		requests += v.Requests
		errs += v.Errors
		out.RequestsPerSecond += perSecond(v.Requests, v.Interval.AsDuration())
		out.InFlight += v.InFlight
		if !closed(u.GetBreaker()) {
			notClosed++
			unhealthy = append(unhealthy, node)
			if u.GetBreaker() == reportv1.BreakerState_BREAKER_STATE_OPEN {
				open++
			}
		}
	}
	out.Recent = r.recentPointsLocked(name, now)
	r.mu.Unlock()
	slices.SortFunc(out.Proxies, func(a, b *adminv1.ProxyUpstreamHealth) int { return cmp.Compare(a.GetNodeId(), b.GetNodeId()) })
	slices.Sort(unhealthy)
	out.ErrorRate = ratio(errs, requests)
	out.Verdict, out.Reason = verdict(fresh, notClosed, open, unhealthy)
	return out
}

// verdict judges an upstream from the fresh proxies' breakers: notClosed of fresh are open
// or half-open (open of them open), on the proxies unhealthy.
func verdict(fresh, notClosed, open int, unhealthy []string) (string, string) {
	switch {
	case fresh == 0:
		return VerdictUnknown, "no proxy with a fresh report has this upstream"
	case notClosed == 0:
		return VerdictHealthy, "breaker closed on " + every(fresh)
	}
	what := "open"
	switch {
	case open == 0:
		what = "half-open"
	case open < notClosed:
		what = "open or half-open"
	}
	if notClosed == fresh {
		return VerdictDown, fmt.Sprintf("breaker %s on %s", what, every(fresh))
	}
	names := unhealthy
	more := ""
	if len(names) > maxUnhealthyNames {
		names, more = names[:maxUnhealthyNames], fmt.Sprintf(" and %d more", len(unhealthy)-maxUnhealthyNames)
	}
	return VerdictDegraded, fmt.Sprintf("breaker %s on %d of %d proxies: %s%s", what, notClosed, fresh, strings.Join(names, ", "), more)
}

// upstream returns the proxy's last report of the upstream name, or nil. r.mu is held.
func (st *proxyState) upstream(name string) *reportv1.UpstreamReport {
	if st.report == nil {
		return nil
	}
	if st.byName == nil {
		st.byName = make(map[string]*reportv1.UpstreamReport, len(st.report.GetUpstreams()))
		for _, u := range st.report.GetUpstreams() {
			st.byName[u.GetName()] = u
		}
	}
	return st.byName[name]
}

// closed treats an unset state (an older proxy) as closed.
func closed(s reportv1.BreakerState) bool {
	return s == reportv1.BreakerState_BREAKER_STATE_CLOSED || s == reportv1.BreakerState_BREAKER_STATE_UNSPECIFIED
}

func breakerName(s reportv1.BreakerState) string {
	switch s {
	case reportv1.BreakerState_BREAKER_STATE_OPEN:
		return "open"
	case reportv1.BreakerState_BREAKER_STATE_HALF_OPEN:
		return "half_open"
	}
	return "closed"
}

func errorSum(e *reportv1.ErrorCounts) uint64 {
	return e.GetConnectError() + e.GetTimeout() + e.GetStatus_5Xx() + e.GetStreamBroken() + e.GetOther()
}

func errorsByKind(e *reportv1.ErrorCounts) *adminv1.UpstreamErrors {
	return &adminv1.UpstreamErrors{
		ConnectError: e.GetConnectError(),
		Timeout:      e.GetTimeout(),
		Status_5Xx:   e.GetStatus_5Xx(),
		StreamBroken: e.GetStreamBroken(),
		Other:        e.GetOther(),
	}
}

func perSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func ratio(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return float64(part) / float64(whole)
}

// every reads "the only proxy" or "all 3 proxies".
func every(n int) string {
	if n == 1 {
		return "the only proxy"
	}
	return fmt.Sprintf("all %d proxies", n)
}
