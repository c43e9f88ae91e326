package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/xdsclient"
)

// runControlPlane follows the control plane at --control-plane as node --node-id until ctx
// ends, keeping the last good snapshot in --state-dir; tc secures the connection (nil:
// plaintext). apply compiles and applies one revision; its error is the NACK reason. The
// snapshot saved in the state dir, if any, is applied first, so a proxy started while the
// control plane is unreachable serves at once; the client then reconnects with backoff for
// as long as ctx lives. It returns nil when ctx ends.
func runControlPlane(ctx context.Context, f *flags, tc *tls.Config, apply func(revision string, cfg *configv1.Config) error, log *slog.Logger) error {
	return xdsclient.Run(ctx, xdsclient.Options{
		Addr:     f.controlPlane,
		NodeID:   f.nodeID,
		StateDir: f.stateDir,
		Apply:    apply,
		Logger:   log.With("component", "xds"),
		Token:    controlPlaneToken(),
		TLS:      tc,
	})
}

// controlPlaneToken is the bearer token sent on every stream to the control plane: ADS and
// reports (the control plane checks both with one rule): LLMPROXY_XDS_AUTH_TOKEN, else
// LLMPROXY_ADMIN_AUTH_TOKEN (manifest.StreamToken).
func controlPlaneToken() string {
	token, _ := manifest.StreamToken(os.Getenv)
	return token
}

// controlPlaneCredentials are the gRPC credentials of tc (nil: plaintext).
func controlPlaneCredentials(tc *tls.Config) credentials.TransportCredentials {
	if tc == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(tc)
}

// checkTLSFlags refuses TLS flags that cannot work together.
func checkTLSFlags(f *flags) error {
	switch {
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	case (f.controlPlaneCA != "" || f.tlsCert != "") && f.controlPlane == "":
		return errors.New("--control-plane-ca, --tls-cert and --tls-key secure the connection to the control plane: they need --control-plane")
	}
	return nil
}

// controlPlaneTLS returns the TLS settings of the connections to the control plane (ADS and
// reports): TLS when --control-plane-ca or --tls-cert is given (the system's CAs unless
// --control-plane-ca names others), nil (plaintext) otherwise, with a warning when the
// control plane is not on this machine. A client certificate that does not name the node id
// is reported at once: the control plane would refuse it.
func controlPlaneTLS(f *flags, log *slog.Logger) (*tls.Config, error) {
	if f.controlPlaneCA == "" && f.tlsCert == "" {
		if tlsconfig.Exposed(f.controlPlane) {
			log.Warn("the connection to the control plane is plaintext: the fleet's upstream credentials cross the network in clear; set --control-plane-ca (and --tls-cert/--tls-key)",
				"control_plane", f.controlPlane)
		}
		return nil, nil
	}
	tc, pair, err := tlsconfig.ClientFiles(f.controlPlaneCA, f.tlsCert, f.tlsKey, log.With("component", "tls"))
	if err != nil {
		return nil, fmt.Errorf("load TLS files for the control plane: %w", err)
	}
	if pair != nil {
		if leaf := pair.Certificate().Leaf; !tlsconfig.NodeMatches(leaf, f.nodeID) {
			log.Warn("the client certificate does not name this proxy's node id; a control plane that checks client certificates will refuse it",
				"node_id", f.nodeID, "certificate_names", strings.Join(tlsconfig.Names(leaf), ", "))
		}
	}
	return tc, nil
}
