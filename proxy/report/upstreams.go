package report

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"

	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// errorKinds are the upstream error kinds in the order of errorTotals.
var errorKinds = [...]string{
	config.UpstreamErrConnect,
	config.UpstreamErrTimeout,
	config.UpstreamErrStatus,
	config.UpstreamErrStream,
	config.UpstreamErrOther,
}

// memberKey identifies one upstream's counters in one group: the label values of the
// Prometheus children, which outlive configuration swaps.
type memberKey struct{ group, upstream string }

// memberTotals are the running totals of one member's counters.
type memberTotals struct {
	requests, rateLimited, prompt, completion uint64
	errors                                    [len(errorKinds)]uint64
	buckets                                   []uint64 // cumulative, per finite bound
	count                                     uint64
}

// upstreamSource reports every upstream of the current runtime from the counters the
// request path keeps anyway: the members' Prometheus children, balancer statistics and
// breakers.
type upstreamSource struct {
	holder *config.Holder
	// last holds the totals read at the previous report, per member. Entries are never
	// dropped: a member that leaves the config and comes back finds its counters where
	// they were (the Prometheus children are never deleted either), so it is not counted
	// twice. Its size is bounded like the children's.
	last map[memberKey]memberTotals
}

// Upstreams returns the Source of the upstreams section, read from holder's current
// runtime on each report.
func Upstreams(holder *config.Holder) Source {
	return &upstreamSource{holder: holder, last: map[memberKey]memberTotals{}}
}

// upstreamAgg sums one upstream's members over groups.
type upstreamAgg struct {
	rep     *reportv1.UpstreamReport
	bounds  []float64
	buckets []uint64 // deltas of cumulative counts
	count   uint64
}

func (s *upstreamSource) Collect(r *reportv1.ProxyReport) {
	rt := s.holder.Load()
	if rt == nil {
		return
	}
	byName := map[string]*upstreamAgg{}
	var order []*upstreamAgg
	for _, g := range rt.Groups {
		for _, m := range g.Members {
			a := byName[m.Name]
			if a == nil {
				a = &upstreamAgg{rep: &reportv1.UpstreamReport{
					Name:     m.Name,
					InFlight: uint32(max(m.Stats.InFlight(), 0)),
					Breaker:  breakerState(m.Breaker.State()),
				}}
				byName[m.Name] = a
				order = append(order, a)
			}
			s.addMember(a, memberKey{g.Name, m.Name}, m)
		}
	}
	for _, a := range order {
		if a.count > 0 {
			a.rep.LatencyP50Seconds = quantile(0.50, a.bounds, a.buckets, a.count)
			a.rep.LatencyP95Seconds = quantile(0.95, a.bounds, a.buckets, a.count)
		}
		r.Upstreams = append(r.Upstreams, a.rep)
	}
}

// addMember adds one member's deltas since the previous report to a.
func (s *upstreamSource) addMember(a *upstreamAgg, k memberKey, m *config.Member) {
	cur := memberTotals{
		requests:    counter(m.Requests),
		rateLimited: counter(m.RateLimited),
		prompt:      counter(m.PromptTokens),
		completion:  counter(m.CompletionTokens),
	}
	for i, kind := range errorKinds {
		cur.errors[i] = counter(m.ErrorCounter(kind))
	}
	h, ok := telemetry.HistogramValue(m.Duration)
	if ok {
		cur.buckets, cur.count = h.Counts, h.Count
	}
	prev := s.last[k]
	s.last[k] = cur

	u := a.rep
	u.Requests += sub(cur.requests, prev.requests)
	u.RateLimited += sub(cur.rateLimited, prev.rateLimited)
	u.PromptTokens += sub(cur.prompt, prev.prompt)
	u.CompletionTokens += sub(cur.completion, prev.completion)
	u.TotalRequests += cur.requests
	if u.Errors == nil {
		u.Errors = &reportv1.ErrorCounts{}
	}
	e := u.Errors
	for i, dst := range [...]*uint64{&e.ConnectError, &e.Timeout, &e.Status_5Xx, &e.StreamBroken, &e.Other} {
		*dst += sub(cur.errors[i], prev.errors[i])
		u.TotalErrors += cur.errors[i]
	}
	if !ok || len(cur.buckets) == 0 {
		return
	}
	if a.bounds == nil {
		a.bounds = h.Bounds
		a.buckets = make([]uint64, len(h.Bounds))
	}
	if len(h.Bounds) != len(a.bounds) {
		return // every member shares the proxy's buckets; never expected
	}
	for i, c := range cur.buckets {
		var p uint64
		if i < len(prev.buckets) {
			p = prev.buckets[i]
		}
		a.buckets[i] += sub(c, p)
	}
	a.count += sub(cur.count, prev.count)
}

// counter reads a Prometheus counter as an integer.
func counter(c prometheus.Counter) uint64 {
	return uint64(math.Round(telemetry.CounterValue(c)))
}

// sub is a counter delta; a counter that went backwards (never expected) counts from 0.
func sub(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func breakerState(s breaker.State) reportv1.BreakerState {
	switch s {
	case breaker.Closed:
		return reportv1.BreakerState_BREAKER_STATE_CLOSED
	case breaker.Open:
		return reportv1.BreakerState_BREAKER_STATE_OPEN
	case breaker.HalfOpen:
		return reportv1.BreakerState_BREAKER_STATE_HALF_OPEN
	}
	return reportv1.BreakerState_BREAKER_STATE_UNSPECIFIED
}

// quantile estimates the q-quantile of count observations from cumulative bucket counts
// (buckets[i] observations ≤ bounds[i]; observations above the last bound are in count
// only), interpolating linearly inside a bucket as Prometheus' histogram_quantile does.
// A quantile that falls above the last bound is the last bound.
func quantile(q float64, bounds []float64, buckets []uint64, count uint64) float64 {
	if count == 0 || len(bounds) == 0 {
		return 0
	}
	rank := q * float64(count)
	var below uint64
	lower := 0.0
	for i, c := range buckets {
		if float64(c) >= rank {
			in := c - below
			if in == 0 {
				return bounds[i]
			}
			return lower + (bounds[i]-lower)*(rank-float64(below))/float64(in)
		}
		below, lower = c, bounds[i]
	}
	return bounds[len(bounds)-1]
}
