package xds

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the control plane's xDS metrics.
type metrics struct {
	connected   prometheus.Gauge
	version     prometheus.Gauge
	pushLatency prometheus.Histogram
	acks        *prometheus.CounterVec
	nacks       *prometheus.CounterVec
	refused     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmproxy_controlplane_connected_proxies",
			Help: "Proxies (distinct node ids) with an open ADS stream.",
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmproxy_controlplane_snapshot_version",
			Help: "Store revision of the snapshot being served.",
		}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llmproxy_controlplane_push_latency_seconds",
			Help:    "Time from the store's change notification to the snapshot handed to every open stream.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmproxy_controlplane_xds_acks_total",
			Help: "ACKs received from proxies, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmproxy_controlplane_xds_nacks_total",
			Help: "NACKs (refused resources or revisions) received from proxies, by resource type.",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmproxy_controlplane_xds_refused_streams_total",
			Help: "Streams from proxies (ADS and reports) refused, by reason: a missing or invalid bearer token, no client certificate (--client-ca), a node id the client certificate does not name.",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.connected, m.version, m.pushLatency, m.acks, m.nacks, m.refused} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}
