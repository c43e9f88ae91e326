package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// CounterValue returns the current value of a counter (a child of a CounterVec or a plain
// Counter). It is meant for periodic readers such as the control-plane reporter, not for
// the request path: it allocates.
func CounterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if c == nil || c.Write(&m) != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// HistogramCounts is a histogram's state: cumulative counts per bucket upper bound
// (Bounds[i] ↔ Counts[i], +Inf left out) and the total count.
type HistogramCounts struct {
	Bounds []float64
	Counts []uint64
	Count  uint64
}

// HistogramValue reads a histogram child (what HistogramVec.WithLabelValues returns). It
// reports false when o is not a readable histogram. Like CounterValue it allocates.
func HistogramValue(o prometheus.Observer) (HistogramCounts, bool) {
	mt, ok := o.(prometheus.Metric)
	if !ok {
		return HistogramCounts{}, false
	}
	var m dto.Metric
	if mt.Write(&m) != nil || m.GetHistogram() == nil {
		return HistogramCounts{}, false
	}
	h := m.GetHistogram()
	out := HistogramCounts{Count: h.GetSampleCount()}
	for _, b := range h.GetBucket() {
		out.Bounds = append(out.Bounds, b.GetUpperBound())
		out.Counts = append(out.Counts, b.GetCumulativeCount())
	}
	return out, true
}
