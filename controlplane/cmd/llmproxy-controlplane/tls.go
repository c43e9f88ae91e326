package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
)

// listenerTLS is the TLS of the control plane's listeners; the zero value is plaintext.
type listenerTLS struct {
	// grpc secures the gRPC port: the serving certificate and, with --client-ca, the CAs a
	// proxy's client certificate must come from. Nil: plaintext.
	grpc *tls.Config
	// http secures the REST port (no client certificates). Nil: plaintext.
	http *tls.Config
	// gateway is how the REST gateway reaches the gRPC port over loopback: it accepts the
	// control plane's own certificate. Nil: plaintext.
	gateway *tls.Config
	// requireClientCert is set by --client-ca: proxy streams (ADS, reports) need a client
	// certificate.
	requireClientCert bool
}

// checkTLSFlags refuses flag combinations that cannot work.
func checkTLSFlags(o options) error {
	switch {
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	case o.clientCA != "" && o.tlsCert == "":
		return errors.New("--client-ca needs TLS: give --tls-cert and --tls-key too")
	}
	return nil
}

// loadTLS reads the files the TLS flags name. The certificate is read again whenever its
// files change; the client CA file only at start.
//
// Client certificates are asked for on the gRPC port but not required by the handshake
// (tls.VerifyClientCertIfGiven): one port serves proxies (ADS, reports) and operators (admin
// API, llmproxyctl, the REST gateway), and operators authenticate with the admin token. A
// certificate that is presented must come from --client-ca; proxy streams then require one
// (see xds.Options.RequireClientCert) and check that it names the proxy's node id.
func loadTLS(o options, log *slog.Logger) (listenerTLS, error) {
	if o.tlsCert == "" {
		return listenerTLS{}, nil
	}
	pair, err := tlsconfig.LoadPair(o.tlsCert, o.tlsKey, log.With("component", "tls"))
	if err != nil {
		return listenerTLS{}, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
	}
	var clientCAs *x509.CertPool
	if o.clientCA != "" {
		if clientCAs, err = tlsconfig.LoadPool(o.clientCA); err != nil {
			return listenerTLS{}, fmt.Errorf("load --client-ca: %w", err)
		}
	}
	return listenerTLS{
		grpc:              tlsconfig.Server(pair, clientCAs),
		http:              tlsconfig.Server(pair, nil),
		gateway:           tlsconfig.Pinned(pair),
		requireClientCert: clientCAs != nil,
	}, nil
}

// warnPlaintext logs a warning for each listener that serves plaintext on an address other
// machines can reach: admin tokens and the fleet's upstream credentials would cross the
// network in clear.
func warnPlaintext(log *slog.Logger, lt listenerTLS, grpcAddr, httpAddr string) {
	if lt.grpc != nil {
		return
	}
	for _, l := range []struct{ flag, addr string }{{"--grpc-addr", grpcAddr}, {"--http-addr", httpAddr}} {
		if tlsconfig.Exposed(l.addr) {
			log.Warn("plaintext listener on a non-loopback address: admin tokens and upstream credentials cross the network in clear; set --tls-cert and --tls-key",
				"flag", l.flag, "addr", l.addr)
		}
	}
}
