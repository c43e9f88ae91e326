package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/llmproxy-go/llmproxy/proxy/report"
	"github.com/llmproxy-go/llmproxy/proxy/xdsclient"
)

// startReports streams reports to the control plane at addr every interval (and on breaker
// changes), over tc (nil: plaintext), until the returned stop func is called; stop makes the last report, waits for
// it to be delivered (report.FlushTimeout at most) and returns. Call stop after the drain,
// so the drained requests are counted.
func startReports(p *proxy, addr, nodeID string, interval time.Duration, tc *tls.Config, log *slog.Logger) (stop func(), err error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(controlPlaneCredentials(tc)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                xdsclient.DefaultKeepalive,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("start reports: %w", err)
	}
	rep, err := report.New(report.Options{
		Conn:     conn,
		NodeID:   nodeID,
		Token:    controlPlaneToken(),
		Interval: interval,
		Sources:  []report.Source{report.Upstreams(p.holder), report.Models(p.metrics.Models), report.Consumers(p.metrics.Consumers), report.Caches(p.holder, p.metrics)},
		Revision: func() string {
			if rt := p.holder.Load(); rt != nil {
				return rt.Revision
			}
			return ""
		},
		Logger: log.With("component", "report"),
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start reports: %w", err)
	}
	p.reg.OnBreakerChange(rep.Trigger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rep.Run(ctx)
	}()
	return func() {
		p.reg.OnBreakerChange(nil)
		cancel()
		<-done
		conn.Close()
	}, nil
}
