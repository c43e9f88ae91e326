package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
	"github.com/llmproxy-go/llmproxy/e2e/pki"
)

// End-to-end tests of TLS: an mTLS fleet (control plane, proxies, llmproxyctl), forwards
// that terminate TLS, upstreams behind a private CA, and client addresses behind trusted
// load balancers. Every certificate comes from a throwaway CA made by the test.

// testPKI is a CA and the files a test issued from it, in one directory.
type testPKI struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	caFile string
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	ca, err := pki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := ca.WriteCA(dir, name+".pem")
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, dir: dir, ca: ca, caFile: caFile}
}

// issue writes a certificate for common name cn and SANs names as base.crt and base.key
// (replacing earlier files of that name).
func (p *testPKI) issue(base, cn string, names ...string) pki.Files {
	p.t.Helper()
	f, err := p.ca.IssueFiles(p.dir, base, cn, names...)
	if err != nil {
		p.t.Fatal(err)
	}
	return f
}

// client returns an HTTP client that trusts the CA (and nothing else) and opens a new
// connection for every request, so each one sees the certificate served now.
func (p *testPKI) client() *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: roots},
	}}
}

// TestTLSFleet: a control plane serving gRPC and REST over TLS and requiring client
// certificates (--client-ca). A proxy without a client certificate is refused, and so is
// one whose certificate names another node; the proxy whose certificate names its node id
// gets the config and serves a request; llmproxyctl --ca talks to it, and without --ca does
// not. The fleet status lists the accepted proxy only.
func TestTLSFleet(t *testing.T) {
	t.Parallel()
	server, clients := newTestPKI(t, "server-ca"), newTestPKI(t, "client-ca")
	cpFiles := server.issue("controlplane", "controlplane", "127.0.0.1", "localhost")
	mocks := startMocks(t, nil, "tls-a", "tls-b")
	fwd := harness.FreeAddr(t)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, xdsBootstrap, map[string]any{
		"Port": harness.Port(t, fwd), "A": mocks["tls-a"].URL, "B": mocks["tls-b"].URL,
	}))

	bins := harness.Binaries(t)
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	harness.Start(t, bins.ControlPlane, []string{
		"--store", "sqlite:" + filepath.Join(t.TempDir(), "cp.db"),
		"--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--bootstrap", boot,
		"--tls-cert", cpFiles.Cert, "--tls-key", cpFiles.Key, "--client-ca", clients.caFile,
		"--shutdown-timeout", "5s",
	})
	https := server.client()
	// /health over TLS, then a REST call: the gateway reaches gRPC over TLS on loopback.
	harness.WaitHTTPWith(t, &http.Client{Timeout: time.Second, Transport: https.Transport}, "https://"+httpAddr+"/health", http.StatusOK, xdsWait)
	fleet := func() map[string]xdsProxyStatus {
		t.Helper()
		a := mustSendWith(t, https, http.MethodGet, "https://"+httpAddr+"/api/v1/proxies", "")
		if a.Status != http.StatusOK {
			t.Fatalf("GET /api/v1/proxies over TLS: %d %s", a.Status, a.Body)
		}
		var out struct {
			Proxies []xdsProxyStatus `json:"proxies"`
		}
		if err := json.Unmarshal(a.Body, &out); err != nil {
			t.Fatal(err)
		}
		m := map[string]xdsProxyStatus{}
		for _, p := range out.Proxies {
			m[p.NodeID] = p
		}
		return m
	}
	// A plaintext request to the TLS port gets net/http's 400, never the API.
	if a, err := send(t.Context(), http.MethodGet, "http://"+httpAddr+"/api/v1/proxies", ""); err == nil && a.Status == http.StatusOK {
		t.Fatal("the REST API answered over plaintext")
	}

	startFleetProxy := func(node string, extra ...string) *proxy {
		admin := harness.FreeAddr(t)
		p := &proxy{Admin: "http://" + admin}
		p.proc = harness.Start(t, bins.Proxy, append([]string{
			"--control-plane", grpcAddr, "--node-id", node, "--state-dir", t.TempDir(),
			"--admin-addr", admin, "--shutdown-timeout", "5s", "--control-plane-ca", server.caFile,
		}, extra...))
		return p
	}
	// refusedWith waits until the proxy logs that the control plane refused it for reason.
	refusedWith := func(p *proxy, reason string) {
		t.Helper()
		harness.Eventually(t, xdsWait, func() bool { return strings.Contains(p.proc.Output(), reason) },
			"proxy log names the refusal %q:\n%s", reason, p.proc.Output())
		if s := statusOf(t, p.Admin+"/ready"); s != http.StatusServiceUnavailable {
			t.Errorf("refused proxy: /ready %d; want 503 (no config)", s)
		}
	}

	anonymous := startFleetProxy("edge-anon")
	refusedWith(anonymous, "proxy streams require a client certificate")

	good := clients.issue("edge-1", "edge-1")
	impostor := startFleetProxy("edge-2", "--tls-cert", good.Cert, "--tls-key", good.Key)
	refusedWith(impostor, `node id \"edge-2\" is not a name of the client certificate`)

	p := startFleetProxy("edge-1", "--tls-cert", good.Cert, "--tls-key", good.Key)
	waitReady(t, p)
	if got := xdsUpstreamOf(t, "http://"+fwd); got != "tls-a" {
		t.Errorf("request through the mTLS proxy reached %q; want tls-a", got)
	}
	st := fleet()
	if s := st["edge-1"]; !s.Connected {
		t.Errorf("fleet status: edge-1 %+v; want connected", s)
	}
	for id := range st {
		if id != "edge-1" {
			t.Errorf("fleet status lists %q; only edge-1 was let in", id)
		}
	}

	ctl := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bins.Ctl, append([]string{"--server", grpcAddr}, args...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatal(err)
		}
		return out.String(), errb.String(), cmd.ProcessState.ExitCode()
	}
	if out, errOut, code := ctl("--ca", server.caFile, "--timeout", "10s", "status"); code != 0 || !strings.Contains(out, "edge-1") {
		t.Errorf("llmproxyctl --ca status: exit %d, stdout %q, stderr %q; want edge-1 listed", code, out, errOut)
	}
	if _, errOut, code := ctl("--timeout", "3s", "status"); code != 1 {
		t.Errorf("llmproxyctl status in plaintext against TLS: exit %d (%s); want 1", code, errOut)
	}
	if _, errOut, code := ctl("--ca", clients.caFile, "--timeout", "3s", "status"); code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("llmproxyctl trusting the wrong CA: exit %d (%s); want 1 naming the certificate", code, errOut)
	}
}

// statusOf answers the status of GET url (0 when there is no answer).
func statusOf(t *testing.T, url string) int {
	t.Helper()
	a, err := send(t.Context(), http.MethodGet, url, "")
	if err != nil {
		return 0
	}
	return a.Status
}

const tlsForwardConfig = `
http_server:
  forwards:
    - name: secure
      address: 127.0.0.1
      port: {{.Port}}
      default_group: private
      tls: {cert: "{{.Cert}}", key: "{{.Key}}"}
      routing:
        - {path: /untrusted/*, target_group: untrusted}
upstreams:
  - name: private
    url: {{.Upstream}}
upstream_groups:
  - name: private
    upstreams: [{name: private}]
    http_client:
      tls: {ca: "{{.UpstreamCA}}"}
  - name: untrusted
    upstreams: [{name: private}]
`

// TestTLSForwardAndUpstream: a forward with tls serves HTTPS and, once its certificate file
// is replaced, serves the new certificate to new connections without a reload; its group
// reaches an HTTPS upstream signed by a private CA through http_client.tls.ca, while a group
// without it refuses the same upstream (502).
func TestTLSForwardAndUpstream(t *testing.T) {
	t.Parallel()
	front, back := newTestPKI(t, "front-ca"), newTestPKI(t, "back-ca")
	fwdFiles := front.issue("forward", "first", "127.0.0.1")
	upFiles := back.issue("upstream", "upstream", "127.0.0.1")

	bins := harness.Binaries(t)
	upAddr := harness.FreeAddr(t)
	harness.Start(t, bins.MockLLM, []string{"--addr", upAddr, "--name", "private-mock", "--tls-cert", upFiles.Cert, "--tls-key", upFiles.Key})
	harness.WaitHTTPWith(t, &http.Client{Timeout: time.Second, Transport: back.client().Transport}, "https://"+upAddr+"/_mock/health", http.StatusOK, 10*time.Second)

	addr := harness.FreeAddr(t)
	p := startProxy(t, renderConfig(t, tlsForwardConfig, map[string]any{
		"Port": harness.Port(t, addr), "Cert": fwdFiles.Cert, "Key": fwdFiles.Key,
		"Upstream": "https://" + upAddr, "UpstreamCA": back.caFile,
	}))
	https := front.client()
	a := mustSendWith(t, https, http.MethodPost, "https://"+addr+"/v1/chat/completions", chat("gpt-4o"))
	if a.Status != http.StatusOK || a.Upstream() != "private-mock" {
		t.Fatalf("HTTPS through the forward to the private-CA upstream: %d from %q: %s", a.Status, a.Upstream(), a.Body)
	}
	if cn := a.TLS.PeerCertificates[0].Subject.CommonName; cn != "first" {
		t.Errorf("forward served %q; want the certificate issued as first", cn)
	}
	if a := mustSendWith(t, https, http.MethodPost, "https://"+addr+"/untrusted/v1/chat/completions", chat("gpt-4o")); a.Status != http.StatusBadGateway {
		t.Errorf("group without http_client.tls.ca to the private-CA upstream: %d %s; want 502", a.Status, a.Body)
	}

	// Renewal: new files in place; no signal, no new config.
	front.issue("forward", "second", "127.0.0.1")
	harness.Eventually(t, 10*time.Second, func() bool {
		a, err := sendWith(t.Context(), https, http.MethodPost, "https://"+addr+"/v1/chat/completions", chat("gpt-4o"))
		return err == nil && a.Status == http.StatusOK && a.TLS.PeerCertificates[0].Subject.CommonName == "second"
	}, "the forward serves the replaced certificate")
	if !strings.Contains(p.proc.Output(), "certificate reloaded") {
		t.Errorf("the proxy did not log the reload:\n%s", p.proc.Output())
	}
}

const trustedProxiesConfig = `
http_server:
  forwards:
    - name: direct
      address: 127.0.0.1
      port: {{.Direct}}
      default_group: main
      ratelimit: {enabled: true, per_second: 1, burst: 1, key: ip}
    - name: behind-lb
      address: 127.0.0.1
      port: {{.Behind}}
      default_group: main
      ratelimit: {enabled: true, per_second: 1, burst: 1, key: ip}
      trusted_proxies: ["127.0.0.0/8"]
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - name: main
    upstreams: [{name: up}]
`

// TestTrustedProxies: with the peer in trusted_proxies, X-Forwarded-For names the client,
// so two clients behind one load balancer get a bucket each and the access log shows the
// client (and the peer); without trusted_proxies the header counts for nothing and every
// request from the peer shares its bucket.
func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "xff")["xff"]
	direct, behind := harness.FreeAddr(t), harness.FreeAddr(t)
	p := startProxy(t, renderConfig(t, trustedProxiesConfig, map[string]any{
		"Direct": harness.Port(t, direct), "Behind": harness.Port(t, behind), "URL": m.URL,
	}))
	post := func(addr, client string) int {
		t.Helper()
		return mustSend(t, http.MethodPost, "http://"+addr+"/v1/chat/completions", chat("gpt-4o"),
			"X-Forwarded-For", client+", 127.0.0.9").Status
	}
	for _, tt := range []struct {
		name, addr  string
		secondOther int
	}{
		{"behind-lb", behind, http.StatusOK},
		{"direct", direct, http.StatusTooManyRequests},
	} {
		// One request a second per client, burst 1: the first passes, the same client's
		// second does not; another client's first passes only if the header is believed.
		if s := post(tt.addr, "198.51.100.7"); s != http.StatusOK {
			t.Fatalf("%s: first request of client A: %d", tt.name, s)
		}
		if s := post(tt.addr, "198.51.100.7"); s != http.StatusTooManyRequests {
			t.Fatalf("%s: second request of client A: %d; want 429", tt.name, s)
		}
		if s := post(tt.addr, "198.51.100.8"); s != tt.secondOther {
			t.Errorf("%s: first request of client B: %d; want %d", tt.name, s, tt.secondOther)
		}
	}
	harness.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(p.proc.Output(), `"forward":"behind-lb"`) && accessLogClient(p.proc.Output(), "behind-lb") != ""
	}, "access log of behind-lb")
	if got := accessLogClient(p.proc.Output(), "behind-lb"); !strings.HasPrefix(got, "198.51.100.7 peer=127.0.0.1:") {
		t.Errorf("access log of behind-lb: client %q; want 198.51.100.7 with the peer", got)
	}
	if got := accessLogClient(p.proc.Output(), "direct"); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("access log of direct: client %q; want the peer's address", got)
	}
}

// accessLogClient returns "client peer=peer" of the first access-log record of forward in
// the proxy's JSON log ("" when there is none).
func accessLogClient(log, forward string) string {
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Msg, Forward, Client, Peer string
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "request" || rec.Forward != forward {
			continue
		}
		if rec.Peer == "" {
			return rec.Client
		}
		return fmt.Sprintf("%s peer=%s", rec.Client, rec.Peer)
	}
	return ""
}
