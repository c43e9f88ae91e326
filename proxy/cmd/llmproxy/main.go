// Command llmproxy is the data-plane proxy of LLMProxy for Go. It serves the forwards of a
// configuration, taken either from a YAML file (--config, reloaded on SIGHUP) or from the
// control plane (--control-plane), and an admin listener with /health, /ready, /metrics and
// /config.
//
//	llmproxy --config config.yaml [--admin-addr 127.0.0.1:9000] [--redis URL]
//	llmproxy --config config.yaml --test
//	llmproxy --control-plane 127.0.0.1:18000 [--node-id ID] [--state-dir .data/proxy]
//	    [--report-interval 5s] [--control-plane-ca FILE] [--tls-cert FILE --tls-key FILE]
//
// With --control-plane the proxy also streams a report to the control plane every
// --report-interval (0 turns reports off) and at once when a circuit breaker changes state.
//
// --pprof-addr 127.0.0.1:PORT serves net/http/pprof (/debug/pprof/) on a
// loopback address for profiling; it is off unless given and refuses other addresses.
//
// SIGTERM or SIGINT stops accepting, drains in-flight requests up to --shutdown-timeout and
// exits 0. Logs are JSON (log/slog) on stderr, with one access-log line per request
// (buffered off the request path, written at least every second and at exit; lines the
// output cannot take are dropped and counted) unless --access-log=false or --log-level is
// above info.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	"github.com/llmproxy-go/llmproxy/controlplane/reportwire"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/accesslog"
	"github.com/llmproxy-go/llmproxy/proxy/cache"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/forward"
	"github.com/llmproxy-go/llmproxy/proxy/internal/gcfloor"
	"github.com/llmproxy-go/llmproxy/proxy/redisguard"
	"github.com/llmproxy-go/llmproxy/proxy/report"
	"github.com/llmproxy-go/llmproxy/proxy/server"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// flags are the command line.
type flags struct {
	configFile      string
	test            bool
	controlPlane    string
	nodeID          string
	adminAddr       string
	stateDir        string
	redisURL        string
	redisTimeout    time.Duration
	shutdownTimeout time.Duration
	logLevel        string
	pprofAddr       string
	accessLog       bool
	reportInterval  time.Duration
	controlPlaneCA  string
	tlsCert         string
	tlsKey          string
	cacheTimeout    time.Duration
	gcFloorMiB      int
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("llmproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	fs.StringVar(&f.configFile, "config", "", "serve the YAML configuration in `FILE` (SIGHUP reloads it)")
	fs.BoolVar(&f.test, "test", false, "with --config: validate the file, print every error and exit")
	fs.StringVar(&f.controlPlane, "control-plane", "", "follow the control plane at `HOST:PORT` (xDS)")
	fs.StringVar(&f.nodeID, "node-id", host, "node id sent to the control plane")
	fs.StringVar(&f.adminAddr, "admin-addr", net.JoinHostPort(validate.DefaultAdminAddress, strconv.Itoa(validate.DefaultAdminPort)), "admin listener (/health, /ready, /metrics, /config); a config file's http_server.admin overrides it")
	fs.StringVar(&f.stateDir, "state-dir", ".data/proxy", "directory for the last good control-plane snapshot")
	fs.StringVar(&f.redisURL, "redis", os.Getenv("LLMPROXY_REDIS_URL"), "Redis `URL` for global rate limits, consumers' limits and the shared response cache (env LLMPROXY_REDIS_URL)")
	fs.DurationVar(&f.redisTimeout, "redis-timeout", redisguard.DefaultTimeout, "longest Redis call on the request path (global rate limits, consumers' limits); past it the proxy counts locally")
	cacheTimeout := cache.DefaultLookupTimeout
	if v := os.Getenv("LLMPROXY_CACHE_LOOKUP_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("parse LLMPROXY_CACHE_LOOKUP_TIMEOUT %q: want a duration like 20ms", v)
		}
		cacheTimeout = d
	}
	fs.DurationVar(&f.cacheTimeout, "cache-lookup-timeout", cacheTimeout, "longest wait for a Redis cache lookup; past it the request goes upstream (env LLMPROXY_CACHE_LOOKUP_TIMEOUT)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "longest drain of in-flight requests on SIGTERM")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&f.accessLog, "access-log", true, "log one JSON line per request, buffered (--access-log=false keeps the other logs)")
	fs.DurationVar(&f.reportInterval, "report-interval", report.DefaultInterval, "with --control-plane: how often to report traffic and upstream health to it (0: never)")
	fs.IntVar(&f.gcFloorMiB, "gc-floor", 64, "keep the garbage collector's heap goal at or above `MiB` (fewer collections at high request rates; 0: Go's default; ignored when GOGC is set)")
	fs.StringVar(&f.pprofAddr, "pprof-addr", "", "serve net/http/pprof on the loopback `HOST:PORT` (profiling; off by default)")
	fs.StringVar(&f.controlPlaneCA, "control-plane-ca", "", "connect to the control plane over TLS, trusting the CA certificates (PEM) in `FILE`")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "connect to the control plane over TLS, presenting the client certificate (PEM) in `FILE`, which must name --node-id; reloaded when it changes")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert in `FILE`")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := checkTLSFlags(f); err != nil {
		return nil, err
	}
	switch {
	case f.configFile == "" && f.controlPlane == "":
		return nil, errors.New("one of --config FILE or --control-plane HOST:PORT is required")
	case f.configFile != "" && f.controlPlane != "":
		return nil, errors.New("--config and --control-plane are exclusive: give one")
	case f.test && f.configFile == "":
		return nil, errors.New("--test needs --config FILE")
	case f.gcFloorMiB < 0 || f.gcFloorMiB > 1<<20:
		return nil, fmt.Errorf("--gc-floor %d: want 0 (off) to 1048576 MiB", f.gcFloorMiB)
	case f.shutdownTimeout <= 0:
		return nil, errors.New("--shutdown-timeout must be positive")
	case f.redisTimeout <= 0 || f.redisTimeout > 10*time.Second:
		return nil, fmt.Errorf("--redis-timeout %s: want more than 0 and at most 10s", f.redisTimeout)
	case f.cacheTimeout <= 0:
		return nil, errors.New("--cache-lookup-timeout must be positive")
	case f.reportInterval != 0 && (f.reportInterval < reportwire.MinInterval || f.reportInterval > reportwire.MaxInterval):
		return nil, fmt.Errorf("--report-interval %s: want 0 (off) or %s to %s", f.reportInterval, reportwire.MinInterval, reportwire.MaxInterval)
	}
	if f.pprofAddr != "" {
		if err := checkLoopback(f.pprofAddr); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("parse --log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// run is main without the exit; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "llmproxy:", err)
		return 2
	}
	level, err := parseLevel(f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "llmproxy:", err)
		return 2
	}
	if f.test {
		return testConfig(f.configFile, f.redisURL, stdout, stderr)
	}
	// redact.ReplaceAttr: a protobuf message logged anywhere shows no secret (marked in config.proto).
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: redact.ReplaceAttr}))
	var accessOut io.Writer // nil: no access log
	if f.accessLog && level <= slog.LevelInfo {
		accessOut = stderr
	}
	if _, set := os.LookupEnv("GOGC"); f.gcFloorMiB > 0 && !set {
		defer gcfloor.Start(uint64(f.gcFloorMiB) << 20)()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, f, log, accessOut); err != nil {
		log.Error("llmproxy stopped", "err", err)
		return 1
	}
	return 0
}

// testConfig is --test: load and validate the file, ${env:NAME} references resolved, and
// the TLS files it names read, and print "configuration ok" on stdout or every error, one a
// line, on stderr; it returns the exit code. A configuration that passes builds and runs:
// building cannot fail. What a proxy would serve differently from the file
// (config.Warning: a cache backend redis without redisURL) counts as an error here.
func testConfig(path, redisURL string, stdout, stderr io.Writer) int {
	err := func() error {
		l, err := loadFile(path, os.Environ())
		if err != nil {
			return err
		}
		opts := config.Options{Logger: slog.New(slog.DiscardHandler)}
		if opts.Files, err = config.LoadFiles(l.model, nil); err != nil {
			return err
		}
		if redisURL != "" {
			client, err := redisClient(redisURL)
			if err != nil {
				return err
			}
			defer client.Close()
			opts.Redis = client
		}
		reg := config.NewRegistry(nil, nil)
		rt := config.Build(l.model, reg, opts)
		reg.Discard(rt)
		var lines []error
		for _, w := range rt.Warnings {
			lines = append(lines, fmt.Errorf("%s: %s", path, w))
		}
		return errors.Join(lines...)
	}()
	if err != nil {
		fmt.Fprintf(stderr, "%s\nconfiguration is invalid\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "configuration ok")
	return 0
}

// redisClient returns a client for a --redis URL. Per-call deadlines (the cache's lookup
// deadline, the rate limiter's timeout) are honoured on the socket.
func redisClient(url string) (*redis.Client, error) {
	ropts, err := redisguard.ParseURL(url) // ContextTimeoutEnabled: deadlines bound the socket
	if err != nil {
		return nil, fmt.Errorf("parse --redis: %w", err)
	}
	return redis.NewClient(ropts), nil
}

// loaded is a configuration file read and validated.
type loaded struct {
	model *validate.Model
	// revision is "file:" and the first 12 hex digits of the SHA-256 of the bytes read.
	revision string
	// overrides are the values LLMPROXY_ variables replaced (see configfile.File.WithEnv).
	overrides []configfile.Override
}

// loadFile reads and validates a configuration file, with the LLMPROXY_ environment
// overrides of environ applied (configfile.File.WithEnv) and its ${env:NAME} references
// resolved from the process environment (validate.Parse). Errors are one a line, each
// prefixed with the file name and, when known, the line and column (or the variable) of the
// field at fault.
func loadFile(path string, environ []string) (*loaded, error) {
	data, err := configfile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := configfile.Parse(path, data)
	if err != nil {
		return nil, err
	}
	if f, err = f.WithEnv(environ); err != nil {
		return nil, err
	}
	m, err := validate.Parse(f.Config(), os.LookupEnv)
	if err != nil {
		return nil, f.Locate(err)
	}
	sum := sha256.Sum256(data)
	return &loaded{model: m, revision: "file:" + hex.EncodeToString(sum[:])[:12], overrides: f.Overrides()}, nil
}

// proxy is the running process: its compiled-config state and its listeners.
type proxy struct {
	log     *slog.Logger
	metrics *telemetry.Metrics
	reg     *config.Registry
	holder  *config.Holder
	applier *config.Applier
	srv     *server.Server
	redis   redis.UniversalClient
	// redisGuard bounds every call to redis (nil without --redis).
	redisGuard *redisguard.Guard
	adminAddr  string // the admin listener's configured address
}

// applyConfig validates, builds and applies a configuration from the control plane; the
// error is the NACK reason.
func (p *proxy) applyConfig(revision string, cfg *configv1.Config) error {
	if err := p.applier.Apply(revision, cfg); err != nil {
		return fmt.Errorf("apply revision %s: %w", revision, err)
	}
	return nil
}

// applyFile loads and applies a configuration file.
func (p *proxy) applyFile(path string) error {
	l, err := loadFile(path, os.Environ())
	if err != nil {
		return err
	}
	if a := l.model.Admin; a != nil && a.Addr != p.adminAddr {
		p.log.Warn("http_server.admin changed: the admin listener moves (and takes a new timeout) only on restart", "running", p.adminAddr, "file", a.Addr)
	}
	return p.applier.ApplyModel(l.revision, l.model, l.overrides)
}

// serve runs the proxy until ctx ends, then drains. The access log goes to accessOut
// (nil: none).
func serve(ctx context.Context, f *flags, log *slog.Logger, accessOut io.Writer) error {
	// Catch SIGHUP before anything else: its default action would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	if f.pprofAddr != "" {
		stopPprof, err := servePprof(f.pprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	p := &proxy{log: log, metrics: telemetry.NewMetrics(), holder: &config.Holder{}}
	p.reg = config.NewRegistry(p.metrics, log)
	defer p.reg.Close()

	var alog *accesslog.Logger
	if accessOut != nil {
		alog = accesslog.New(accessOut, accesslog.Options{Dropped: p.metrics.AccessLogDropped, Logger: log})
		defer func() { // after the drain: the last requests' lines are in
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := alog.Close(cctx); err != nil {
				log.Warn("access log: output did not take the last lines", "err", err)
			}
		}()
	}

	if f.redisURL != "" {
		// go-redis keeps its logger in a package variable: this is the one place that sets
		// it, so the library's own lines are JSON records like ours.
		redis.SetLogger(redisguard.Logger{L: log})
		client, err := redisClient(f.redisURL)
		if err != nil {
			return err
		}
		defer client.Close()
		p.redis = client
		// One guard for every request-path use of this client (rate limits, consumers'
		// limits): the first failure spares all of them.
		p.redisGuard = redisguard.New(redisguard.Options{Timeout: f.redisTimeout, Logger: log, Metrics: redisguard.NewMetrics(p.metrics.Registry)})
	}

	shutdownTracing, tracer, err := telemetry.SetupTracing(ctx)
	if err != nil {
		log.Warn("tracing disabled", "err", err)
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownTracing(tctx)
	}()

	p.srv = server.New(server.Options{
		Holder: p.holder,
		Handler: func(name string) http.Handler {
			return forward.New(p.holder, name, forward.Deps{Metrics: p.metrics, Logger: log, Tracer: tracer, AccessLog: alog})
		},
		Metrics:      p.metrics.Registry,
		Logger:       log,
		DrainTimeout: f.shutdownTimeout,
	})

	p.applier = config.NewApplier(p.holder, p.reg, p.srv.Apply, config.Options{Metrics: p.metrics, Logger: log, Redis: p.redis, RedisTimeout: f.redisTimeout, CacheLookupTimeout: f.cacheTimeout, RedisGuard: p.redisGuard})

	adminAddr := f.adminAddr
	var adminHeaderTimeout time.Duration // 0: the server's default
	var first *loaded
	if f.configFile != "" {
		l, err := loadFile(f.configFile, os.Environ())
		if err != nil {
			return err
		}
		first = l
		if a := l.model.Admin; a != nil {
			adminAddr, adminHeaderTimeout = a.Addr, a.HeaderTimeout
		}
	}
	if _, err := p.srv.StartAdmin(adminAddr, adminHeaderTimeout); err != nil {
		return err
	}
	p.adminAddr = adminAddr

	errc := make(chan error, 1)
	if first != nil {
		if err := p.applier.ApplyModel(first.revision, first.model, first.overrides); err != nil {
			shutdown(p, f.shutdownTimeout)
			return err
		}
		go reloadOnHUP(ctx, p, f.configFile, hup)
	} else {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					log.Info("SIGHUP ignored: the config comes from the control plane")
				}
			}
		}()
		// One TLS setting for every stream to the control plane: ADS and reports.
		tc, err := controlPlaneTLS(f, log)
		if err != nil {
			shutdown(p, f.shutdownTimeout)
			return err
		}
		go func() {
			errc <- runControlPlane(ctx, f, tc, p.applyConfig, log)
		}()
		if f.reportInterval > 0 {
			stopReports, err := startReports(p, f.controlPlane, f.nodeID, f.reportInterval, tc, log)
			if err != nil {
				shutdown(p, f.shutdownTimeout)
				return err
			}
			defer stopReports() // after the drain below, so drained requests are reported
		}
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: draining in-flight requests", "timeout", f.shutdownTimeout.String())
	case err := <-errc:
		if err != nil && ctx.Err() == nil {
			runErr = fmt.Errorf("control plane client: %w", err)
		}
	}
	shutdown(p, f.shutdownTimeout)
	return runErr
}

// shutdown stops every listener and drains up to timeout.
func shutdown(p *proxy, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		p.log.Warn("drain cut short", "err", err)
		return
	}
	p.log.Info("drained")
}

// reloadOnHUP reloads the configuration file on every SIGHUP until ctx ends. A file that
// fails to load, compile or bind keeps the running configuration.
func reloadOnHUP(ctx context.Context, p *proxy, path string, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			p.log.Info("SIGHUP: reloading config", "file", path)
			if err := p.applyFile(path); err != nil {
				p.log.Error("reload failed; the running config keeps serving", "file", path, "err", err)
			}
		}
	}
}
