package server

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/e2e/pki"
)

// TestForwardTLS: a forward with a certificate serves HTTPS (and a plaintext client gets no
// answer); a certificate replaced on disk is served to the next connection without a new
// runtime; dropping tls reopens the forward in plaintext on the same address.
func TestForwardTLS(t *testing.T) {
	dir := t.TempDir()
	ca := pki.CAFor(t, "test-ca")
	pair := ca.PairFor(t, dir, "fwd", "first", "127.0.0.1")
	https := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
	}}
	// getTLS answers the body and the common name of the certificate served.
	getTLS := func(addr string) (string, string) {
		t.Helper()
		resp, err := https.Get("https://" + addr + "/")
		if err != nil {
			t.Fatalf("GET https://%s/: %v", addr, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.TLS.PeerCertificates[0].Subject.CommonName
	}

	s, _, _ := newTestServer(t, -1)
	a := freeAddr(t)
	rt := runtime("r1", [2]string{"a", a})
	rt.Forwards[0].TLS = pair
	if err := s.Apply(rt); err != nil {
		t.Fatal(err)
	}
	if body, cn := getTLS(a); body != "a r1" || cn != "first" {
		t.Fatalf("HTTPS: %q from %q; want \"a r1\" from first", body, cn)
	}
	if got, err := get(a, "/"); err == nil && got == "a r1" {
		t.Fatal("a plaintext request was served by the TLS forward")
	}

	// Renewal on disk: same runtime, same listener, new certificate.
	s.mu.Lock()
	before := s.live["a"]
	s.mu.Unlock()
	if _, err := ca.IssueFiles(dir, "fwd", "second", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { _, cn := getTLS(a); return cn == "second" }, "the replaced certificate is served")

	// A new runtime naming the same files keeps the listener.
	certFile, keyFile := pair.Files()
	again, err := tlsconfig.LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt2 := runtime("r2", [2]string{"a", a})
	rt2.Forwards[0].TLS = again
	if err := s.Apply(rt2); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	kept := s.live["a"] == before
	s.mu.Unlock()
	if !kept {
		t.Error("a runtime naming the same certificate files reopened the forward")
	}

	// Without tls: plaintext on the same address, once the TLS listener is gone (until then
	// the kernel may hand a connection to either).
	if err := s.Apply(runtime("r3", [2]string{"a", a})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-before.stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the TLS listener kept serving after tls was dropped")
	}
	mustGet(t, a, "/", "a r3")
}
