// Command benchharness runs the benchmarks behind `make bench`: mockllm direct, nginx as a
// plain keepalive reverse proxy (when installed) and llmproxy side by side on loopback, plus
// the fleet section: config propagation to a simulated fleet and the control plane's cost of
// a simulated fleet's reports, and the cache section: response cache hits next to direct and
// nginx. It prints one table and writes the JSON report under
// bench/out/. Every load step is bounded in time and everything started is stopped.
// --only fleet (or proxy) runs one section, e.g.
//
//	go run ./e2e/cmd/benchharness --bin bin --only fleet --fleet "" --reports 500
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/bench"
)

func main() {
	var (
		binDir = flag.String("bin", "bin", "directory with the built binaries")
		out    = flag.String("out", "bench/out", "directory for the JSON report")
		dur    = flag.Duration("duration", 5*time.Second, "length of each load step")
		rates  = flag.String("rates", "500,1000,2000", "fixed-rate steps, requests per second")
		conc   = flag.Int("concurrency", 32, "closed-loop concurrency")
		idle   = flag.String("idle", "1000,10000", "idle open stream counts")
		fleet  = flag.String("fleet", "100,500", "simulated proxy counts for propagation")
		repN   = flag.String("reports", "500", "simulated proxy counts for the report load on the control plane")
		repEv  = flag.Duration("report-interval", 5*time.Second, "the simulated proxies' report interval")
		repWin = flag.Duration("report-window", time.Minute, "how long the control plane's CPU is measured under reports")
		only   = flag.String("only", "", "run only these sections, comma-separated: proxy (sections 1-3), saturation (section 2 alone, plaintext and TLS), fleet (section 4: propagation and reports), cache (section 5: response cache hits)")
	)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp("", "llmproxy-bench-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o755)

	o := bench.Options{
		BinDir: *binDir, WorkDir: work, Duration: *dur, Conc: *conc, Log: log,
		Rates: ints(*rates), Idle: ints(*idle), Fleet: ints(*fleet),
		Reporters: ints(*repN), ReportEvery: *repEv, ReportWindow: *repWin,
	}
	for _, sec := range strings.Split(*only, ",") {
		switch sec = strings.TrimSpace(sec); sec {
		case "":
		case bench.SectionProxy, bench.SectionSaturation, bench.SectionFleet, bench.SectionCache:
			o.Sections = append(o.Sections, sec)
		default:
			fatal(fmt.Errorf("--only: unknown section %q (want proxy, saturation, fleet or cache)", sec))
		}
	}
	start := time.Now()
	r, err := bench.Run(ctx, o)
	if err != nil {
		fatal(err)
	}
	r.Print(os.Stdout)
	p, err := r.Save(*out)
	if err != nil {
		fatal(err)
	}
	fmt.Printf("\nreport: %s (took %s)\n", p, time.Since(start).Round(time.Second))
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			fatal(fmt.Errorf("not a number: %q", f))
		}
		out = append(out, n)
	}
	return out
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "benchharness:", err)
	os.Exit(1)
}
