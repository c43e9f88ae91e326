package tlsconfig_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/e2e/pki"
)

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *pki.CA, dir, base, cn string, names ...string) pki.Files {
	t.Helper()
	f, err := ca.IssueFiles(dir, base, cn, names...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLoadPairErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	good := issue(t, ca, dir, "good", "a")
	other := issue(t, ca, dir, "other", "b")
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", filepath.Join(dir, "nope.crt"), good.Key, "nope.crt"},
		{"missing key", good.Cert, filepath.Join(dir, "nope.key"), "nope.key"},
		{"junk cert", junk, good.Key, "junk.pem"},
		{"key of another certificate", good.Cert, other.Key, "other.key"},
		{"no key file", good.Cert, "", "both a certificate and a key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tlsconfig.LoadPair(tt.cert, tt.key, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadPair: %v; want an error naming %q", err, tt.want)
			}
		})
	}
}

func TestPairReloadsWhenFilesChange(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	f := issue(t, ca, dir, "srv", "first")
	p, err := tlsconfig.LoadPair(f.Cert, f.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cn := p.Certificate().Leaf.Subject.CommonName; cn != "first" {
		t.Fatalf("CN %q; want first", cn)
	}

	// A half-done replacement (new certificate, old key) keeps the last good pair.
	c2, k2, err := ca.Issue("second")
	if err != nil {
		t.Fatal(err)
	}
	bumpAndWrite(t, f.Cert, c2)
	if cn := p.Certificate().Leaf.Subject.CommonName; cn != "first" {
		t.Fatalf("after a mismatched replacement: CN %q; want first still", cn)
	}
	// The key arrives: the new pair is served.
	bumpAndWrite(t, f.Key, k2)
	if cn := p.Certificate().Leaf.Subject.CommonName; cn != "second" {
		t.Fatalf("after the replacement: CN %q; want second", cn)
	}
	// A file that disappears keeps the current pair.
	if err := os.Remove(f.Cert); err != nil {
		t.Fatal(err)
	}
	if cn := p.Certificate().Leaf.Subject.CommonName; cn != "second" {
		t.Fatalf("cert file gone: CN %q; want second", cn)
	}
}

// bumpAndWrite replaces path with data and moves its modification time on, so the change is
// seen even on a file system with coarse timestamps.
func bumpAndWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(path, data); err != nil {
		t.Fatal(err)
	}
	later := st.ModTime().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}

func TestNodeMatches(t *testing.T) {
	ca := newCA(t, "ca")
	certPEM, _, err := ca.Issue("proxy-1", "proxy-1.fleet.example", "10.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, certPEM)
	for id, want := range map[string]bool{
		"proxy-1":               true, // common name
		"proxy-1.fleet.example": true, // DNS SAN
		"10.0.0.7":              false,
		"Proxy-1":               false,
		"proxy-2":               false,
		"":                      false,
	} {
		if got := tlsconfig.NodeMatches(c, id); got != want {
			t.Errorf("tlsconfig.NodeMatches(%q) = %v; want %v", id, got, want)
		}
	}
	if tlsconfig.NodeMatches(nil, "proxy-1") {
		t.Error("a nil certificate matched")
	}
	if got := strings.Join(tlsconfig.Names(c), ","); got != "proxy-1,proxy-1.fleet.example" {
		t.Errorf("Names = %s", got)
	}
}

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExposed(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:18000": false,
		"[::1]:18000":     false,
		"localhost:9000":  false,
		"127.0.0.2:80":    false,
		"0.0.0.0:3000":    true,
		"[::]:3000":       true,
		":3000":           true,
		"10.1.2.3:3000":   true,
		"proxy.lan:3000":  true,
	} {
		if got := tlsconfig.Exposed(addr); got != want {
			t.Errorf("tlsconfig.Exposed(%q) = %v; want %v", addr, got, want)
		}
	}
}

// TestServerAndClients runs real handshakes: a client with no certificate and one with a
// certificate of the client CA get in (the first unidentified), one with a certificate of
// another CA is refused; a pinned client accepts the server's own certificate only.
func TestServerAndClients(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, stranger := newCA(t, "server-ca"), newCA(t, "client-ca"), newCA(t, "stranger")
	srvFiles := issue(t, serverCA, dir, "srv", "cp", "127.0.0.1")
	srvPair, err := tlsconfig.LoadPair(srvFiles.Cert, srvFiles.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	clientPool := x509.NewCertPool()
	clientPool.AddCert(clientCA.Cert)
	serverPool := x509.NewCertPool()
	serverPool.AddCert(serverCA.Cert)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.Server(srvPair, clientPool))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan *x509.Certificate, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				st := tc.ConnectionState()
				peers <- tlsconfig.PeerCertificate(&st)
				_, _ = io.WriteString(c, "ok")
			}()
		}
	}()

	dial := func(cfg *tls.Config) (*x509.Certificate, error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		return <-peers, nil
	}

	if peer, err := dial(tlsconfig.Client(serverPool, nil)); err != nil || peer != nil {
		t.Errorf("no client certificate: peer %v, err %v; want in, unidentified", peer, err)
	}
	proxyFiles := issue(t, clientCA, dir, "proxy", "proxy-1")
	proxyPair, err := tlsconfig.LoadPair(proxyFiles.Cert, proxyFiles.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if peer, err := dial(tlsconfig.Client(serverPool, proxyPair)); err != nil || !tlsconfig.NodeMatches(peer, "proxy-1") {
		t.Errorf("client certificate of the client CA: peer %v, err %v; want proxy-1", peer, err)
	}
	strangerFiles := issue(t, stranger, dir, "stranger", "proxy-1")
	strangerPair, err := tlsconfig.LoadPair(strangerFiles.Cert, strangerFiles.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(tlsconfig.Client(serverPool, strangerPair)); err == nil {
		t.Error("a certificate of another CA was accepted")
	}
	if _, err := dial(tlsconfig.Client(x509.NewCertPool(), nil)); err == nil {
		t.Error("a client trusting nothing accepted the server")
	}

	if _, err := dial(tlsconfig.Pinned(srvPair)); err != nil {
		t.Errorf("pinned to the server's own certificate: %v", err)
	}
	otherFiles := issue(t, serverCA, dir, "other", "cp", "127.0.0.1")
	otherPair, err := tlsconfig.LoadPair(otherFiles.Cert, otherFiles.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(tlsconfig.Pinned(otherPair)); err == nil || !strings.Contains(err.Error(), "not this process's own") {
		t.Errorf("pinned to another certificate of the same CA: %v; want a refused handshake", err)
	}
}

func TestLoadPool(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	p, err := ca.WriteCA(dir, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconfig.LoadPool(p); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconfig.LoadPool(junk); err == nil || !strings.Contains(err.Error(), "junk.pem") {
		t.Errorf("junk CA file: %v; want an error naming it", err)
	}
	if _, err := tlsconfig.LoadPool(filepath.Join(dir, "none.pem")); err == nil || !strings.Contains(err.Error(), "none.pem") {
		t.Errorf("missing CA file: %v; want an error naming it", err)
	}
}
