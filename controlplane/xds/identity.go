package xds

import (
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

// adsStream is the server side of a delta ADS stream.
type adsStream = discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer

// checkPeer applies the client-certificate rules to a new ADS stream. A peer whose
// certificate the TLS handshake verified (against --client-ca) gets a stream that refuses
// any request whose node id the certificate does not name (tlsconfig.NodeMatches); a peer
// without one is refused when RequireClientCert is set and let through otherwise. The
// returned stream is the one to serve; when it is a *certifiedStream, its refusal (if any)
// is the stream's final status.
func (s *Server) checkPeer(stream adsStream) (adsStream, error) {
	p, _ := peer.FromContext(stream.Context())
	addr := ""
	var cert *x509.Certificate
	if p != nil {
		if p.Addr != nil {
			addr = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			cert = tlsconfig.PeerCertificate(&ti.State)
		}
	}
	if cert == nil {
		if s.requireCert {
			s.log.Warn("refused ADS stream", "reason", "no client certificate", "address", addr)
			return nil, status.Error(codes.Unauthenticated, "ADS requires a client certificate signed by the control plane's --client-ca: start the proxy with --tls-cert and --tls-key")
		}
		return stream, nil
	}
	return &certifiedStream{adsStream: stream, s: s, cert: cert, addr: addr}, nil
}

// certifiedStream is an ADS stream from a peer with a verified client certificate: Recv
// ends the stream (as if the peer had closed it) at the first request whose node id the
// certificate does not name, and refusal reports why.
type certifiedStream struct {
	adsStream
	s    *Server
	cert *x509.Certificate
	addr string

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
	if id := node.GetId(); !tlsconfig.NodeMatches(c.cert, id) {
		names := strings.Join(tlsconfig.Names(c.cert), ", ")
		c.s.log.Warn("refused ADS stream", "reason", "node id not in the client certificate",
			"node_id", id, "certificate_names", names, "address", c.addr)
		err := status.Error(codes.PermissionDenied, fmt.Sprintf(
			"node id %q is not a name of the client certificate (common name or DNS name: %s): start the proxy with --node-id set to one of them, or give it its own certificate", id, names))
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
