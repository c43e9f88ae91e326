package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
)

// CacheRow is one target of the cache section: the latency of a fixed-rate step and the
// closed-loop throughput. For the proxy every answer is a hit of one stored entry.
type CacheRow struct {
	Target string `json:"target"`
	Latency
	RPS     float64 `json:"saturation_rps"`
	VsNginx float64 `json:"rps_vs_nginx,omitempty"`
	// CPUPer1000 is the serving process's CPU seconds per 1,000 answers in the closed loop
	// (for direct and floor, the mock's).
	CPUPer1000 float64 `json:"cpu_s_per_1000,omitempty"`
	// Misses is the proxy's llmproxy_cache_misses_total after the run (1: only the first
	// request, which stored the entry).
	Misses float64 `json:"cache_misses,omitempty"`
}

// cacheGroup is the group block of the caching proxy: a memory cache.
const cacheGroup = "    cache: {enabled: true, ttl: \"1h\"}\n"

// measureCache is section 5: a proxy answering from its memory cache (every request the
// same, so every one after the first is a hit) next to the mock direct and nginx, in the same
// run: a hit's latency at a fixed rate, and hit throughput in a closed loop. Targets: a hit's
// p50 below direct's (a hit must be faster than any upstream, even a zero-latency one), hit
// throughput at least nginx's proxied throughput.
//
// The floor target is the mock's /_mock/fixed: one answer built at startup, written for
// every request with no other work. It is the least any net/http server can do, so no hit
// served through net/http can be faster; its distance from direct shows how much of
// direct's time is the mock's own work.
func measureCache(ctx context.Context, o Options, r *Report) error {
	env, err := StartEnv(ctx, o)
	if err != nil {
		return err
	}
	defer env.Stop()
	hit, admin, err := startProxy(ctx, o, "proxy-cache-hit", env.MockAddr, nil, nil, cacheGroup, nil)
	if err != nil {
		return err
	}
	defer hit.Proc.Stop()
	mockProc := env.Mock
	targets := []Target{}
	if t, ok := env.Target("direct"); ok {
		t.Proc = mockProc
		targets = append(targets, t, Target{Name: "floor", URL: "http://" + env.MockAddr + "/_mock/fixed", Proc: mockProc})
	}
	if t, ok := env.Target("nginx"); ok {
		targets = append(targets, t)
	}
	targets = append(targets, hit)
	for _, t := range targets {
		Saturate(t, 8, o.Duration/5) // warm connections and, for the proxy, store the entry
	}
	rate := 1000
	if len(o.Rates) > 0 {
		rate = o.Rates[len(o.Rates)-1]
	}
	rows := map[string]*CacheRow{}
	urls := make([]string, len(targets))
	for i, t := range targets {
		urls[i] = t.URL
	}
	lats := FixedRates(urls, rate, o.Duration, interleaveRounds)
	sat, cpu := saturateInterleaved(targets, o.Conc, o.Duration)
	for i, t := range targets {
		l, s := lats[i], sat[t.Name]
		rows[t.Name] = &CacheRow{Target: t.Name, Latency: l, RPS: s.RPS, CPUPer1000: cpu[t.Name]}
		o.Log.Info("cache", "target", t.Name, "rate", rate, "p50_ms", l.P50, "p99_ms", l.P99, "rps", int(s.RPS))
	}
	if n := rows["nginx"]; n != nil && n.RPS > 0 {
		rows[hit.Name].VsNginx = rows[hit.Name].RPS / n.RPS
	}
	misses, err := scrapeCounter(admin+"/metrics", "llmproxy_cache_misses_total")
	if err != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("cache: %v", err))
	}
	rows[hit.Name].Misses = misses
	for _, t := range targets {
		r.Cache = append(r.Cache, *rows[t.Name])
	}
	if d := rows["direct"]; d != nil && d.P50 > 0 {
		r.Extra["cache_hit_p50_vs_direct_p50"] = float64(rows[hit.Name].P50) / float64(d.P50)
	}
	if f := rows["floor"]; f != nil && f.P50 > 0 {
		r.Extra["cache_hit_p50_vs_floor_p50"] = float64(rows[hit.Name].P50) / float64(f.P50)
	}
	return nil
}

// scrapeCounter sums the samples of a metric in a Prometheus text exposition at url.
func scrapeCounter(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// printCache prints section 5.
func (r *Report) printCache(w io.Writer, tw *tabwriter.Writer) {
	fmt.Fprintln(w, "\n5. Response cache: every request a hit (memory backend), next to direct and nginx of the same run")
	fmt.Fprintln(tw, "target\trate/s\tp50 ms\tp90 ms\tp99 ms\terrors\tsaturation req/s\tvs nginx\tCPU s/1000\tcache misses\t")
	for _, x := range r.Cache {
		misses := "-"
		if strings.HasPrefix(x.Target, "proxy") {
			misses = strconv.FormatFloat(x.Misses, 'f', 0, 64)
		}
		cpu := "-"
		if x.CPUPer1000 > 0 {
			cpu = strconv.FormatFloat(x.CPUPer1000, 'f', 3, 64)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%.0f\t%s\t%s\t%s\t\n", x.Target, x.Rate, x.P50, x.P90, x.P99, x.Errors, x.RPS, ratio(x.VsNginx), cpu, misses)
	}
	tw.Flush()
	fmt.Fprintln(w, "floor: the mock's /_mock/fixed, a fixed answer written with no other work (the least a net/http server does)")
}
