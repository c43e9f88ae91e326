// Package fleet collects the reports proxies stream to the control plane
// (llmproxy.report.v1.ReportService) and answers the fleet views built from them: each
// proxy's health summary beside its ADS status, every proxy's view of one upstream with a
// fleet verdict, and usage by consumer, model or upstream.
//
// The latest report of each proxy is kept in memory (per control-plane replica, like the
// ADS status: a replica knows the proxies connected to it). Traffic counts are also summed
// per minute and per consumer, model and upstream, and added to the store's usage rollups
// every FlushInterval and before every usage query, so usage survives a restart and every
// replica sharing a PostgreSQL database answers the same figures. A control plane that
// stops loses at most the counts of its last FlushInterval.
package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/reportwire"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// Defaults of Options.
const (
	DefaultFlushInterval = 10 * time.Second
	DefaultRetention     = 31 * 24 * time.Hour
	DefaultForgetAfter   = 24 * time.Hour
	// maxPendingRows bounds the rollup rows waiting for the store; when the store is
	// unreachable for long, newer counts are dropped (and logged) beyond it.
	maxPendingRows = 100_000
)

// StaleIntervals is how many of its report intervals a proxy's last report stays fresh.
// A proxy without a fresh report (or without an open report stream) is listed but does not
// count in a verdict.
const StaleIntervals = 3

// StatusSource is the ADS side of the fleet status (controlplane/xds.Server).
type StatusSource interface {
	// Proxies returns the ADS status of every known proxy.
	Proxies() []*adminv1.ProxyStatus
	// Changed returns a channel closed at the next change of any proxy's ADS status.
	Changed() <-chan struct{}
}

// Options configures Reports.
type Options struct {
	// Store keeps the usage rollups. Required.
	Store store.UsageStore
	// Status lists the proxies known from ADS; Proxies adds report data to it. Nil: Proxies
	// lists none.
	Status StatusSource
	// Authorize checks a report stream's credentials (the ADS check, so both follow the same
	// rule); it returns a status error. Nil accepts every stream.
	Authorize func(ctx context.Context) error
	// AuthorizeNode checks that a report stream may speak for the node its first report
	// names (the ADS rule: a client certificate must name it); it returns a status error.
	// Nil accepts every node.
	AuthorizeNode func(ctx context.Context, node string) error
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// FlushInterval is how often rollups are added to the store; zero selects
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// Retention is how long rollups are kept; zero selects DefaultRetention.
	Retention time.Duration
	// ForgetAfter is how long the last report of a proxy gone silent is kept; zero selects
	// DefaultForgetAfter.
	ForgetAfter time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Reports is the control plane's side of proxy reports. It serves ReportService, keeps the
// latest report per proxy, and answers the fleet views (it implements admin.FleetWatcher,
// passing its Status's change signal through, and admin.FleetReports). Its methods are safe
// for concurrent use.
type Reports struct {
	reportv1.UnimplementedReportServiceServer

	opts    Options
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	done    <-chan struct{} // streams end when it is closed
	streams sync.WaitGroup  // running StreamReports handlers

	mu      sync.Mutex
	proxies map[string]*proxyState
	pending map[rollupKey]*store.UsageCounts
	recent  map[string]*recentRing // by upstream name (recent.go)

	flushMu sync.Mutex // one flush at a time
}

// proxyState is what is known of one proxy's reports.
type proxyState struct {
	report   *reportv1.ProxyReport
	received time.Time
	streams  int // open report streams
	// byName indexes report.Upstreams, built on first use after each report.
	byName map[string]*reportv1.UpstreamReport
}

// New returns Reports whose report streams end when ctx is done. It fails when Store is
// nil or the metrics cannot be registered.
func New(ctx context.Context, opts Options) (*Reports, error) {
	if opts.Store == nil {
		return nil, errors.New("new fleet reports: Store is required")
	}
	opts.FlushInterval = cmp.Or(opts.FlushInterval, DefaultFlushInterval)
	opts.Retention = cmp.Or(opts.Retention, DefaultRetention)
	opts.ForgetAfter = cmp.Or(opts.ForgetAfter, DefaultForgetAfter)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new fleet reports: %w", err)
	}
	return &Reports{
		opts:    opts,
		log:     log,
		metrics: m,
		now:     opts.Now,
		done:    ctx.Done(),
		proxies: map[string]*proxyState{},
		pending: map[rollupKey]*store.UsageCounts{},
		recent:  map[string]*recentRing{},
	}, nil
}

// Register adds ReportService to gs. Call it before gs.Serve.
func (r *Reports) Register(gs *grpc.Server) { reportv1.RegisterReportServiceServer(gs, r) }

// Run adds the rollups to the store every FlushInterval and prunes those older than
// Retention every hour. When ctx ends (give it the context given to New, so the report
// streams end too) it waits up to 2 s for the streams to end, flushes once more and returns
// nil.
func (r *Reports) Run(ctx context.Context) error {
	tick := time.NewTicker(r.opts.FlushInterval)
	defer tick.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			ended := make(chan struct{})
			go func() { r.streams.Wait(); close(ended) }()
			select {
			case <-ended:
			case <-time.After(2 * time.Second):
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.Flush(fctx); err != nil {
				r.log.Warn("last usage flush failed; counts lost", "err", err)
			}
			return nil
		case <-tick.C:
			if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("usage flush failed; retrying", "err", err)
			}
			if now := r.now(); now.Sub(lastPrune) >= time.Hour {
				lastPrune = now
				if err := r.opts.Store.PruneUsage(ctx, now.Add(-r.opts.Retention)); err != nil && ctx.Err() == nil {
					r.log.Warn("usage prune failed", "err", err)
				}
			}
		}
	}
}

// errShuttingDown ends the report streams when the control plane stops; proxies
// reconnect.
var errShuttingDown = status.Error(codes.Unavailable, "control plane shutting down")

// received is one Recv result.
type received struct {
	rep *reportv1.ProxyReport
	err error
}

// StreamReports receives one proxy's report stream until the proxy closes it, a report is
// invalid, or the control plane stops.
func (r *Reports) StreamReports(stream reportv1.ReportService_StreamReportsServer) error {
	r.streams.Add(1)
	defer r.streams.Done()
	ctx := stream.Context()
	if r.opts.Authorize != nil {
		if err := r.opts.Authorize(ctx); err != nil {
			return err
		}
	}
	select {
	case <-r.done:
		return errShuttingDown
	default:
	}
	// Recv runs on its own goroutine so that the stream ends when the control plane stops;
	// returning from the handler cancels the stream, which ends that goroutine.
	in := make(chan received)
	go func() {
		for {
			rep, err := stream.Recv()
			select {
			case in <- received{rep, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	var node string
	var count uint64
	defer func() {
		if node != "" {
			r.closeStream(node)
		}
	}()
	for {
		var rep *reportv1.ProxyReport
		var err error
		select {
		case <-r.done:
			return errShuttingDown
		case m := <-in:
			rep, err = m.rep, m.err
		}
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&reportv1.StreamReportsResponse{Received: count})
		}
		if err != nil {
			return err
		}
		if err := reportwire.Check(rep); err != nil {
			r.metrics.rejected.Inc()
			msg := strings.ReplaceAll(err.Error(), "\n", "; ")
			r.log.Warn("proxy report refused", "node_id", rep.GetNodeId(), "address", addr, "err", msg)
			return status.Error(codes.InvalidArgument, "invalid report: "+msg)
		}
		switch {
		case node == "":
			if r.opts.AuthorizeNode != nil {
				if err := r.opts.AuthorizeNode(ctx, rep.GetNodeId()); err != nil {
					r.metrics.rejected.Inc()
					return err
				}
			}
			node = rep.GetNodeId()
			r.openStream(node)
			r.log.Debug("proxy reporting", "node_id", node, "address", addr)
		case rep.GetNodeId() != node:
			r.metrics.rejected.Inc()
			return status.Errorf(codes.InvalidArgument, "invalid report: node_id: %q, but this stream reports %q", rep.GetNodeId(), node)
		}
		r.ingest(rep)
		count++
	}
}

func (r *Reports) openStream(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.proxies[node]
	if st == nil {
		st = &proxyState{}
		r.proxies[node] = st
	}
	st.streams++
	r.metrics.streams.Inc()
}

func (r *Reports) closeStream(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.proxies[node]; st != nil {
		st.streams--
	}
	r.metrics.streams.Dec()
}

// ingest keeps rep as its proxy's latest report and adds its counts to the pending
// rollups of the current minute and to its upstreams' recent history.
func (r *Reports) ingest(rep *reportv1.ProxyReport) {
	now := r.now()
	minute := minuteStart(now)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics.received.Inc()
	st := r.proxies[rep.GetNodeId()]
	if st == nil { // Ingest outside a stream (tests).
		st = &proxyState{}
		r.proxies[rep.GetNodeId()] = st
	}
	st.report, st.received, st.byName = rep, now, nil
	r.addRecentLocked(minute, rep)
	for _, u := range rep.GetUpstreams() {
		e := u.GetErrors()
		r.addLocked(rollupKey{store.UsageByUpstream, minute, u.GetName()}, store.UsageCounts{
			Requests:         u.GetRequests(),
			Errors:           e.GetConnectError() + e.GetTimeout() + e.GetStatus_5Xx() + e.GetStreamBroken() + e.GetOther(),
			PromptTokens:     u.GetPromptTokens(),
			CompletionTokens: u.GetCompletionTokens(),
		})
	}
	for _, m := range rep.GetModels() {
		r.addLocked(rollupKey{store.UsageByModel, minute, m.GetName()}, usageCounts(m))
	}
	for _, c := range rep.GetConsumers() {
		r.addLocked(rollupKey{store.UsageByConsumer, minute, c.GetName()}, usageCounts(c))
	}
}

func usageCounts(u *reportv1.UsageCounts) store.UsageCounts {
	return store.UsageCounts{
		Requests:         u.GetRequests(),
		Errors:           u.GetErrors(),
		PromptTokens:     u.GetPromptTokens(),
		CompletionTokens: u.GetCompletionTokens(),
	}
}

// addLocked adds c to the pending rollup of k; zero counts are skipped. r.mu is held.
func (r *Reports) addLocked(k rollupKey, c store.UsageCounts) {
	if c == (store.UsageCounts{}) {
		return
	}
	p := r.pending[k]
	if p == nil {
		if len(r.pending) >= maxPendingRows {
			r.metrics.dropped.Inc()
			return
		}
		p = &store.UsageCounts{}
		r.pending[k] = p
	}
	p.Add(c)
}

// metrics are the control plane's report metrics.
type metrics struct {
	received, rejected, dropped prometheus.Counter
	streams                     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmproxy_controlplane_reports_received_total",
			Help: "Proxy reports received.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmproxy_controlplane_reports_rejected_total",
			Help: "Proxy reports refused as invalid (the stream is ended).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmproxy_controlplane_usage_rows_dropped_total",
			Help: "Usage rollup rows dropped because too many were waiting for the store.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmproxy_controlplane_report_streams",
			Help: "Open proxy report streams.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.received, m.rejected, m.dropped, m.streams} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}
