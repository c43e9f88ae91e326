package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/xdsclient"
)

// runControlPlane follows the control plane at addr as node nodeID until ctx ends, keeping
// the last good snapshot in stateDir. apply compiles and applies one revision; its error is
// the NACK reason. The snapshot saved in stateDir, if any, is applied first, so a proxy
// started while the control plane is unreachable serves at once; the client then reconnects
// with backoff for as long as ctx lives. It returns nil when ctx ends.
func runControlPlane(ctx context.Context, addr, nodeID, stateDir string, apply func(revision string, cfg *configv1.Config) error, log *slog.Logger) error {
	return xdsclient.Run(ctx, xdsclient.Options{
		Addr:     addr,
		NodeID:   nodeID,
		StateDir: stateDir,
		Apply:    apply,
		Logger:   log.With("component", "xds"),
		Token:    controlPlaneToken(),
	})
}

// controlPlaneToken is the bearer token sent on every stream to the control plane: ADS and
// reports (the control plane checks both with one rule): LLMPROXY_XDS_AUTH_TOKEN, else
// LLMPROXY_ADMIN_AUTH_TOKEN (manifest.StreamToken).
func controlPlaneToken() string {
	token, _ := manifest.StreamToken(os.Getenv)
	return token
}
