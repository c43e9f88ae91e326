package main

import (
	"context"
	"errors"
	"log/slog"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// runControlPlane follows the control plane at addr as node nodeID until ctx ends, keeping
// the last good snapshot in stateDir. apply compiles and applies one revision; its error is
// the NACK reason.
func runControlPlane(ctx context.Context, addr, nodeID, stateDir string, apply func(revision string, cfg *configv1.Config) error, log *slog.Logger) error {
	return errors.New("control plane mode is not built yet")
}
