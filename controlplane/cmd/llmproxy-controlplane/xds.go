package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
)

// setupXDS registers the ADS service on gs, starts publishing store revisions as snapshots
// and returns the fleet status for ListProxies. ctx is cancelled when the control plane
// shuts down, before gs stops. reg is the control plane's metrics registry. A nil Fleet
// means no proxy is tracked.
//
// This is the hook for the xDS server (package controlplane/xds); until it lands, the
// control plane serves the admin API only.
func setupXDS(ctx context.Context, gs *grpc.Server, st store.Store, reg *prometheus.Registry, log *slog.Logger) (admin.Fleet, error) {
	return nil, nil
}
