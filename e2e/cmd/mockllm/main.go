// Command mockllm serves a fake OpenAI/Anthropic upstream (package e2e/mockllm) for demos,
// tests and benchmarks.
//
//	mockllm [--addr 127.0.0.1:8080] [--name NAME] [--latency D] [--ttft D] [--chunk-gap D]
//	        [--chunks N] [--status CODE] [--retry-after S] [--fail-times N] [--break-after N]
//	        [--body-size N] [--max-records N] [--log] [--shutdown-timeout D]
//	        [--tls-cert FILE --tls-key FILE]
//
// The first line on standard output is the bound address alone (host:port), so that
// --addr 127.0.0.1:0 can be used and parsed by a harness. SIGINT or SIGTERM shut it down
// (exit status 0). Request headers and admin endpoints are documented in package mockllm.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/mockllm"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mockllm:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mockllm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (port 0 picks a free port)")
	name := fs.String("name", "", "value of the X-Mock-Upstream response header (default: the bound address)")
	var b mockllm.Behaviour
	fs.DurationVar(&b.Latency, "latency", 0, "delay before the response headers")
	fs.DurationVar(&b.TTFT, "ttft", 0, "streams: delay before the first content chunk")
	fs.DurationVar(&b.ChunkGap, "chunk-gap", 0, "streams: delay between content chunks")
	fs.IntVar(&b.Chunks, "chunks", mockllm.DefaultChunks, "content chunks (words) per answer")
	fs.IntVar(&b.Status, "status", 0, "answer every request with this status (≥300: error JSON), e.g. 503 for a down upstream")
	fs.StringVar(&b.RetryAfter, "retry-after", "", "Retry-After header on error answers")
	fs.IntVar(&b.FailTimes, "fail-times", 0, "with --status: only the first N requests fail")
	fs.IntVar(&b.BreakAfter, "break-after", 0, "abort every stream after N content chunks (0: never)")
	fs.IntVar(&b.BodySize, "body-size", 0, "pad non-streaming answers to about N bytes")
	maxRecords := fs.Int("max-records", mockllm.DefaultMaxRecords, "requests remembered for /_mock/requests (0 or negative: off)")
	logRequests := fs.Bool("log", false, "log every request (JSON on stderr)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 5*time.Second, "on SIGTERM, how long handlers get to return after their requests are cancelled")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with the certificate (PEM) in this file (with --tls-key)")
	tlsKey := fs.String("tls-key", "", "private key (PEM) of --tls-cert")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	bound := ln.Addr().String()
	if *name == "" {
		*name = bound
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	opts := mockllm.Options{Name: *name, Behaviour: b, MaxRecords: *maxRecords}
	if *maxRecords == 0 {
		opts.MaxRecords = -1
	}
	if *logRequests {
		opts.Logger = logger
	}
	srv, err := mockllm.New(opts)
	if err != nil {
		ln.Close()
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Handlers wait on their request context; cancelling the base context on shutdown ends
	// slow answers instead of holding the process for the whole timeout.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	hs := &http.Server{
		Handler:           srv,
		ConnState:         srv.ConnState,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	fmt.Fprintln(stdout, bound)
	logger.Info("mockllm listening", slog.String("addr", bound), slog.String("name", *name))

	errc := make(chan error, 1)
	go func() {
		if *tlsCert != "" {
			errc <- hs.ServeTLS(ln, *tlsCert, *tlsKey)
			return
		}
		errc <- hs.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("mockllm shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	cancelBase()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down: %w", err)
	}
	_ = hs.Close()
	return nil
}
