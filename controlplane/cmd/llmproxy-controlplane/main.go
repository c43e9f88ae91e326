// Command llmproxy-controlplane is the LLMProxy control plane: it stores the configuration
// (SQLite file or PostgreSQL), validates every change, serves the admin API over gRPC and
// REST, and streams versioned snapshots to proxies over ADS.
//
// Usage:
//
//	llmproxy-controlplane [--store DSN] [--grpc-addr ADDR] [--http-addr ADDR]
//	    [--bootstrap FILE] [--history N] [--log-level LEVEL] [--shutdown-timeout DURATION]
//	    [--tls-cert FILE --tls-key FILE [--client-ca FILE]]
//
// One gRPC server on --grpc-addr carries the admin API, ADS, grpc.health.v1 and server
// reflection. --http-addr serves the REST façade under /api/v1/, /api/v1/openapi.json,
// /health, /metrics and the operator console under /ui/ (static files that call the REST
// API). When LLMPROXY_ADMIN_AUTH_TOKEN is set, every admin call needs
// "Authorization: Bearer <token>", and so does ADS unless LLMPROXY_XDS_AUTH_TOKEN sets a
// token of its own. With --tls-cert and --tls-key both ports serve TLS (the certificate is
// read again when its files change); --client-ca makes proxy streams (ADS, reports) require
// a client certificate from that CA naming the proxy's node id (mTLS). SIGTERM or SIGINT
// stops it gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/llmproxy-go/llmproxy/controlplane/xds"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/console"
	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	"github.com/llmproxy-go/llmproxy/controlplane/snapshot"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// tokenEnv names the environment variable holding the admin bearer token.
const tokenEnv = manifest.AdminTokenEnv

type options struct {
	store           string
	grpcAddr        string
	httpAddr        string
	bootstrap       string
	history         int
	logLevel        string
	shutdownTimeout time.Duration
	tlsCert         string
	tlsKey          string
	clientCA        string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("llmproxy-controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.store, "store", "sqlite:.data/controlplane.db", "config store: sqlite:PATH or postgres://...")
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:18000", "gRPC address: admin API, ADS, grpc.health.v1, reflection")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:18001", "HTTP address: REST API under /api/v1/, /health, /metrics, the console under /ui/")
	fs.StringVar(&o.bootstrap, "bootstrap", "", "YAML config applied when the store is empty")
	fs.IntVar(&o.history, "history", store.DefaultHistory, "revisions kept in the store's history (at least 1)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 15*time.Second, "longest graceful shutdown before connections are cut")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve gRPC and REST over TLS with the certificate (PEM, chain after it) in `FILE`; reloaded when it changes")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert in `FILE`")
	fs.StringVar(&o.clientCA, "client-ca", "", "proxy streams (ADS, reports) require a client certificate signed by the CAs in `FILE` (PEM) naming their node id (mTLS); needs --tls-cert")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.history < 1 {
		fmt.Fprintf(stderr, "llmproxy-controlplane: invalid --history %d: keep at least 1 revision\n", o.history)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "llmproxy-controlplane: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := checkTLSFlags(o); err != nil {
		fmt.Fprintf(stderr, "llmproxy-controlplane: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "llmproxy-controlplane: invalid --log-level %q: want debug, info, warn or error\n", o.logLevel)
		return 2
	}
	// redact.ReplaceAttr: a protobuf message logged anywhere shows no secret (marked in config.proto).
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: redact.ReplaceAttr}))
	if err := serve(ctx, o, log); err != nil {
		log.Error("control plane failed", "err", err)
		return 1
	}
	return 0
}

// serve runs the control plane until ctx is done, then shuts it down gracefully.
func serve(ctx context.Context, o options, log *slog.Logger) error {
	st, err := store.Open(ctx, o.store, log.With("component", "store"), store.WithHistory(o.history))
	if err != nil {
		return err
	}
	defer st.Close()

	if o.bootstrap != "" {
		if err := bootstrap(ctx, st, o.bootstrap, log); err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := admin.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}

	lt, err := loadTLS(o, log)
	if err != nil {
		return err
	}
	token := os.Getenv(tokenEnv)
	gopts := append(xds.ServerOptions(), grpc.MaxRecvMsgSize(admin.MaxMessageBytes), grpc.ChainUnaryInterceptor(
		metrics.UnaryInterceptor(),
		admin.LoggingInterceptor(log.With("component", "admin")),
		admin.AuthInterceptor(token),
	))
	if lt.grpc != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(lt.grpc)))
	}
	gs := grpc.NewServer(gopts...)

	// xdsCtx ends before the gRPC server stops, so ADS streams can close by themselves.
	xdsCtx, stopXDS := context.WithCancel(context.WithoutCancel(ctx))
	defer stopXDS()
	xdsSrv, err := setupXDS(xdsCtx, gs, st, reg, lt.requireClientCert, log.With("component", "xds"))
	if err != nil {
		return fmt.Errorf("set up xds: %w", err)
	}
	fleet, stopReports, err := setupReports(xdsCtx, gs, st, xdsSrv, reg, log.With("component", "reports"))
	if err != nil {
		return fmt.Errorf("set up reports: %w", err)
	}
	defer stopReports() // before st.Close: the last usage flush writes to the store
	adminv1.RegisterAdminServiceServer(gs, admin.New(st, fleet, log.With("component", "admin")))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus(adminv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(gs)

	lc := listenConfig()
	gl, err := lc.Listen(ctx, "tcp", o.grpcAddr)
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	hl, err := lc.Listen(ctx, "tcp", o.httpAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("listen http: %w", err)
	}

	gwCtx, stopGateway := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGateway()
	handler, err := admin.NewHTTPHandler(gwCtx, admin.HTTPOptions{
		GRPCAddr: gl.Addr().String(),
		GRPCTLS:  lt.gateway,
		Store:    st,
		Registry: reg,
		Logger:   log.With("component", "rest"),
	})
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}
	ui, err := console.New()
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}
	hsrv := &http.Server{
		Handler:           withConsole(handler, ui),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
		TLSConfig:         lt.http,
	}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	go func() {
		if lt.http != nil {
			errc <- hsrv.ServeTLS(hl, "", "") // the certificate comes from TLSConfig
			return
		}
		errc <- hsrv.Serve(hl)
	}()
	log.Info("control plane listening",
		"grpc_addr", gl.Addr().String(),
		"http_addr", hl.Addr().String(),
		"store", storeKind(o.store),
		"admin_auth", token != "",
		"tls", lt.grpc != nil,
		"client_certificates", lt.requireClientCert)
	warnPlaintext(log, lt, gl.Addr().String(), hl.Addr().String())

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", o.shutdownTimeout.String())
	case serveErr = <-errc:
		log.Error("server stopped", "err", serveErr)
	}

	hs.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := hsrv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown cut short", "err", err)
		hsrv.Close()
	}
	stopGateway()
	stopXDS()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-sctx.Done():
		log.Warn("grpc graceful stop timed out; closing connections")
		gs.Stop()
		<-stopped
	}
	log.Info("stopped")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return serveErr
	}
	return nil
}

// bootstrap stores the YAML file at path when the store is empty (revision 0). The file is
// checked with defaults applied but stored as written, so exports stay compact. A store that
// already holds a config (or that another replica bootstraps first) is left alone.
func bootstrap(ctx context.Context, st store.Store, path string, log *slog.Logger) error {
	rev, _, err := st.Load(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if rev != 0 {
		log.Info("store holds a config; bootstrap file not applied", "revision", rev, "file", path)
		return nil
	}
	data, err := configfile.ReadFile(path)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	f, err := configfile.Parse(path, data)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if _, err := f.Validate(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	cfg := f.Config()
	if err := snapshot.CheckSize(cfg); err != nil {
		return fmt.Errorf("bootstrap: %s: %w", path, err)
	}
	zero := uint64(0)
	change := store.Change{Operation: "Bootstrap", Message: "--bootstrap " + path, Actor: "bootstrap"}
	rev, err = st.Update(ctx, &zero, change, func(uint64, *configv1.Config) (*configv1.Config, error) { return cfg, nil })
	switch {
	case errors.Is(err, store.ErrConflict):
		log.Info("store was bootstrapped by another replica; bootstrap file not applied", "file", path)
		return nil
	case err != nil:
		return fmt.Errorf("bootstrap: %w", err)
	}
	log.Info("bootstrap config applied", "revision", rev, "file", path)
	return nil
}

// withConsole serves the console under console.Prefix beside api, and sends a browser that
// asks for / to it.
func withConsole(api http.Handler, ui http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, ui)
	mux.Handle("GET /{$}", http.RedirectHandler(console.Prefix, http.StatusFound))
	mux.Handle("/", api)
	return mux
}

// storeKind names the store backend without its credentials.
func storeKind(dsn string) string {
	scheme, rest, _ := strings.Cut(dsn, ":")
	if strings.HasPrefix(scheme, "sqlite") {
		return "sqlite:" + strings.TrimPrefix(rest, "//")
	}
	return scheme
}
