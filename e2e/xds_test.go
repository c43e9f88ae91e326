package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of the control plane feeding a fleet of real proxies over xDS.

const xdsWait = 20 * time.Second

// xdsCP is a running llmproxy-controlplane on fixed addresses, so it can be
// restarted where the proxies expect it.
type xdsCP struct {
	grpcAddr, httpAddr, store string
	proc                      *harness.Process
}

func xdsStartCP(t *testing.T, store, grpcAddr, httpAddr string, extra ...string) *xdsCP {
	t.Helper()
	c := &xdsCP{grpcAddr: grpcAddr, httpAddr: httpAddr, store: store}
	args := append([]string{"--store", store, "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--shutdown-timeout", "5s"}, extra...)
	c.proc = harness.Start(t, harness.Binaries(t).ControlPlane, args)
	harness.WaitHTTP(t, "http://"+httpAddr+"/health", http.StatusOK, xdsWait)
	return c
}

// do calls the REST API and decodes a JSON answer into out (when non-nil).
func (c *xdsCP) do(t *testing.T, method, path, body string, out any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+c.httpAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("%s %s: %s: decode: %v", method, path, resp.Status, err)
	}
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// write performs a REST write and returns the new revision.
func (c *xdsCP) write(t *testing.T, method, path, body string) uint64 {
	t.Helper()
	var out struct {
		Revision string `json:"revision"`
	}
	c.do(t, method, path, body, &out)
	rev, err := strconv.ParseUint(out.Revision, 10, 64)
	if err != nil {
		t.Fatalf("%s %s: revision %q", method, path, out.Revision)
	}
	return rev
}

type xdsProxyStatus struct {
	NodeID           string `json:"node_id"`
	Connected        bool   `json:"connected"`
	AckedRevision    string `json:"acked_revision"`
	LastNackRevision string `json:"last_nack_revision"`
	LastNackError    string `json:"last_nack_error"`
}

func (c *xdsCP) proxies(t *testing.T) map[string]xdsProxyStatus {
	t.Helper()
	var out struct {
		Proxies []xdsProxyStatus `json:"proxies"`
	}
	c.do(t, http.MethodGet, "/api/v1/proxies", "", &out)
	m := map[string]xdsProxyStatus{}
	for _, p := range out.Proxies {
		m[p.NodeID] = p
	}
	return m
}

// waitFleet waits until every named node is connected and acked rev.
func (c *xdsCP) waitFleet(t *testing.T, rev uint64, nodes ...string) {
	t.Helper()
	var last map[string]xdsProxyStatus
	harness.Eventually(t, xdsWait, func() bool {
		last = c.proxies(t)
		for _, n := range nodes {
			if s := last[n]; !s.Connected || s.AckedRevision != cpRev(rev) {
				return false
			}
		}
		return true
	}, "fleet status at revision %d for %v; last %+v", rev, nodes, &last)
}

// xdsStartProxy starts llmproxy in control-plane mode, with env added to its
// environment, and waits until it is ready (a config applied, from the
// control plane or its state dir).
func xdsStartProxy(t *testing.T, cp, node, stateDir string, env ...string) *proxy {
	t.Helper()
	return xdsStartProxyWith(t, cp, node, stateDir, env)
}

// xdsStartProxyWith is xdsStartProxy with extra flags.
func xdsStartProxyWith(t *testing.T, cp, node, stateDir string, env []string, extraArgs ...string) *proxy {
	t.Helper()
	admin := harness.FreeAddr(t)
	p := &proxy{Admin: "http://" + admin}
	p.proc = harness.Start(t, harness.Binaries(t).Proxy, append([]string{
		"--control-plane", cp, "--node-id", node, "--state-dir", stateDir,
		"--admin-addr", admin, "--shutdown-timeout", "5s",
	}, extraArgs...), env...)
	waitReady(t, p)
	return p
}

func xdsWaitRevision(t *testing.T, rev uint64, ps ...*proxy) {
	t.Helper()
	for _, p := range ps {
		harness.Eventually(t, xdsWait, func() bool { return p.revision(t) == cpRev(rev) },
			"proxy %s at revision %d (has %s)", p.Admin, rev, p.revision(t))
	}
}

// xdsUpstreamOf sends a chat request to the forward and returns which mock
// answered.
func xdsUpstreamOf(t *testing.T, forward string) string {
	t.Helper()
	a := mustSend(t, http.MethodPost, forward+"/v1/chat/completions", chat("gpt-4o"))
	if a.Status != http.StatusOK {
		t.Fatalf("chat: %d %s", a.Status, a.Body)
	}
	return a.Upstream()
}

const xdsBootstrap = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: ga
      routing:
        - path: /v1/chat/completions
          target_group: ga
upstreams:
  - name: up-a
    url: {{.A}}
  - name: up-b
    url: {{.B}}
upstream_groups:
  - name: ga
    upstreams:
      - name: up-a
  - name: gb
    upstreams:
      - name: up-b
`

func xdsRouteID(path string) string { return base64.RawURLEncoding.EncodeToString([]byte(path)) }

// TestXDSFleet: one control plane (SQLite), two proxies sharing the forward
// port (SO_REUSEPORT). A route change reaches both; a change they refuse is
// NACKed and shown while traffic flows; with the control plane killed they
// keep serving, a restarted proxy serves from its state dir, and both come
// back when the control plane does.
func TestXDSFleet(t *testing.T) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	forward := fmt.Sprintf("http://127.0.0.1:%d", port)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, xdsBootstrap, map[string]any{
		"Port": port, "A": mocks["a"].URL, "B": mocks["b"].URL,
	}))
	store := "sqlite:" + t.TempDir() + "/cp.db"
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, store, grpcAddr, httpAddr, "--bootstrap", boot)
	dir1, dir2 := t.TempDir(), t.TempDir()
	p1 := xdsStartProxy(t, grpcAddr, "p1", dir1)
	p2 := xdsStartProxy(t, grpcAddr, "p2", dir2)
	cp.waitFleet(t, 1, "p1", "p2")
	if got := xdsUpstreamOf(t, forward); got != "a" {
		t.Fatalf("before the change: answered by %q; want a", got)
	}

	// A route change through REST reaches both proxies.
	start := time.Now()
	rev := cp.write(t, http.MethodPut, "/api/v1/forwards/main/routes/"+xdsRouteID("/v1/chat/completions"),
		`{"path":"/v1/chat/completions","target_group":"gb"}`)
	xdsWaitRevision(t, rev, p1, p2)
	t.Logf("route change reached both proxies in %s", time.Since(start).Round(time.Millisecond))
	cp.waitFleet(t, rev, "p1", "p2")
	for i := 0; i < 10; i++ {
		if got := xdsUpstreamOf(t, forward); got != "b" {
			t.Fatalf("after the change: answered by %q; want b", got)
		}
	}

	// A change the proxies refuse (a secret from an environment variable
	// they lack) is NACKed with the reason; they keep the last good config.
	bad := cp.write(t, http.MethodPut, "/api/v1/upstreams/up-b",
		fmt.Sprintf(`{"name":"up-b","url":%q,"auth":{"type":"bearer","token":"${env:XDS_E2E_UNSET_KEY}"}}`, mocks["b"].URL))
	var fleet map[string]xdsProxyStatus
	harness.Eventually(t, xdsWait, func() bool {
		fleet = cp.proxies(t)
		return fleet["p1"].LastNackRevision == cpRev(bad) && fleet["p2"].LastNackRevision == cpRev(bad)
	}, "NACK of revision %d in the fleet status", bad)
	for _, n := range []string{"p1", "p2"} {
		if s := fleet[n]; s.AckedRevision != cpRev(rev) || !strings.Contains(s.LastNackError, "XDS_E2E_UNSET_KEY") {
			t.Errorf("%s: %+v; want acked %d and a reason naming the variable", n, s, rev)
		}
	}
	xdsWaitRevision(t, rev, p1, p2)
	if got := xdsUpstreamOf(t, forward); got != "b" {
		t.Fatalf("after the NACK: answered by %q; want b", got)
	}
	fixed := cp.write(t, http.MethodPut, "/api/v1/upstreams/up-b", fmt.Sprintf(`{"name":"up-b","url":%q}`, mocks["b"].URL))
	xdsWaitRevision(t, fixed, p1, p2)
	cp.waitFleet(t, fixed, "p1", "p2")

	// Control plane killed: the proxies keep serving.
	t.Logf("killing the control plane at %s", time.Since(start).Round(time.Millisecond))
	cp.proc.Kill()
	for i := 0; i < 5; i++ {
		if got := xdsUpstreamOf(t, forward); got != "b" {
			t.Fatalf("control plane down: answered by %q; want b", got)
		}
	}
	// A proxy restarted meanwhile serves from its state dir.
	p1.proc.Stop(10 * time.Second)
	p1 = xdsStartProxy(t, grpcAddr, "p1", dir1)
	if got := p1.revision(t); got != cpRev(fixed) {
		t.Fatalf("restarted proxy serves revision %s; want %d from its state dir", got, fixed)
	}
	p2.proc.Stop(10 * time.Second) // p1 alone now answers on the forward port
	if got := xdsUpstreamOf(t, forward); got != "b" {
		t.Fatalf("restarted proxy: answered by %q; want b", got)
	}
	p2 = xdsStartProxy(t, grpcAddr, "p2", dir2)

	// Control plane back: both reconnect and follow the next change.
	cp = xdsStartCP(t, store, grpcAddr, httpAddr)
	back := time.Now()
	cp.waitFleet(t, fixed, "p1", "p2")
	t.Logf("both proxies reconnected %s after the control plane came back", time.Since(back).Round(time.Millisecond))
	next := cp.write(t, http.MethodPut, "/api/v1/forwards/main/routes/"+xdsRouteID("/v1/chat/completions"),
		`{"path":"/v1/chat/completions","target_group":"ga"}`)
	xdsWaitRevision(t, next, p1, p2)
	cp.waitFleet(t, next, "p1", "p2")
	if got := xdsUpstreamOf(t, forward); got != "a" {
		t.Fatalf("after reconnecting: answered by %q; want a", got)
	}
}

// TestXDSRenameUnderLoad: one PUT /api/v1/config renames the upstream a
// group uses and repoints the group at the new name, while requests flow
// through two proxies: no request fails, because no proxy ever applies the
// group before the upstream.
func TestXDSRenameUnderLoad(t *testing.T) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	forward := fmt.Sprintf("http://127.0.0.1:%d", port)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, xdsBootstrap, map[string]any{
		"Port": port, "A": mocks["a"].URL, "B": mocks["b"].URL,
	}))
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, "sqlite:"+t.TempDir()+"/cp.db", grpcAddr, httpAddr, "--bootstrap", boot)
	p1 := xdsStartProxy(t, grpcAddr, "p1", t.TempDir())
	p2 := xdsStartProxy(t, grpcAddr, "p2", t.TempDir())
	cp.waitFleet(t, 1, "p1", "p2")

	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a, err := send(context.Background(), http.MethodPost, forward+"/v1/chat/completions", chat("gpt-4o"))
				sent.Add(1)
				if err != nil || a.Status != http.StatusOK {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%v %d %s", err, a.Status, a.Body))
				}
			}
		}()
	}
	harness.Eventually(t, xdsWait, func() bool { return sent.Load() > 20 }, "load started")

	var cur struct {
		Config map[string]any `json:"config"`
	}
	cp.do(t, http.MethodGet, "/api/v1/config", "", &cur.Config)
	renamed := strings.ReplaceAll(mustJSON(t, cur.Config), `"up-a"`, `"up-a2"`)
	rev := cp.write(t, http.MethodPut, "/api/v1/config", renamed)
	xdsWaitRevision(t, rev, p1, p2)
	cp.waitFleet(t, rev, "p1", "p2")
	before := sent.Load()
	harness.Eventually(t, xdsWait, func() bool { return sent.Load() > before+20 }, "load after the change")
	cancel()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed across the rename; first: %v", n, sent.Load(), firstFailure.Load())
	}
	// A proxy handed the group before its upstream would have refused it.
	for n, s := range cp.proxies(t) {
		if s.LastNackRevision != "" && s.LastNackRevision != "0" {
			t.Errorf("%s NACKed revision %s: %s", n, s.LastNackRevision, s.LastNackError)
		}
	}
	t.Logf("%d requests, none failed", sent.Load())
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestXDSTwoControlPlanesPostgres: two control planes on one PostgreSQL,
// one proxy on each; a write through either reaches both proxies.
func TestXDSTwoControlPlanesPostgres(t *testing.T) {
	dsn := cpPostgresDSN(t)
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, xdsBootstrap, map[string]any{
		"Port": port, "A": mocks["a"].URL, "B": mocks["b"].URL,
	}))
	g1, g2 := harness.FreeAddr(t), harness.FreeAddr(t)
	cp1 := xdsStartCP(t, dsn, g1, harness.FreeAddr(t), "--bootstrap", boot)
	cp2 := xdsStartCP(t, dsn, g2, harness.FreeAddr(t))
	p1 := xdsStartProxy(t, g1, "p1", t.TempDir())
	p2 := xdsStartProxy(t, g2, "p2", t.TempDir())
	cp1.waitFleet(t, 1, "p1")
	cp2.waitFleet(t, 1, "p2")

	for i, cp := range []*xdsCP{cp1, cp2, cp1} {
		target := []string{"gb", "ga"}[i%2]
		rev := cp.write(t, http.MethodPut, "/api/v1/forwards/main/routes/"+xdsRouteID("/v1/chat/completions"),
			fmt.Sprintf(`{"path":"/v1/chat/completions","target_group":%q}`, target))
		xdsWaitRevision(t, rev, p1, p2)
		cp1.waitFleet(t, rev, "p1")
		cp2.waitFleet(t, rev, "p2")
	}
}
