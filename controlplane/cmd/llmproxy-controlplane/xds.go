package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/xds"
)

// The xDS server signals fleet changes, so writes that wait for the fleet need not poll.
var _ admin.FleetWatcher = (*xds.Server)(nil)

// setupXDS registers the ADS service on gs, starts publishing store revisions as snapshots
// and returns the xDS server (its fleet status feeds ListProxies). ctx is cancelled when the control plane
// shuts down, before gs stops: the publisher stops and ADS streams end. reg is the control
// plane's metrics registry. ADS (and report) streams must carry "authorization: Bearer
// <token>" with the token of LLMPROXY_XDS_AUTH_TOKEN, or of LLMPROXY_ADMIN_AUTH_TOKEN when
// that is unset (manifest.StreamToken); with neither set they are open. requireClientCert
// (--client-ca) makes them need a verified client certificate naming the node.
func setupXDS(ctx context.Context, gs *grpc.Server, st store.Store, reg *prometheus.Registry, requireClientCert bool, log *slog.Logger) (*xds.Server, error) {
	token, from := manifest.StreamToken(os.Getenv)
	if from == "" {
		log.Warn("ADS is open: set " + manifest.TokenEnv + " (or " + manifest.AdminTokenEnv + ") to require a bearer token from proxies")
	} else {
		log.Info("ADS requires a bearer token", "token_from", from)
	}
	srv, err := xds.New(ctx, xds.Options{
		Logger:            log,
		Registerer:        reg,
		Token:             token,
		TokenEnv:          from,
		RequireClientCert: requireClientCert,
	})
	if err != nil {
		return nil, err
	}
	srv.Register(gs)
	go func() {
		if err := srv.Run(ctx, st); err != nil {
			log.Error("xds publisher stopped", "err", err)
		}
	}()
	return srv, nil
}
