package xds

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
)

// The client-certificate rules of every stream a proxy opens (ADS, reports): a peer whose
// certificate the TLS handshake verified (against --client-ca) may speak only for a node id
// the certificate names (tlsconfig.NodeMatches), else the stream ends with
// PermissionDenied; a peer without one is refused (Unauthenticated) when RequireClientCert
// is set and let through otherwise. Refusals are logged.

// adsStream is the server side of a delta ADS stream.
type adsStream = discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer

// peerIdentity returns the verified client certificate of ctx's peer (nil when it
// presented none) and the peer's address.
func peerIdentity(ctx context.Context) (*x509.Certificate, string) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, ""
	}
	addr := ""
	if p.Addr != nil {
		addr = p.Addr.String()
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		return tlsconfig.PeerCertificate(&ti.State), addr
	}
	return nil, addr
}

// checkCertificate refuses a stream without a client certificate when one is required.
func (s *Server) checkCertificate(ctx context.Context) error {
	cert, addr := peerIdentity(ctx)
	if cert != nil || !s.requireCert {
		return nil
	}
	s.metrics.refused.WithLabelValues("no_certificate").Inc()
	s.log.Warn("refused proxy stream", "reason", "no client certificate", "address", addr)
	return status.Error(codes.Unauthenticated, "proxy streams require a client certificate signed by the control plane's --client-ca: start the proxy with --tls-cert and --tls-key")
}

// AuthorizeNode checks that the stream of ctx may speak for node nodeID: when its peer
// presented a verified client certificate, the certificate must name the node; it fails
// with PermissionDenied otherwise. A peer without a certificate passes (Authorize decides
// whether one is required).
func (s *Server) AuthorizeNode(ctx context.Context, nodeID string) error {
	cert, addr := peerIdentity(ctx)
	if cert == nil || tlsconfig.NodeMatches(cert, nodeID) {
		return nil
	}
	names := strings.Join(tlsconfig.Names(cert), ", ")
	s.metrics.refused.WithLabelValues("node_not_in_certificate").Inc()
	s.log.Warn("refused proxy stream", "reason", "node id not in the client certificate",
		"node_id", nodeID, "certificate_names", names, "address", addr)
	return status.Error(codes.PermissionDenied, fmt.Sprintf(
		"node id %q is not a name of the client certificate (common name or DNS name: %s): start the proxy with --node-id set to one of them, or give it its own certificate", nodeID, names))
}

// checkPeer applies the rules to a new ADS stream and returns the stream to serve: the
// stream itself for a peer without a certificate, else a *certifiedStream whose refusal
// (if any) is the stream's final status.
func (s *Server) checkPeer(stream adsStream) (adsStream, error) {
	if err := s.checkCertificate(stream.Context()); err != nil {
		return nil, err
	}
	if cert, _ := peerIdentity(stream.Context()); cert == nil {
		return stream, nil
	}
	return &certifiedStream{adsStream: stream, s: s}, nil
}

// certifiedStream is an ADS stream from a peer with a verified client certificate: Recv
// ends the stream (as if the peer had closed it) at the first request whose node id the
// certificate does not name, and refusal reports why.
type certifiedStream struct {
	adsStream
	s *Server

	named bool // a request with a node id passed (Recv is called from one goroutine)

	mu      sync.Mutex
	refused error
}

func (c *certifiedStream) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) {
	req, err := c.adsStream.Recv()
	if err != nil {
		return nil, err
	}
	node := req.GetNode()
	if node == nil && c.named {
		return req, nil // later requests may leave the node out
	}
	if err := c.s.AuthorizeNode(c.Context(), node.GetId()); err != nil {
		c.mu.Lock()
		c.refused = err
		c.mu.Unlock()
		return nil, err
	}
	c.named = true
	return req, nil
}

// refusal returns the status that ended the stream, or nil when none did.
func (c *certifiedStream) refusal() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}
