// Package tlsconfig builds the TLS settings of every connection of the fleet that crosses a
// network, from PEM files named on command lines and in the configuration: the control
// plane's gRPC and REST listeners, the proxies' and llmproxyctl's connections to it, the
// proxies' forwards and their upstream clients. Both halves import it (the control plane and
// the proxy must agree on one rule: how a proxy's node id is read from its certificate, see
// NodeMatches), so it depends on nothing else of the repository.
//
// A certificate and its key are a Pair, read again when either file changes (checked on every
// handshake by modification time and size), so a certificate renewed on disk is served
// without a restart; a replacement that cannot be loaded (a half-written file, a key that
// does not match) is logged and the last good pair keeps serving. CA files are read once.
package tlsconfig

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// MinVersion is the oldest TLS version any listener or client of the fleet accepts.
const MinVersion = tls.VersionTLS12

// Pair is a certificate and its private key read from two PEM files, reloaded when the files
// change. Its methods are safe for concurrent use.
type Pair struct {
	certFile, keyFile string
	log               *slog.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded stamp // of the files cert was read from
	failed stamp // of the files whose load failed last (logged once)
}

// stamp identifies a version of the two files.
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// LoadPair reads the certificate (with any intermediates after it) from certFile and its key
// from keyFile. It fails, naming the file, when either cannot be read or parsed or when the
// key does not match the certificate. log receives reload failures; nil discards them.
func LoadPair(certFile, keyFile string, log *slog.Logger) (*Pair, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("load certificate: both a certificate and a key file are needed")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pair{certFile: certFile, keyFile: keyFile, log: log}
	st, err := p.stat()
	if err != nil {
		return nil, err
	}
	cert, err := p.load()
	if err != nil {
		return nil, err
	}
	p.cert, p.loaded = cert, st
	return p, nil
}

// Files returns the certificate and key file names.
func (p *Pair) Files() (certFile, keyFile string) { return p.certFile, p.keyFile }

// Certificate returns the current certificate, reading the files again first when they
// changed since the last read. When the new files cannot be loaded it returns the last good
// certificate and logs why (once per version of the files).
func (p *Pair) Certificate() *tls.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, err := p.stat()
	if err != nil || st == p.loaded {
		// A file that vanished for a moment (a replacement by rename) keeps the current one.
		return p.cert
	}
	if st == p.failed {
		return p.cert
	}
	cert, err := p.load()
	if err != nil {
		p.failed = st
		p.log.Warn("certificate files changed but cannot be loaded; the previous certificate stays in use",
			"cert_file", p.certFile, "key_file", p.keyFile, "err", err)
		return p.cert
	}
	p.cert, p.loaded = cert, st
	p.log.Info("certificate reloaded", "cert_file", p.certFile, "subject", cert.Leaf.Subject.String(),
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return p.cert
}

// GetCertificate is a tls.Config.GetCertificate callback serving the pair.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate callback presenting the pair.
func (p *Pair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

func (p *Pair) stat() (stamp, error) {
	c, err := os.Stat(p.certFile)
	if err != nil {
		return stamp{}, fmt.Errorf("read certificate: %w", err)
	}
	k, err := os.Stat(p.keyFile)
	if err != nil {
		return stamp{}, fmt.Errorf("read key: %w", err)
	}
	return stamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

func (p *Pair) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(p.certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(p.keyFile)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error names neither file; never echo the key's content.
		return nil, fmt.Errorf("load certificate %s with key %s: %w", p.certFile, p.keyFile, err)
	}
	return &cert, nil
}

// LoadPool reads a PEM file of one or more CA certificates.
func LoadPool(caFile string) (*x509.CertPool, error) {
	pool, _, err := ReadCA(caFile)
	return pool, err
}

// ReadCA is LoadPool that also returns the SHA-256 of the file, which tells two versions
// of it apart (a CA bundle's identity, for state kept across configurations).
func ReadCA(caFile string) (*x509.CertPool, [sha256.Size]byte, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, [sha256.Size]byte{}, fmt.Errorf("read CA file %s: no PEM certificate in it", caFile)
	}
	return pool, sha256.Sum256(data), nil
}

// Server returns the settings of a TLS listener serving pair. With clientCAs set, a client
// may present a certificate, which must then be signed by one of them (the handshake fails
// otherwise); a client without one is let in, and what it may do is decided per call (see
// PeerCertificate). nil clientCAs asks for no client certificate.
func Server(pair *Pair, clientCAs *x509.CertPool) *tls.Config {
	c := &tls.Config{MinVersion: MinVersion, GetCertificate: pair.GetCertificate}
	if clientCAs != nil {
		c.ClientCAs = clientCAs
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// Client returns the settings of a TLS client that trusts the CAs in roots (nil: the
// system's) and presents pair when the server asks for a certificate (nil: none).
func Client(roots *x509.CertPool, pair *Pair) *tls.Config {
	c := &tls.Config{MinVersion: MinVersion, RootCAs: roots}
	if pair != nil {
		c.GetClientCertificate = pair.GetClientCertificate
	}
	return c
}

// ClientFiles is Client on files: the CAs of caFile ("" for the system's) and the pair of
// certFile and keyFile (both "" for none). It returns the pair too (nil for none). Errors
// name the file at fault.
func ClientFiles(caFile, certFile, keyFile string, log *slog.Logger) (*tls.Config, *Pair, error) {
	var roots *x509.CertPool
	if caFile != "" {
		var err error
		if roots, err = LoadPool(caFile); err != nil {
			return nil, nil, err
		}
	}
	var pair *Pair
	if certFile != "" || keyFile != "" {
		var err error
		if pair, err = LoadPair(certFile, keyFile, log); err != nil {
			return nil, nil, err
		}
	}
	return Client(roots, pair), pair, nil
}

// Pinned returns the settings of a client that accepts exactly the certificate pair serves
// now, whatever names it carries: for a process calling its own listener over loopback (the
// control plane's REST gateway calls its gRPC port), where the name dialled (127.0.0.1) is
// rarely one the certificate was issued for. The chain is not checked against a CA: the
// process trusts the certificate because it is its own.
func Pinned(pair *Pair) *tls.Config {
	return &tls.Config{
		MinVersion: MinVersion,
		// Go's name and chain check is replaced by VerifyConnection below, which is stricter:
		// one exact certificate.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			own := pair.Certificate()
			if len(cs.PeerCertificates) == 0 || len(own.Certificate) == 0 ||
				!bytes.Equal(cs.PeerCertificates[0].Raw, own.Certificate[0]) {
				return errors.New("verify loopback peer: the server's certificate is not this process's own")
			}
			return nil
		},
	}
}

// PeerCertificate returns the client certificate of a connection when the handshake
// verified it against the listener's client CAs, else nil.
func PeerCertificate(cs *tls.ConnectionState) *x509.Certificate {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	return cs.VerifiedChains[0][0]
}

// NodeMatches reports whether cert names the proxy node nodeID: the node id must equal the
// certificate's subject common name or one of its DNS subject alternative names, exactly
// (case included). Both are accepted because both are what CAs put a host's name in: a
// proxy's node id defaults to its host name. IP SANs, URIs and e-mail addresses never match.
func NodeMatches(cert *x509.Certificate, nodeID string) bool {
	if cert == nil || nodeID == "" {
		return false
	}
	return cert.Subject.CommonName == nodeID || slices.Contains(cert.DNSNames, nodeID)
}

// Names lists what NodeMatches accepts of cert, for messages: the common name first, then
// the DNS names.
func Names(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	var out []string
	if cn := cert.Subject.CommonName; cn != "" {
		out = append(out, cn)
	}
	for _, n := range cert.DNSNames {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Exposed reports whether a listener on addr ("host:port") is reachable from other
// machines: a wildcard or any address but loopback. A host name counts as exposed unless it
// is "localhost".
func Exposed(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
