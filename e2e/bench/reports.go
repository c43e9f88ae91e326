package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
	"github.com/llmproxy-go/llmproxy/proxy/report"
)

func init() { ReportsFunc = Reports }

const (
	reportUpstreams = 10
	reportModels    = 5
)

// reportsConfig is a small config: reportUpstreams upstreams in one group.
func reportsConfig() string {
	var b strings.Builder
	b.WriteString("http_server:\n  forwards:\n    - name: bench\n      address: 127.0.0.1\n      port: 3999\n      default_group: g\nupstreams:\n")
	for i := range reportUpstreams {
		fmt.Fprintf(&b, "  - name: u%02d\n    url: http://127.0.0.1:%d\n", i, 21000+i)
	}
	b.WriteString("upstream_groups:\n  - name: g\n    upstreams:\n")
	for i := range reportUpstreams {
		fmt.Fprintf(&b, "      - name: u%02d\n", i)
	}
	return b.String()
}

// simTraffic is a simulated proxy's report source: every report, each upstream and model
// gets a few requests and tokens, which it also adds to the fleet-wide total.
type simTraffic struct {
	rng   *rand.Rand
	total *atomic.Uint64 // model requests reported by every simulated proxy
}

func (s *simTraffic) Collect(r *reportv1.ProxyReport) {
	for i := range reportUpstreams {
		n := uint64(s.rng.IntN(50))
		r.Upstreams = append(r.Upstreams, &reportv1.UpstreamReport{
			Name:              fmt.Sprintf("u%02d", i),
			Requests:          n,
			Errors:            &reportv1.ErrorCounts{Status_5Xx: uint64(s.rng.IntN(2))},
			LatencyP50Seconds: 0.2 + s.rng.Float64()/10,
			LatencyP95Seconds: 0.8 + s.rng.Float64()/5,
			InFlight:          uint32(s.rng.IntN(8)),
			Breaker:           reportv1.BreakerState_BREAKER_STATE_CLOSED,
			PromptTokens:      n * 400,
			CompletionTokens:  n * 120,
			TotalRequests:     n,
		})
	}
	for i := range reportModels {
		n := uint64(s.rng.IntN(50))
		s.total.Add(n)
		r.Models = append(r.Models, &reportv1.UsageCounts{
			Name: fmt.Sprintf("model-%d", i), Requests: n, PromptTokens: n * 400, CompletionTokens: n * 120,
		})
	}
}

// Reports starts a control plane and n simulated proxies, each a real report.Reporter on
// its own connection with a synthetic source (reportUpstreams upstreams, reportModels
// models), reporting every o.ReportEvery with their first reports spread over one interval.
// After one interval of warm-up it measures the control plane's CPU over o.ReportWindow.
// At the end it checks that usage by model adds up to what the proxies reported.
func Reports(ctx context.Context, o Options, n int) (ReportsRow, error) {
	every, window := o.ReportEvery, o.ReportWindow
	if every <= 0 {
		every = report.DefaultInterval
	}
	if window <= 0 {
		window = time.Minute
	}
	row := ReportsRow{Proxies: n, IntervalSec: every.Seconds(), Upstreams: reportUpstreams, Models: reportModels, WindowSec: window.Seconds()}
	cp, grpcAddr, api, err := startControlPlane(ctx, o, "reports-", reportsConfig())
	if err != nil {
		return row, err
	}
	defer cp.Stop()

	var total atomic.Uint64
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for i := range n {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return row, err
		}
		rep, err := report.New(report.Options{
			Conn: conn, NodeID: fmt.Sprintf("sim-%04d", i), Interval: every,
			Sources:  []report.Source{&simTraffic{rng: rand.New(rand.NewPCG(uint64(i), 1)), total: &total}},
			Revision: func() string { return "1" },
		})
		if err != nil {
			conn.Close()
			return row, err
		}
		wg.Go(func() {
			defer conn.Close()
			// Spread the first reports over one interval, as a fleet started over time is.
			select {
			case <-time.After(rand.N(every)):
			case <-sctx.Done():
				return
			}
			_ = rep.Run(sctx)
		})
	}

	// Warm up: every simulated proxy has reported at least once.
	deadline := time.Now().Add(2*every + 30*time.Second)
	for {
		got, err := metricValue(api, "llmproxy_controlplane_reports_received_total")
		if err == nil && got >= float64(n) {
			break
		}
		if time.Now().After(deadline) {
			return row, fmt.Errorf("warm-up: %v reports of %d proxies received (%v)", got, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	recv0, _ := metricValue(api, "llmproxy_controlplane_reports_received_total")
	cpu0, _ := CPUSeconds(cp.Pid())
	t0 := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return row, ctx.Err()
	}
	cpu1, _ := CPUSeconds(cp.Pid())
	elapsed := time.Since(t0)
	recv1, _ := metricValue(api, "llmproxy_controlplane_reports_received_total")
	_, peak, _ := Memory(cp.Pid())
	row.Received = int(recv1 - recv0)
	row.ReportsPerSec = (recv1 - recv0) / elapsed.Seconds()
	row.CPUPercent = (cpu1 - cpu0) / elapsed.Seconds() * 100
	row.CPPeakRSS = float64(peak) / (1 << 20)

	// Stop the proxies (each flushes its last report), then compare usage with what they sent.
	stop()
	wg.Wait()
	used, err := usageRequests(api, "model")
	if err != nil {
		return row, err
	}
	row.UsageOK = used == total.Load()
	if !row.UsageOK {
		o.Log.Warn("usage by model differs from what the simulated proxies reported", "usage", used, "reported", total.Load())
	}
	return row, nil
}

// metricValue reads one unlabelled sample from the control plane's /metrics.
func metricValue(api, name string) (float64, error) {
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// usageRequests sums the requests of every entry of GET /api/v1/usage?by=by over an hour.
func usageRequests(api, by string) (uint64, error) {
	resp, err := http.Get(api + "/api/v1/usage?window=1h&by=" + by)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Total struct {
			Requests json.Number `json:"requests"`
		} `json:"total"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, fmt.Errorf("read usage: %w", err)
	}
	if v.Total.Requests == "" {
		return 0, nil
	}
	return strconv.ParseUint(v.Total.Requests.String(), 10, 64)
}
