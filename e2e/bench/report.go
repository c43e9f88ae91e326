package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one run measured. Ratios compare the proxy with nginx of the same run.
type Report struct {
	When        time.Time          `json:"when"`
	Machine     string             `json:"machine"`
	FixedRate   []FixedRateRow     `json:"fixed_rate"`
	Saturation  []SaturationRow    `json:"saturation"`
	ProxyCost   *ProxyCost         `json:"proxy_cost,omitempty"`
	Streaming   []StreamRow        `json:"streaming"`
	IdleStreams []IdleRow          `json:"idle_streams"`
	Propagation []PropagationRow   `json:"propagation"`
	Reports     []ReportsRow       `json:"reports,omitempty"`
	Cache       []CacheRow         `json:"cache,omitempty"`
	Errors      []string           `json:"errors,omitempty"`
	Extra       map[string]float64 `json:"extra,omitempty"`
}

// FixedRateRow is one open-loop step against one target.
type FixedRateRow struct {
	Rate   int    `json:"rate"`
	Target string `json:"target"`
	Latency
	AddedP50 Millis  `json:"added_p50_ms"` // over direct
	AddedP99 Millis  `json:"added_p99_ms"`
	VsNginx  float64 `json:"added_vs_nginx,omitempty"` // proxy's added p50 / nginx's added p50
	RSSMB    float64 `json:"rss_mb,omitempty"`
}

// SaturationRow is one closed-loop run against one target.
type SaturationRow struct {
	Target string `json:"target"`
	Saturation
	VsNginx float64 `json:"vs_nginx,omitempty"`
}

// ProxyCost is the proxy's CPU and memory under saturation.
type ProxyCost struct {
	CPUSecPer1k float64 `json:"cpu_seconds_per_1000_requests"`
	NginxCPU    float64 `json:"nginx_cpu_seconds_per_1000_requests,omitempty"`
	SpikeCPU    float64 `json:"spike_cpu_seconds_per_1000_requests,omitempty"`
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	// The same with both terminating TLS.
	TLSCPUSecPer1k float64 `json:"tls_cpu_seconds_per_1000_requests,omitempty"`
	NginxTLSCPU    float64 `json:"nginx_tls_cpu_seconds_per_1000_requests,omitempty"`
}

// StreamRow is the streaming measurement against one target.
type StreamRow struct {
	Target string `json:"target"`
	Stream
	AddedTTFB Millis `json:"added_ttfb_p50_ms"`
	AddedGap  Millis `json:"added_gap_p99_ms"`
}

// IdleRow is the memory cost of idle open streams in the proxy.
type IdleRow struct {
	Requested      int     `json:"requested"`
	Streams        int     `json:"streams"`
	Opened         int     `json:"opened"`
	KiBPerStream   float64 `json:"kib_per_stream"`
	RSSBeforeMB    float64 `json:"rss_before_mb"`
	RSSWithOpenMB  float64 `json:"rss_open_mb"`
	NginxKiBPerStr float64 `json:"nginx_kib_per_stream,omitempty"`
	SpikeKiBPerStr float64 `json:"spike_kib_per_stream,omitempty"`
}

// PropagationRow is the config propagation measurement for one fleet size.
type PropagationRow struct {
	Proxies    int     `json:"proxies"`
	Upstreams  int     `json:"upstreams"`
	Writes     int     `json:"writes"`
	P50        Millis  `json:"p50_ms"`
	P99        Millis  `json:"p99_ms"`
	Max        Millis  `json:"max_ms"`
	CPCPUSec   float64 `json:"controlplane_cpu_seconds"`
	CPPeakRSS  float64 `json:"controlplane_peak_rss_mb"`
	InitialSec float64 `json:"initial_sync_seconds"`
	// RevokeP50 and RevokeMax time a key's revocation: from the admin write to the last
	// proxy applying a config without the key.
	RevokeP50 Millis `json:"revoke_p50_ms"`
	RevokeMax Millis `json:"revoke_max_ms"`
}

// PropagationFunc measures config propagation to n simulated proxies; set by propagation.go.
var PropagationFunc func(ctx context.Context, o Options, n int) (PropagationRow, error)

// ReportsRow is the control plane's cost of the reports of a simulated fleet.
type ReportsRow struct {
	Proxies       int     `json:"proxies"`
	IntervalSec   float64 `json:"report_interval_seconds"`
	Upstreams     int     `json:"upstreams_per_report"`
	Models        int     `json:"models_per_report"`
	WindowSec     float64 `json:"window_seconds"`
	Received      int     `json:"reports_received"`
	ReportsPerSec float64 `json:"reports_per_second"`
	CPUPercent    float64 `json:"controlplane_cpu_percent_of_one_core"`
	CPPeakRSS     float64 `json:"controlplane_peak_rss_mb"`
	UsageOK       bool    `json:"usage_matches"`
}

// ReportsFunc measures the control plane under the reports of n simulated proxies; set by
// reports.go.
var ReportsFunc func(ctx context.Context, o Options, n int) (ReportsRow, error)

// Run measures the sections o selects and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	r := &Report{When: time.Now().UTC(), Machine: machine(), Extra: map[string]float64{}}
	limit := RaiseFileLimit(65536)
	if o.Selected(SectionProxy) || o.Selected(SectionSaturation) {
		if err := measureProxy(ctx, o, r, limit); err != nil {
			return nil, err
		}
	}
	if o.Selected(SectionFleet) {
		measureFleet(ctx, o, r)
	}
	if o.Selected(SectionCache) {
		if err := measureCache(ctx, o, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// measureProxy is sections 1 to 3 and the idle streams: mockllm direct, nginx and the proxy
// side by side; with only SectionSaturation selected, section 2 alone.
func measureProxy(ctx context.Context, o Options, r *Report, limit uint64) error {
	env, err := StartEnv(ctx, o)
	if err != nil {
		return err
	}
	defer env.Stop()
	nginx, haveNginx := env.Target("nginx")
	all := o.Selected(SectionProxy)

	// Warm every path: connections, pools, JIT-free but cache-warm.
	for _, t := range env.Targets {
		Saturate(t, 8, 500*time.Millisecond)
	}

	// 1. Fixed rate, open loop.
	for _, rate := range o.Rates {
		if !all {
			break
		}
		rows := map[string]*FixedRateRow{}
		urls := make([]string, len(env.Targets))
		for i, t := range env.Targets {
			urls[i] = t.URL
		}
		lats := FixedRates(urls, rate, o.Duration, interleaveRounds)
		for i, t := range env.Targets {
			l := lats[i]
			row := &FixedRateRow{Rate: rate, Target: t.Name, Latency: l}
			if t.Proc != nil {
				rss, _, _ := Memory(t.Proc.Pid())
				row.RSSMB = float64(rss) / (1 << 20)
			}
			rows[t.Name] = row
			o.Log.Info("fixed rate", "rate", rate, "target", t.Name, "p50_ms", l.P50, "p99_ms", l.P99, "errors", l.Errors)
		}
		d := rows["direct"]
		for _, t := range env.Targets {
			if row := rows[t.Name]; t.Name != "direct" {
				row.AddedP50 = row.P50 - d.P50
				row.AddedP99 = row.P99 - d.P99
			}
		}
		for _, t := range env.Targets {
			row := rows[t.Name]
			if n := rows["nginx"]; haveNginx && t.Name != "direct" && t.Name != "nginx" && n.AddedP50 > 0 {
				row.VsNginx = float64(row.AddedP50) / float64(n.AddedP50)
			}
			r.FixedRate = append(r.FixedRate, *row)
		}
	}

	// 2. Saturation, closed loop, with the proxy's CPU cost. The proxy runs with its
	// default flags, the access log on; the same proxy without it, started for this step
	// only, shows what the log costs; and started again with its forward terminating TLS,
	// beside nginx terminating TLS (keepalive connections: the cost is encryption, not
	// handshakes).
	targets := append([]Target(nil), env.Targets...)
	if t, err := StartProxy(ctx, o, "proxy-no-access-log", env.MockAddr, "--access-log=false"); err != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("saturation without the access log: %v", err))
	} else {
		defer t.Proc.Stop()
		targets = append(targets, t)
	}
	if env.NginxTLS.Proc != nil {
		targets = append(targets, env.NginxTLS)
	}
	if t, err := StartTLSProxy(ctx, o, "proxy-tls", env.MockAddr, env.Cert, env.ClientTLS); err != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("saturation with TLS: %v", err))
	} else {
		defer t.Proc.Stop()
		targets = append(targets, t)
	}
	sat, cpu := saturateInterleaved(targets, o.Conc, o.Duration)
	names := make([]string, 0, len(targets))
	for _, t := range targets {
		names = append(names, t.Name)
		o.Log.Info("saturation", "target", t.Name, "rps", int(sat[t.Name].RPS), "errors", sat[t.Name].Errors)
	}
	for _, name := range names {
		row := SaturationRow{Target: name, Saturation: sat[name]}
		// Each row is compared with nginx doing the same: plaintext or TLS.
		base := "nginx"
		if name == "proxy-tls" {
			base = "nginx-tls"
		}
		if haveNginx && name != "direct" && name != "nginx" && name != "nginx-tls" && sat[base].RPS > 0 {
			row.VsNginx = sat[name].RPS / sat[base].RPS
		}
		r.Saturation = append(r.Saturation, row)
	}
	_, peak, _ := Memory(env.Proxy.Pid())
	r.ProxyCost = &ProxyCost{
		CPUSecPer1k: cpu["proxy"], NginxCPU: cpu["nginx"], SpikeCPU: cpu["spike-fasthttp"], PeakRSSMB: float64(peak) / (1 << 20),
		TLSCPUSecPer1k: cpu["proxy-tls"], NginxTLSCPU: cpu["nginx-tls"],
	}
	if !all {
		return nil
	}

	// 3. Streaming: time to first byte and gaps between chunks.
	var ds Stream
	for _, t := range env.Targets {
		s := Streams(t.URL, 40, 10, 10, 20*time.Millisecond)
		row := StreamRow{Target: t.Name, Stream: s}
		if t.Name == "direct" {
			ds = s
		} else {
			row.AddedTTFB = s.TTFB50 - ds.TTFB50
			row.AddedGap = s.Gap99 - ds.Gap99
		}
		r.Streaming = append(r.Streaming, row)
		o.Log.Info("streaming", "target", t.Name, "ttfb_p50_ms", s.TTFB50, "gap_p99_ms", s.Gap99, "errors", s.Errors)
	}

	// Idle open streams: memory per stream in the proxy (and nginx).
	for _, n := range o.Idle {
		// The proxy holds two sockets per stream (client and upstream); where the open-file
		// limit cannot be raised that far, measure as many as it allows and say so.
		row := IdleRow{Requested: n}
		if most := int(limit/2) - 500; n > most {
			r.Errors = append(r.Errors, fmt.Sprintf("idle streams: %d requested, measured %d (open-file limit %d cannot be raised here)", n, most, limit))
			n = most
		}
		row.Streams = n
		spike, _ := env.Target("spike-fasthttp")
		// The proxy is measured fresh, with default flags: one that has just run the
		// saturation steps holds heap it no longer uses, in which streams would open
		// without growing its RSS.
		fresh, err := StartProxy(ctx, o, fmt.Sprintf("proxy-idle-%d", n), env.MockAddr)
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("idle streams: start a fresh proxy: %v", err))
			fresh = Target{}
		}
		for _, t := range []Target{fresh, nginx, spike} {
			if t.Proc == nil {
				continue
			}
			rssBefore, _, _ := Memory(t.Proc.Pid())
			var rssOpen int64
			opened, err := IdleStreams(ctx, t.URL, n, 2*time.Minute, func() (int, error) { return mockInFlight(env.MockAddr) },
				func() { rssOpen, _, _ = Memory(t.Proc.Pid()) })
			if err != nil {
				r.Errors = append(r.Errors, fmt.Sprintf("idle streams %d via %s: %v", n, t.Name, err))
				continue
			}
			per := float64(rssOpen-rssBefore) / float64(n) / 1024
			switch t.Proc {
			case fresh.Proc:
				row.Opened, row.KiBPerStream = opened, per
				row.RSSBeforeMB, row.RSSWithOpenMB = float64(rssBefore)/(1<<20), float64(rssOpen)/(1<<20)
			case nginx.Proc:
				row.NginxKiBPerStr = per
			default:
				row.SpikeKiBPerStr = per
			}
			o.Log.Info("idle streams", "target", t.Name, "streams", n, "kib_per_stream", int(per))
			if t.Proc == env.Spike {
				// fasthttp does not notice a client that left while the upstream is silent:
				// the spike holds those streams open until the upstream speaks. A restart
				// ends them.
				env.Spike.Stop()
				if env.Spike = nil; n != o.Idle[len(o.Idle)-1] {
					if st, err := StartSpike(ctx, o, env.MockAddr); err != nil {
						r.Errors = append(r.Errors, fmt.Sprintf("restart spike-fasthttp: %v", err))
					} else {
						env.Spike = st.Proc
						env.Targets[len(env.Targets)-1] = st
					}
				}
			}
			// Let the upstream see the cancellations before the next step.
			waitMockIdle(env.MockAddr, 30*time.Second)
		}
		fresh.Proc.Stop()
		r.IdleStreams = append(r.IdleStreams, row)
	}
	return nil
}

// interleaveRounds is how many slices each target's time in a side-by-side step (fixed
// rate, saturation) is cut into.
const interleaveRounds = 5

// saturateInterleaved measures every target's closed-loop throughput for d in all, in
// interleaveRounds slices taken in turn (target 1, 2, …, then again), so that the load
// other work puts on a shared machine falls on every target alike instead of on whichever
// ran while it lasted. It returns each target's throughput and, for a process, its CPU
// seconds per 1,000 requests.
func saturateInterleaved(targets []Target, conc int, d time.Duration) (map[string]Saturation, map[string]float64) {
	type total struct {
		ok, all int64
		el, cpu float64
	}
	tot := make([]total, len(targets))
	for _, t := range targets {
		Saturate(t, 8, 500*time.Millisecond) // warm connections
	}
	slice := d / interleaveRounds
	for range interleaveRounds {
		for i, t := range targets {
			var before float64
			if t.Proc != nil {
				before, _ = CPUSeconds(t.Proc.Pid())
			}
			s := Saturate(t, conc, slice)
			if t.Proc != nil {
				after, _ := CPUSeconds(t.Proc.Pid())
				tot[i].cpu += after - before
			}
			ok := s.Requests - s.Errors
			tot[i].ok += ok
			tot[i].all += s.Requests
			if s.RPS > 0 {
				tot[i].el += float64(ok) / s.RPS
			}
		}
	}
	sat, cpu := map[string]Saturation{}, map[string]float64{}
	for i, t := range targets {
		x := Saturation{Requests: tot[i].all, Errors: tot[i].all - tot[i].ok}
		if tot[i].el > 0 {
			x.RPS = float64(tot[i].ok) / tot[i].el
		}
		sat[t.Name] = x
		if t.Proc != nil && tot[i].all > 0 {
			cpu[t.Name] = tot[i].cpu / float64(tot[i].all) * 1000
		}
	}
	return sat, cpu
}

// measureFleet is section 4: config propagation to a simulated fleet, and the control
// plane's cost of a fleet's reports.
func measureFleet(ctx context.Context, o Options, r *Report) {
	if PropagationFunc != nil {
		for _, n := range o.Fleet {
			row, err := PropagationFunc(ctx, o, n)
			if err != nil {
				r.Errors = append(r.Errors, fmt.Sprintf("propagation to %d proxies: %v", n, err))
				continue
			}
			r.Propagation = append(r.Propagation, row)
			o.Log.Info("propagation", "proxies", n, "p50_ms", row.P50, "p99_ms", row.P99)
		}
	}
	if ReportsFunc != nil {
		for _, n := range o.Reporters {
			row, err := ReportsFunc(ctx, o, n)
			if err != nil {
				r.Errors = append(r.Errors, fmt.Sprintf("reports from %d proxies: %v", n, err))
				continue
			}
			r.Reports = append(r.Reports, row)
			o.Log.Info("reports", "proxies", n, "cp_cpu_percent", row.CPUPercent, "reports_per_second", row.ReportsPerSec)
		}
	}
}

func mockInFlight(addr string) (int, error) {
	resp, err := http.Get("http://" + addr + "/_mock/stats")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var s map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return 0, err
	}
	for _, k := range []string{"in_flight", "inflight", "current"} {
		if v, ok := s[k].(float64); ok {
			return int(v), nil
		}
	}
	return 0, fmt.Errorf("mock stats carry no in-flight count: %v", s)
}

func waitMockIdle(addr string, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if n, err := mockInFlight(addr); err == nil && n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func machine() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	model := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
			break
		}
	}
	return fmt.Sprintf("%s, %d CPUs", model, numCPU())
}

// Print writes the report as tables.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "LLMProxy for Go benchmark, %s, %s\n\n", r.When.Format(time.RFC3339), r.Machine)
	if len(r.FixedRate) > 0 || len(r.Saturation) > 0 || len(r.Streaming) > 0 {
		r.printProxy(w, tw)
	}
	if len(r.Propagation) > 0 {
		fmt.Fprintln(w, "\n4. Fleet: config propagation (admin write → every simulated proxy applied it)")
		fmt.Fprintln(tw, "proxies\tupstreams\twrites\tp50 ms\tp99 ms\tmax ms\tCP CPU s\tCP peak RSS MB\tinitial sync s\tkey revoked: p50 ms\tlast proxy ms\t")
		for _, x := range r.Propagation {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.2f\t%.1f\t%.2f\t%.1f\t%.1f\t\n", x.Proxies, x.Upstreams, x.Writes, x.P50, x.P99, x.Max, x.CPCPUSec, x.CPPeakRSS, x.InitialSec, x.RevokeP50, x.RevokeMax)
		}
		tw.Flush()
	}
	if len(r.Reports) > 0 {
		fmt.Fprintln(w, "\n4b. Fleet: proxy reports (control plane receiving, keeping and rolling up; target < 10% of one core at 500 proxies every 5 s)")
		fmt.Fprintln(tw, "proxies\tinterval s\tupstreams\tmodels\twindow s\treports/s\tCP CPU % of one core\tCP peak RSS MB\tusage ok\t")
		for _, x := range r.Reports {
			fmt.Fprintf(tw, "%d\t%.0f\t%d\t%d\t%.0f\t%.1f\t%.2f\t%.1f\t%v\t\n", x.Proxies, x.IntervalSec, x.Upstreams, x.Models, x.WindowSec, x.ReportsPerSec, x.CPUPercent, x.CPPeakRSS, x.UsageOK)
		}
		tw.Flush()
	}
	if len(r.Cache) > 0 {
		r.printCache(w, tw)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

// printProxy prints sections 1 to 3 and the idle streams.
func (r *Report) printProxy(w io.Writer, tw *tabwriter.Writer) {
	fmt.Fprintln(w, "1. Fixed rate (open loop, non-streaming chat completions); added = over direct")
	fmt.Fprintln(tw, "rate/s\ttarget\tp50 ms\tp90 ms\tp99 ms\tadded p50\tadded p99\tvs nginx\terrors\tRSS MB\t")
	for _, x := range r.FixedRate {
		fmt.Fprintf(tw, "%d\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%d\t%s\t\n", x.Rate, x.Target, x.P50, x.P90, x.P99,
			x.AddedP50, x.AddedP99, ratio(x.VsNginx), x.Errors, mb(x.RSSMB))
	}
	tw.Flush()
	fmt.Fprintln(w, "\n2. Saturation (closed loop; proxy-tls terminates TLS and is compared with nginx-tls)")
	fmt.Fprintln(tw, "target\treq/s\terrors\tvs nginx\t")
	for _, x := range r.Saturation {
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%s\t\n", x.Target, x.RPS, x.Errors, ratio(x.VsNginx))
	}
	tw.Flush()
	if c := r.ProxyCost; c != nil {
		fmt.Fprintf(w, "proxy: %.3f CPU s per 1000 requests (nginx %.3f", c.CPUSecPer1k, c.NginxCPU)
		if c.SpikeCPU > 0 {
			fmt.Fprintf(w, ", spike-fasthttp %.3f", c.SpikeCPU)
		}
		fmt.Fprintf(w, "), peak RSS %.1f MB\n", c.PeakRSSMB)
		if c.TLSCPUSecPer1k > 0 {
			fmt.Fprintf(w, "with TLS: proxy %.3f CPU s per 1000 requests (nginx %.3f)\n", c.TLSCPUSecPer1k, c.NginxTLSCPU)
		}
	}
	fmt.Fprintln(w, "\n3. Streaming (10 chunks, 20 ms apart)")
	fmt.Fprintln(tw, "target\tTTFB p50\tTTFB p99\tgap p50\tgap p99\tadded TTFB\tadded gap p99\terrors\t")
	for _, x := range r.Streaming {
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t\n", x.Target, x.TTFB50, x.TTFB99, x.Gap50, x.Gap99, x.AddedTTFB, x.AddedGap, x.Errors)
	}
	tw.Flush()
	fmt.Fprintln(tw, "idle streams\tproxy KiB/stream\tnginx KiB/stream\tspike-fasthttp KiB/stream\tproxy RSS before MB\tproxy RSS open MB\t")
	for _, x := range r.IdleStreams {
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%s\t%.1f\t%.1f\t\n", x.Streams, x.KiBPerStream, x.NginxKiBPerStr, mb(x.SpikeKiBPerStr), x.RSSBeforeMB, x.RSSWithOpenMB)
	}
	tw.Flush()
}

// Save writes the report as JSON into dir and returns the path.
func (r *Report) Save(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "bench-"+r.When.Format("20060102-150405")+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return p, os.WriteFile(p, b, 0o644)
}

func ratio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

func mb(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", x)
}
