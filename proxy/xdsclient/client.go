// Package xdsclient is the proxy's side of the control plane's delta ADS
// stream: it subscribes to the manifest, forwards, upstream groups and
// upstreams, assembles a whole configv1.Config when the resources it holds
// match the manifest of a revision exactly, hands it to an Apply function,
// and ACKs or NACKs (with the reason) accordingly. The last applied config
// is kept in a state directory so a proxy restarted while the control plane
// is down serves it at once.
//
// One goroutine runs one stream; a lost stream is reopened with jittered
// exponential backoff, announcing the versions of the applied resources
// (initial_resource_versions) so the control plane sends only what changed.
// The backoff grows until a stream brings the proxy to the control plane's
// revision (applied, or already held), not merely until a stream opens, so a
// response the proxy cannot take does not make it reconnect in a tight loop.
// A response the proxy cannot decode (over manifest.MaxMessageBytes, say)
// ends the stream; the next stream reports it as a NACK, so the fleet
// status shows why the proxy is stuck.
package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Default reconnect backoff bounds.
const (
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
)

// DefaultKeepalive is the default interval of HTTP/2 keepalive pings on an
// idle connection, so a dead control-plane host is noticed within a minute.
// The control plane permits pings this often (controlplane/xds.ServerOptions).
const DefaultKeepalive = 30 * time.Second

// Options configures [Run].
type Options struct {
	// Addr is the control plane's gRPC address, host:port. Required.
	Addr string
	// NodeID names this proxy in the control plane's fleet status. Required.
	NodeID string
	// StateDir keeps the last applied config (file StateFile, mode 0600).
	// Empty: nothing is saved or loaded.
	StateDir string
	// Apply installs a complete revision. It is called from Run's goroutine
	// only, one call at a time, with a config it may keep and modify; an
	// error refuses the revision (the control plane gets a NACK with the
	// error's text) and the previous config must keep serving. Required.
	Apply func(revision string, cfg *configv1.Config) error
	// Logger; nil discards logs.
	Logger *slog.Logger
	// Token, when set, is sent as "authorization: Bearer <token>" metadata
	// on the stream (the control plane's LLMPROXY_XDS_AUTH_TOKEN).
	Token string
	// TLS, when set, secures the connection: the control plane's certificate is checked
	// against it and, when the control plane asks (mTLS), its client certificate is
	// presented. Nil: plaintext.
	TLS *tls.Config
	// MinBackoff and MaxBackoff bound the reconnect delay; zero selects
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Keepalive is the ping interval on an idle connection; zero selects
	// DefaultKeepalive.
	Keepalive time.Duration
}

// Run loads the state saved in StateDir, if any, and applies it, so the
// proxy serves at once; then it follows the control plane until ctx is
// done, reconnecting with backoff whenever the stream breaks. It returns
// nil when ctx is done, and an error only for bad options. A saved state
// that cannot be read or applied is logged and ignored.
func Run(ctx context.Context, opts Options) error {
	if opts.Addr == "" || opts.NodeID == "" || opts.Apply == nil {
		return errors.New("run xds client: Addr, NodeID and Apply are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("control_plane", opts.Addr, "node_id", opts.NodeID)
	minB, maxB := cmpOr(opts.MinBackoff, DefaultMinBackoff), cmpOr(opts.MaxBackoff, DefaultMaxBackoff)

	c := &client{opts: opts, log: log}
	c.tracker = newTracker(c.applyAndSave)
	c.resume()

	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	conn, err := grpc.NewClient(opts.Addr,
		grpc.WithTransportCredentials(creds),
		// The limit the control plane keeps every snapshot within.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(manifest.MaxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cmpOr(opts.Keepalive, DefaultKeepalive),
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
	)
	if err != nil {
		return fmt.Errorf("run xds client: %w", err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)

	backoff := minB
	for {
		synced, err := c.session(ctx, ads)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			backoff = minB
		}
		// Equal jitter: half fixed, half random, so a fleet that lost the
		// same control plane does not come back in lockstep.
		delay := backoff/2 + rand.N(backoff/2+1)
		log.Warn("control plane stream ended; reconnecting", "err", err, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, maxB)
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

type client struct {
	opts    Options
	log     *slog.Logger
	tracker *tracker
	// undecodable is why the last stream ended on a response the client could not
	// decode; the next stream reports it as a NACK. Nil otherwise.
	undecodable error
}

// resume applies the saved state and seeds the tracker with it.
func (c *client) resume() {
	rev, cfg, ok, err := LoadState(c.opts.StateDir)
	if err != nil {
		c.log.Error("cannot read saved config; waiting for the control plane", "err", err)
		return
	}
	if !ok {
		return
	}
	n, _ := strconv.ParseUint(rev, 10, 64)
	if err := c.opts.Apply(rev, proto.Clone(cfg).(*configv1.Config)); err != nil {
		c.log.Error("saved config refused; waiting for the control plane", "revision", rev, "err", err)
		return
	}
	if err := c.tracker.seed(n, cfg); err != nil {
		c.log.Error("cannot resume from saved config", "revision", rev, "err", err)
		return
	}
	c.log.Info("serving saved config until the control plane answers", "revision", rev)
}

// applyAndSave is the tracker's apply: Apply gets its own copy, and the
// config is saved once applied.
func (c *client) applyAndSave(rev uint64, cfg *configv1.Config) error {
	revision := revisionString(rev)
	if err := c.opts.Apply(revision, proto.Clone(cfg).(*configv1.Config)); err != nil {
		c.log.Warn("refused config from the control plane", "revision", revision, "err", err)
		return err
	}
	c.log.Info("applied config from the control plane", "revision", revision)
	if c.opts.StateDir != "" {
		if err := SaveState(c.opts.StateDir, revision, cfg); err != nil {
			c.log.Error("cannot save applied config", "revision", revision, "err", err)
		}
	}
	return nil
}

// session runs one stream until it fails or ctx is done. synced is true when
// the stream brought the client to the control plane's revision.
func (c *client) session(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.opts.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.opts.Token)
	}
	stream, err := ads.DeltaAggregatedResources(ctx, grpc.WaitForReady(false))
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	reqs := c.tracker.restart(&corev3.Node{Id: c.opts.NodeID})
	if c.undecodable != nil {
		// No nonce to answer: the response never decoded. The control plane records a
		// NACK carried by a subscription as one of the revision it serves.
		reqs[0].ErrorDetail = nack(c.undecodable)
	}
	for _, req := range reqs {
		if err := stream.Send(req); err != nil {
			return false, fmt.Errorf("subscribe: %w", recvErr(stream, err))
		}
	}
	c.undecodable = nil
	connected := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if undecodable(err) {
				c.undecodable = fmt.Errorf("cannot decode a response from the control plane: %w", err)
				c.log.Error("cannot decode a response from the control plane; it is reported as a NACK on the next stream", "err", err)
			}
			return c.tracker.synced, fmt.Errorf("receive: %w", err)
		}
		if !connected {
			c.log.Info("connected to the control plane")
			connected = true
		}
		if err := stream.Send(c.tracker.handle(resp)); err != nil {
			return c.tracker.synced, fmt.Errorf("answer: %w", recvErr(stream, err))
		}
	}
}

// undecodable reports whether a receive error means the client could not
// take the response it was sent: larger than its limit (ResourceExhausted)
// or not a valid message (Internal).
func undecodable(err error) bool {
	switch status.Code(err) {
	case codes.ResourceExhausted, codes.Internal:
		return true
	}
	return false
}

// recvErr turns io.EOF from Send into the stream's real status, which
// Recv reports once the responses already buffered are drained.
func recvErr(stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse], err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
}
