// Package report streams the proxy's compact reports to the control plane
// (llmproxy.report.v1.ReportService): every interval, and at once when a circuit breaker
// changes state, what the proxy saw of each upstream (attempts, errors by kind, 429s,
// latency p50/p95, in flight, breaker state) and per model (requests, tokens).
//
// The request path is never involved: it only updates the atomics and Prometheus counters
// it updates anyway; the Reporter reads them on its own goroutine and computes deltas.
// Sections come from Sources, so features that count more (consumers, the response cache)
// add a Source without touching the Reporter.
//
// A report is made on schedule whether or not the control plane is reachable. One report
// waits for the stream; a newer one replaces it. A control plane that is down therefore
// loses reports, never traffic; the stream is reopened with jittered exponential backoff.
package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmproxy-go/llmproxy/controlplane/reportwire"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// Defaults of Options.
const (
	DefaultInterval   = 5 * time.Second
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
	// minTriggerGap is the least time between two reports sent for breaker changes: a burst
	// of transitions makes one report.
	minTriggerGap = 250 * time.Millisecond
)

// Source adds its section to each report. Collect is called from the Reporter's goroutine
// only, once per report, and must return quickly; it typically reads running totals and
// keeps the previous ones to report deltas.
type Source interface {
	Collect(r *reportv1.ProxyReport)
}

// SourceFunc adapts a func to Source.
type SourceFunc func(r *reportv1.ProxyReport)

// Collect calls f(r).
func (f SourceFunc) Collect(r *reportv1.ProxyReport) { f(r) }

// Options configures a Reporter.
type Options struct {
	// Conn reaches the control plane's gRPC port. Required.
	Conn grpc.ClientConnInterface
	// NodeID names this proxy, as on its ADS stream. Required.
	NodeID string
	// Token, when set, is sent as "authorization: Bearer <token>" (the ADS token).
	Token string
	// Interval between reports; zero selects DefaultInterval. It must lie within the
	// control plane's bounds (reportwire.MinInterval, MaxInterval).
	Interval time.Duration
	// Sources fill the reports, in order.
	Sources []Source
	// Revision returns the applied config revision; nil reports none.
	Revision func() string
	// Logger; nil discards.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the reconnect delay; zero selects the defaults.
	MinBackoff, MaxBackoff time.Duration
}

// Reporter makes and sends the reports. Create it with New, run it with Run; Trigger may
// be called from any goroutine.
type Reporter struct {
	opts    Options
	log     *slog.Logger
	trigger chan struct{}
	queue   chan *reportv1.ProxyReport // one report waiting for the stream
	// final is the sequence of the last report, set when Run's context ends; flushed is
	// closed once the control plane has it.
	final   atomic.Uint64
	flushed chan struct{}

	// Reporter goroutine only.
	seq  uint64
	last time.Time
}

// New checks opts and returns a Reporter.
func New(opts Options) (*Reporter, error) {
	if opts.Conn == nil || opts.NodeID == "" {
		return nil, errors.New("new reporter: Conn and NodeID are required")
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Interval < reportwire.MinInterval || opts.Interval > reportwire.MaxInterval {
		return nil, fmt.Errorf("new reporter: interval %s out of range [%s, %s]", opts.Interval, reportwire.MinInterval, reportwire.MaxInterval)
	}
	opts.MinBackoff = cmp.Or(opts.MinBackoff, DefaultMinBackoff)
	opts.MaxBackoff = cmp.Or(opts.MaxBackoff, DefaultMaxBackoff)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reporter{
		opts:    opts,
		log:     log,
		trigger: make(chan struct{}, 1),
		queue:   make(chan *reportv1.ProxyReport, 1),
		flushed: make(chan struct{}),
	}, nil
}

// Trigger asks for a report now (a breaker changed state). It never blocks; triggers that
// come while one is pending, or within 250 ms of the last triggered report, coalesce.
func (r *Reporter) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// FlushTimeout bounds how long Run waits, once its context ends, for the control plane to
// take the last report.
const FlushTimeout = 2 * time.Second

// Run makes reports until ctx ends and streams them to the control plane, reconnecting
// with backoff. When ctx ends it makes a last report (the traffic since the previous one),
// waits up to FlushTimeout for the control plane to take it, and returns nil. Cancel ctx
// after the proxy has drained, so that the last requests are counted.
func (r *Reporter) Run(ctx context.Context) error {
	sendCtx, stopSend := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSend()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.send(sendCtx)
	}()
	r.last = time.Now()
	tick := time.NewTicker(r.opts.Interval)
	defer tick.Stop()
	var lastTriggered time.Time
	var gap *time.Timer
	var gapC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if gap != nil {
				gap.Stop()
			}
			last := r.Collect(reportv1.Trigger_TRIGGER_INTERVAL)
			r.final.Store(last.GetSequence())
			r.offer(last)
			t := time.NewTimer(FlushTimeout)
			select {
			case <-r.flushed:
			case <-t.C:
				r.log.Warn("last report not delivered: control plane not reachable")
			}
			t.Stop()
			stopSend()
			<-done
			return nil
		case <-tick.C:
			r.offer(r.Collect(reportv1.Trigger_TRIGGER_INTERVAL))
		case <-r.trigger:
			if wait := minTriggerGap - time.Since(lastTriggered); wait > 0 {
				if gapC == nil {
					gap = time.NewTimer(wait)
					gapC = gap.C
				}
				continue
			}
			lastTriggered = time.Now()
			r.offer(r.Collect(reportv1.Trigger_TRIGGER_BREAKER_CHANGE))
		case <-gapC:
			gapC = nil
			lastTriggered = time.Now()
			r.offer(r.Collect(reportv1.Trigger_TRIGGER_BREAKER_CHANGE))
		}
	}
}

// Collect makes the next report: the deltas since the previous one. Run calls it; it is
// exported for tests and simulations that drive a Reporter by hand, and must not be called
// while Run runs.
func (r *Reporter) Collect(trigger reportv1.Trigger) *reportv1.ProxyReport {
	now := time.Now()
	r.seq++
	span := now.Sub(r.last)
	if r.last.IsZero() || span <= 0 {
		span = r.opts.Interval
	}
	rep := &reportv1.ProxyReport{
		NodeId:         r.opts.NodeID,
		Time:           timestamppb.New(now),
		Interval:       durationpb.New(span),
		Sequence:       r.seq,
		Trigger:        trigger,
		ReportInterval: durationpb.New(r.opts.Interval),
	}
	r.last = now
	if r.opts.Revision != nil {
		rep.Revision = r.opts.Revision()
	}
	for _, s := range r.opts.Sources {
		s.Collect(rep)
	}
	bound(rep)
	return rep
}

// offer queues rep for the stream, replacing a report still waiting (the control plane is
// unreachable or slow: the older one is lost).
func (r *Reporter) offer(rep *reportv1.ProxyReport) {
	for {
		select {
		case r.queue <- rep:
			return
		default:
		}
		select {
		case old := <-r.queue:
			r.log.Debug("report dropped: control plane not reachable", "sequence", old.GetSequence())
		default:
		}
	}
}

// send keeps a stream open and writes queued reports to it until ctx ends.
func (r *Reporter) send(ctx context.Context) {
	backoff := r.opts.MinBackoff
	client := reportv1.NewReportServiceClient(r.opts.Conn)
	for {
		sent, err := r.session(ctx, client)
		if ctx.Err() != nil {
			return
		}
		if sent > 0 {
			backoff = r.opts.MinBackoff
		}
		delay := backoff/2 + rand.N(backoff/2+1)
		r.log.Warn("report stream ended; reconnecting", "err", err, "sent", sent, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, r.opts.MaxBackoff)
	}
}

// session runs one stream until a send fails or ctx ends; it returns how many reports it
// sent.
func (r *Reporter) session(ctx context.Context, client reportv1.ReportServiceClient) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.opts.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.opts.Token)
	}
	stream, err := client.StreamReports(ctx)
	if err != nil {
		return 0, fmt.Errorf("open report stream: %w", err)
	}
	sent := 0
	for {
		select {
		case <-ctx.Done():
			return sent, nil
		case rep := <-r.queue:
			if err := stream.Send(rep); err != nil {
				if errors.Is(err, io.EOF) {
					_, err = stream.CloseAndRecv() // the stream's real status
				}
				return sent, fmt.Errorf("send report: %w", err)
			}
			if sent == 0 {
				r.log.Info("reporting to the control plane", "interval", r.opts.Interval.String())
			}
			sent++
			if rep.GetSequence() == r.final.Load() {
				// The last report: close the stream and wait for the control plane's answer,
				// which says it has read everything.
				if _, err := stream.CloseAndRecv(); err != nil {
					return sent, fmt.Errorf("close report stream: %w", err)
				}
				close(r.flushed)
				<-ctx.Done()
				return sent, nil
			}
		}
	}
}

// bound applies the report size bounds: the upstreams with an open or half-open breaker
// and the busiest ones are kept; models and consumers beyond the bound are folded into
// telemetry.UsageOther so that no traffic goes uncounted.
func bound(rep *reportv1.ProxyReport) {
	if n := len(rep.Upstreams); n > reportwire.MaxUpstreams {
		slices.SortStableFunc(rep.Upstreams, func(a, b *reportv1.UpstreamReport) int {
			return cmp.Or(
				cmp.Compare(rank(b), rank(a)),
				cmp.Compare(b.GetRequests(), a.GetRequests()),
			)
		})
		rep.TruncatedUpstreams += uint32(n - reportwire.MaxUpstreams)
		rep.Upstreams = rep.Upstreams[:reportwire.MaxUpstreams]
	}
	var dropped int
	rep.Models, dropped = foldUsage(rep.Models, reportwire.MaxModels)
	rep.TruncatedModels += uint32(dropped)
	rep.Consumers, dropped = foldUsage(rep.Consumers, reportwire.MaxConsumers)
	rep.TruncatedConsumers += uint32(dropped)
	if len(rep.Caches) > reportwire.MaxCaches {
		rep.Caches = rep.Caches[:reportwire.MaxCaches]
	}
}

// rank orders breaker states for truncation: an unhealthy upstream is kept first.
func rank(u *reportv1.UpstreamReport) int {
	if s := u.GetBreaker(); s == reportv1.BreakerState_BREAKER_STATE_OPEN || s == reportv1.BreakerState_BREAKER_STATE_HALF_OPEN {
		return 1
	}
	return 0
}

// foldUsage keeps the busiest most-1 entries and sums the rest into one UsageOther entry.
// It returns the entries and how many were folded.
func foldUsage(in []*reportv1.UsageCounts, most int) ([]*reportv1.UsageCounts, int) {
	if len(in) <= most {
		return in, 0
	}
	other := &reportv1.UsageCounts{Name: telemetry.UsageOther}
	named := make([]*reportv1.UsageCounts, 0, len(in))
	var rest []*reportv1.UsageCounts
	for _, u := range in {
		if u.GetName() == telemetry.UsageOther {
			rest = append(rest, u)
			continue
		}
		named = append(named, u)
	}
	slices.SortStableFunc(named, func(a, b *reportv1.UsageCounts) int {
		return cmp.Compare(b.GetRequests(), a.GetRequests())
	})
	keep := named[:most-1]
	rest = append(rest, named[most-1:]...)
	for _, u := range rest {
		other.Requests += u.GetRequests()
		other.Errors += u.GetErrors()
		other.PromptTokens += u.GetPromptTokens()
		other.CompletionTokens += u.GetCompletionTokens()
	}
	return append(keep, other), len(named) - (most - 1)
}
