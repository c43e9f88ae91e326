package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// minTopInterval is the shortest --interval of top: the proxies report every few seconds,
// so redrawing faster only loads the control plane.
const minTopInterval = 100 * time.Millisecond

// healthCalls bounds the GetUpstreamHealth calls one frame of top has in flight at once.
const healthCalls = 8

// ANSI sequences of a redraw on a terminal: cursor home, then clear the screen.
const clearScreen = "\x1b[H\x1b[2J"

func newTopCommand(c *cli) *cobra.Command {
	var (
		interval time.Duration
		once     bool
	)
	cmd := &cobra.Command{
		Use:   "top [--interval DURATION] [--once [-o json|yaml]]",
		Short: "Show the fleet live: proxies, their config and health, every upstream's traffic",
		Long: `Show the fleet as the proxies' reports describe it, redrawn every --interval until
interrupted (Ctrl-C). On a terminal the screen is cleared before each frame; otherwise
frames follow each other, a blank line apart. --once prints one frame and exits, as a
table or, with -o json|yaml, as data for scripts.

Proxies: the revision each applied (REVISION), whether that is the revision the control
plane serves (CONFIG: ACK; NACK when it refused a later one; pending while it has not
answered; offline when its stream is closed), the age of its last report, its health
(ok; degraded, naming the upstreams whose breaker is not closed; stale after three
report intervals without a report; unknown before the first), and its upstream attempts
per second, their error rate and those in flight over its last report interval.

Upstreams, over the last report interval of every proxy with a fresh report: the fleet
verdict (healthy, degraded: breaker open or half-open on some proxies, down: on all of
them, unknown: no fresh report), attempts per second, error rate, answers with status 429,
latency to the response headers (P50 and P95: the highest of any proxy, since percentiles
of different proxies do not add up), attempts in flight, and on how many of the reporting
proxies the breaker is open (k/n, naming them).

Each frame reads ListProxies, ListUpstreams and GetUpstreamHealth for every upstream,
the calls behind GET /api/v1/proxies and GET /api/v1/upstreams/{name}/health.`,
		Example: `  llmproxyctl top
  llmproxyctl top --interval 5s
  llmproxyctl top --once -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "redraw every `DURATION`")
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit")
	out := addOutputFlag(cmd, "table", "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if interval < minTopInterval {
			return usagef("--interval %s: want at least %s", interval, minTopInterval)
		}
		if out.value != "table" && !once {
			return usagef("-o %s needs --once (the live view is a table)", out.value)
		}
		client, dialCtx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		if once {
			f, err := fetchTopFrame(dialCtx, client, time.Now)
			if err != nil {
				return err
			}
			if out.value != "table" {
				return c.printValue(f, out.value)
			}
			return writeTopTable(c.stdout, f, 0)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		md, _ := metadata.FromOutgoingContext(dialCtx) // the token, for every frame's calls
		return c.topLive(metadata.NewOutgoingContext(ctx, md), client, interval, isTerminal(c.stdout))
	}
	return cmd
}

// topLive draws a frame every interval until ctx ends, clearing the screen before each
// when redraw is set. Each frame's calls have --timeout. A control plane that is
// unreachable or slow is shown in the frame and tried again at the next one; any other
// error ends the view.
func (c *cli) topLive(ctx context.Context, client adminv1.AdminServiceClient, interval time.Duration, redraw bool) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var buf bytes.Buffer
	for first := true; ; first = false {
		fctx, cancel := context.WithTimeout(ctx, c.timeout)
		f, err := fetchTopFrame(fctx, client, time.Now)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		buf.Reset()
		switch {
		case redraw:
			buf.WriteString(clearScreen)
		case !first:
			buf.WriteByte('\n')
		}
		switch {
		case err == nil:
			if err := writeTopTable(&buf, f, interval); err != nil {
				return err
			}
		case transient(err):
			fmt.Fprintf(&buf, "%s  %s; trying again every %s\n", time.Now().Format(time.TimeOnly), messages(err)[0], interval)
		default:
			return err
		}
		if _, err := c.stdout.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("write frame: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// transient reports whether err may pass by itself: the control plane restarting,
// unreachable for a moment, or slow.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// isTerminal reports whether w is a terminal (a character device), where top redraws in
// place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// topFrame is one frame of top: what its tables show, and what -o json|yaml prints.
type topFrame struct {
	// When the frame was read.
	Time time.Time `json:"time"`
	// The revision the control plane serves.
	Revision  uint64        `json:"revision"`
	Proxies   []topProxy    `json:"proxies"`
	Upstreams []topUpstream `json:"upstreams"`
}

// topProxy is one proxy's row.
type topProxy struct {
	NodeID        string `json:"node_id"`
	Connected     bool   `json:"connected"`
	AckedRevision uint64 `json:"acked_revision"`
	// "ACK", "NACK", "pending" or "offline"; see configState.
	Config           string `json:"config"`
	LastNackRevision uint64 `json:"last_nack_revision,omitempty"`
	LastNackError    string `json:"last_nack_error,omitempty"`
	// Absent before the proxy's first report.
	LastReportTime   *time.Time `json:"last_report_time,omitempty"`
	ReportAgeSeconds *float64   `json:"report_age_seconds,omitempty"`
	// "ok", "degraded", "stale" or "unknown" (adminv1.ProxyHealth.status).
	Health             string   `json:"health"`
	UnhealthyUpstreams []string `json:"unhealthy_upstreams,omitempty"`
	Upstreams          uint32   `json:"upstreams"`
	RequestsPerSecond  float64  `json:"requests_per_second"`
	ErrorRate          float64  `json:"error_rate"`
	InFlight           uint32   `json:"in_flight"`
}

// topUpstream is one upstream's row: the fleet's view of it, summed over the proxies with
// a fresh report (Reporting of them); its latencies are the highest of any of them that
// had traffic, since percentiles of different proxies do not add up.
type topUpstream struct {
	Name string `json:"name"`
	// "healthy", "degraded", "down" or "unknown", and why (adminv1.UpstreamHealth).
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	topTraffic
	// Proxies with a fresh report of the upstream, and those of them whose breaker is open
	// or half-open.
	Reporting       int `json:"reporting"`
	BreakerOpen     int `json:"breaker_open"`
	BreakerHalfOpen int `json:"breaker_half_open"`
	// Every proxy's view, sorted by node id; stale ones count in none of the above.
	Proxies []topView `json:"proxies"`
}

// topView is one proxy's view of an upstream, from its last report.
type topView struct {
	NodeID string `json:"node_id"`
	// "closed", "open" or "half_open".
	Breaker    string    `json:"breaker"`
	Stale      bool      `json:"stale"`
	ReportTime time.Time `json:"report_time"`
	topTraffic
	// Since the proxy started, as its /metrics counts them.
	TotalRequests uint64 `json:"total_requests"`
	TotalErrors   uint64 `json:"total_errors"`
}

// topTraffic is an upstream's traffic over a report interval: attempts per second, the
// share of them that failed, answers with status 429, latency to the response headers,
// attempts in flight at the report.
type topTraffic struct {
	RequestsPerSecond float64 `json:"requests_per_second"`
	ErrorRate         float64 `json:"error_rate"`
	RateLimited       uint64  `json:"rate_limited"`
	LatencyP50Seconds float64 `json:"latency_p50_seconds"`
	LatencyP95Seconds float64 `json:"latency_p95_seconds"`
	InFlight          uint32  `json:"in_flight"`
}

// fetchTopFrame reads one frame: the fleet status, then the health of every configured
// upstream (one GetUpstreamHealth each, at most healthCalls at once). An upstream deleted
// between the calls is left out.
func fetchTopFrame(ctx context.Context, client adminv1.AdminServiceClient, now func() time.Time) (topFrame, error) {
	proxies, err := client.ListProxies(ctx, &adminv1.ListProxiesRequest{})
	if err != nil {
		return topFrame{}, err
	}
	ups, err := client.ListUpstreams(ctx, &adminv1.ListUpstreamsRequest{})
	if err != nil {
		return topFrame{}, err
	}
	health := make([]*adminv1.UpstreamHealth, len(ups.GetUpstreams()))
	errs := make([]error, len(health))
	slots := make(chan struct{}, healthCalls)
	var wg sync.WaitGroup
	for i, u := range ups.GetUpstreams() {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			h, err := client.GetUpstreamHealth(ctx, &adminv1.GetUpstreamHealthRequest{Name: u.GetName()})
			if status.Code(err) != codes.NotFound {
				health[i], errs[i] = h, err
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return topFrame{}, err
		}
	}
	return buildTopFrame(now(), proxies, health), nil
}

// buildTopFrame makes a frame at now from the answers of ListProxies and
// GetUpstreamHealth; nil healths are skipped.
func buildTopFrame(now time.Time, proxies *adminv1.ListProxiesResponse, health []*adminv1.UpstreamHealth) topFrame {
	f := topFrame{Time: now, Revision: proxies.GetRevision(), Proxies: []topProxy{}, Upstreams: []topUpstream{}}
	for _, p := range proxies.GetProxies() {
		h := p.GetHealth()
		row := topProxy{
			NodeID:             p.GetNodeId(),
			Connected:          p.GetConnected(),
			AckedRevision:      p.GetAckedRevision(),
			Config:             configState(p, f.Revision),
			LastNackRevision:   p.GetLastNackRevision(),
			LastNackError:      p.GetLastNackError(),
			Health:             h.GetStatus(),
			UnhealthyUpstreams: h.GetUnhealthyUpstreams(),
			Upstreams:          h.GetUpstreams(),
			RequestsPerSecond:  h.GetRequestsPerSecond(),
			ErrorRate:          h.GetErrorRate(),
			InFlight:           h.GetInFlight(),
		}
		if row.Health == "" {
			row.Health = "unknown"
		}
		if ts := p.GetLastReportTime(); ts != nil {
			t := ts.AsTime()
			age := math.Round(now.Sub(t).Seconds()*1000) / 1000
			row.LastReportTime, row.ReportAgeSeconds = &t, &age
		}
		f.Proxies = append(f.Proxies, row)
	}
	for _, h := range health {
		if h != nil {
			f.Upstreams = append(f.Upstreams, upstreamRow(h))
		}
	}
	return f
}

// configState says where a proxy stands with the served revision: "offline" (its ADS
// stream is closed), "NACK" (it refused a revision newer than the last it applied), "ACK"
// (it applied the served revision) or "pending" (it has not answered it yet).
func configState(p *adminv1.ProxyStatus, served uint64) string {
	switch {
	case !p.GetConnected():
		return "offline"
	case p.GetLastNackRevision() > p.GetAckedRevision():
		return "NACK"
	case p.GetAckedRevision() >= served:
		return "ACK"
	}
	return "pending"
}

// upstreamRow sums one upstream's health over the proxies with a fresh report.
func upstreamRow(h *adminv1.UpstreamHealth) topUpstream {
	row := topUpstream{
		Name:    h.GetName(),
		Verdict: h.GetVerdict(),
		Reason:  h.GetReason(),
		topTraffic: topTraffic{
			RequestsPerSecond: h.GetRequestsPerSecond(),
			ErrorRate:         h.GetErrorRate(),
			InFlight:          h.GetInFlight(),
		},
		Proxies: []topView{},
	}
	for _, v := range h.GetProxies() {
		view := topView{
			NodeID:     v.GetNodeId(),
			Breaker:    v.GetBreaker(),
			Stale:      v.GetStale(),
			ReportTime: v.GetReportTime().AsTime(),
			topTraffic: topTraffic{
				RateLimited:       v.GetRateLimited(),
				LatencyP50Seconds: v.GetLatencyP50Seconds(),
				LatencyP95Seconds: v.GetLatencyP95Seconds(),
				InFlight:          v.GetInFlight(),
			},
			TotalRequests: v.GetTotalRequests(),
			TotalErrors:   v.GetTotalErrors(),
		}
		if d := v.GetInterval().AsDuration(); d > 0 {
			view.RequestsPerSecond = float64(v.GetRequests()) / d.Seconds()
		}
		if v.GetRequests() > 0 {
			view.ErrorRate = float64(v.GetErrors()) / float64(v.GetRequests())
		}
		row.Proxies = append(row.Proxies, view)
		if view.Stale {
			continue
		}
		row.Reporting++
		row.RateLimited += view.RateLimited
		switch view.Breaker {
		case "open":
			row.BreakerOpen++
		case "half_open":
			row.BreakerHalfOpen++
		}
		if v.GetRequests() > 0 {
			row.LatencyP50Seconds = max(row.LatencyP50Seconds, view.LatencyP50Seconds)
			row.LatencyP95Seconds = max(row.LatencyP95Seconds, view.LatencyP95Seconds)
		}
	}
	return row
}

// writeTopTable writes f as two tables, proxies then upstreams, under a header line that
// names the interval when it is not 0 (the live view).
func writeTopTable(w io.Writer, f topFrame, interval time.Duration) error {
	fmt.Fprintf(w, "%s  revision %d, %s, %s", f.Time.Local().Format(time.TimeOnly), f.Revision,
		plural(len(f.Proxies), "proxy", "proxies"), plural(len(f.Upstreams), "upstream", "upstreams"))
	if interval > 0 {
		fmt.Fprintf(w, "; every %s, Ctrl-C quits", interval)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(f.Proxies) == 0 {
		fmt.Fprintln(tw, "no proxy has connected to this control plane")
	} else {
		fmt.Fprintln(tw, "NODE\tREVISION\tCONFIG\tLAST REPORT\tHEALTH\tREQ/S\tERR%\tIN-FLIGHT")
	}
	for _, p := range f.Proxies {
		cfg := p.Config
		if cfg == "NACK" {
			cfg = fmt.Sprintf("NACK %d", p.LastNackRevision)
		}
		health := p.Health
		if len(p.UnhealthyUpstreams) > 0 {
			health += ": " + strings.Join(p.UnhealthyUpstreams, ", ")
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%.1f\t%s\t%d\n", p.NodeID, p.AckedRevision, cfg, ageText(p.ReportAgeSeconds),
			health, p.RequestsPerSecond, percent(p.ErrorRate), p.InFlight)
	}
	fmt.Fprintln(tw)
	if len(f.Upstreams) == 0 {
		fmt.Fprintln(tw, "no upstream is configured")
	} else {
		fmt.Fprintln(tw, "UPSTREAM\tVERDICT\tREQ/S\tERR%\t429s\tP50\tP95\tIN-FLIGHT\tBREAKER OPEN")
	}
	for _, u := range f.Upstreams {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%d\t%s\t%s\t%d\t%s\n", u.Name, u.Verdict, u.RequestsPerSecond, percent(u.ErrorRate),
			u.RateLimited, latencyText(u.LatencyP50Seconds), latencyText(u.LatencyP95Seconds), u.InFlight, breakerText(u))
	}
	return tw.Flush()
}

// breakerText is the BREAKER OPEN cell: "k/n" of the reporting proxies, then the first few
// of the k, "(half-open)" after those half-open; "-" when no proxy reports the upstream.
func breakerText(u topUpstream) string {
	if u.Reporting == 0 {
		return "-"
	}
	const show = 3
	s := fmt.Sprintf("%d/%d", u.BreakerOpen+u.BreakerHalfOpen, u.Reporting)
	var names []string
	for _, v := range u.Proxies {
		if v.Stale || v.Breaker == "closed" {
			continue
		}
		n := v.NodeID
		if v.Breaker == "half_open" {
			n += " (half-open)"
		}
		names = append(names, n)
	}
	switch {
	case len(names) > show:
		s += ": " + strings.Join(names[:show], ", ") + fmt.Sprintf(" and %d more", len(names)-show)
	case len(names) > 0:
		s += ": " + strings.Join(names, ", ")
	}
	return s
}

// ageText is a report's age for a table cell: tenths of a second under 10s, whole seconds
// above; "-" before the first report.
func ageText(seconds *float64) string {
	if seconds == nil {
		return "-"
	}
	if *seconds < 10 {
		return fmt.Sprintf("%.1fs ago", *seconds)
	}
	return time.Duration(*seconds*float64(time.Second)).Round(time.Second).String() + " ago"
}

// latencyText is a latency in seconds for a table cell, e.g. "12ms" or "1.2s"; "-" when
// there is none.
func latencyText(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// percent writes a ratio as a percentage with one decimal.
func percent(r float64) string { return fmt.Sprintf("%.1f%%", 100*r) }

// plural is "1 proxy" or "3 proxies".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
