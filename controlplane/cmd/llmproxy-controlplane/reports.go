package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/fleet"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/xds"
)

// The admin API's fleet keeps the xDS server's change signal, and adds the report views.
var (
	_ admin.FleetWatcher = (*fleet.Reports)(nil)
	_ admin.FleetReports = (*fleet.Reports)(nil)
)

// setupReports registers the report service on gs, with the ADS streams' auth rule, and
// starts the usage flusher. The returned Reports is the admin API's fleet: the ADS status
// of srv with the reports' health data, and the fleet views. The end of ctx, or stop, ends
// the report streams and makes the last usage flush; stop returns once it is done (call it
// before closing the store).
func setupReports(ctx context.Context, gs *grpc.Server, st store.Store, srv *xds.Server, reg *prometheus.Registry, log *slog.Logger) (reports *fleet.Reports, stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	reports, err = fleet.New(ctx, fleet.Options{
		Store:         st,
		Status:        srv,
		Authorize:     srv.Authorize,
		AuthorizeNode: srv.AuthorizeNode,
		Logger:        log,
		Registerer:    reg,
	})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	reports.Register(gs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = reports.Run(ctx)
	}()
	return reports, func() { cancel(); <-done }, nil
}
