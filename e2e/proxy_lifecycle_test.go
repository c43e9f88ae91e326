package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const reloadConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
upstreams:
  - {name: m1, url: "{{.M1}}"}
  - {name: m2, url: "{{.M2}}"}
upstream_groups:
  - name: g
    upstreams: [{name: {{.Member}}}]
`

// TestProxyReloadUnderLoad reloads the file with SIGHUP while four workers send requests:
// the reload moves the forward to another port and swaps the group's member. Workers move
// to the new port once /config shows the new revision. No request may fail.
func TestProxyReloadUnderLoad(t *testing.T) {
	t.Parallel()
	mocks := startMocks(t, nil, "m1", "m2")
	oldAddr, newAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	data := map[string]any{"Port": harness.Port(t, oldAddr), "M1": mocks["m1"].URL, "M2": mocks["m2"].URL, "Member": "m1"}
	p := startProxy(t, renderConfig(t, reloadConfig, data))
	rev1 := p.revision(t)

	var target atomic.Value
	target.Store("http://" + oldAddr)
	var (
		mu       sync.Mutex
		failures []string
		byTarget = map[string]map[string]int{} // target → upstream → count
		done     atomic.Int64
	)
	stop := time.Now().Add(3 * time.Second)
	body := chat("gpt-4o")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				base := target.Load().(string)
				a, err := send(context.Background(), "POST", base+"/v1/chat/completions", body, "X-Mock-Latency", "20ms")
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, fmt.Sprintf("%s: %v", base, err))
				case a.Status != http.StatusOK:
					failures = append(failures, fmt.Sprintf("%s: status %d %s", base, a.Status, a.Body))
				default:
					if byTarget[base] == nil {
						byTarget[base] = map[string]int{}
					}
					byTarget[base][a.Upstream()]++
				}
				mu.Unlock()
				done.Add(1)
			}
		}()
	}

	// Reload once the load is flowing.
	harness.Eventually(t, 2*time.Second, func() bool { return done.Load() >= 40 }, "load did not start")
	data["Port"], data["Member"] = harness.Port(t, newAddr), "m2"
	if err := os.WriteFile(p.Config, []byte(renderConfig(t, reloadConfig, data)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Second, func() bool { return p.revision(t) != rev1 }, "the reload did not show in /config")
	target.Store("http://" + newAddr)
	wg.Wait()

	if len(failures) > 0 {
		t.Errorf("%d requests failed during the reload, e.g. %s", len(failures), failures[0])
	}
	oldCounts, newCounts := byTarget["http://"+oldAddr], byTarget["http://"+newAddr]
	if oldCounts["m1"] == 0 {
		t.Errorf("no request reached m1 before the reload: %v", byTarget)
	}
	if newCounts["m2"] < 20 || len(newCounts) != 1 {
		t.Errorf("requests to the new port: %v; want them all (and at least 20) on m2", newCounts)
	}
	t.Logf("answers by port and upstream: %v (%d requests)", byTarget, done.Load())

	// Reloads that cannot apply keep the running config: a broken file, and a port that
	// another socket holds.
	rev2 := p.revision(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	data["Port"] = harness.Port(t, taken.Addr().String())
	bad := map[string]string{
		"broken file": "http_server: [\n",
		"port taken":  renderConfig(t, reloadConfig, data),
	}
	for name, content := range bad {
		if err := os.WriteFile(p.Config, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		failedBefore := strings.Count(p.proc.Output(), "reload failed")
		if err := p.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 5*time.Second, func() bool {
			return strings.Count(p.proc.Output(), "reload failed") > failedBefore
		}, "%s: no reload failure logged", name)
		if got := p.revision(t); got != rev2 {
			t.Errorf("%s: revision %s after a failed reload; want %s kept", name, got, rev2)
		}
		if a := mustSend(t, "POST", "http://"+newAddr+"/v1/chat/completions", body); a.Status != http.StatusOK || a.Upstream() != "m2" {
			t.Errorf("%s: after a failed reload: status %d from %q; want 200 from m2", name, a.Status, a.Upstream())
		}
	}
}

const drainConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - name: g
    upstreams: [{name: up}]
`

// TestProxyGracefulStop sends SIGTERM while a slow request is in flight: the listener stops
// accepting, /ready turns 503, the request completes, the process exits 0, and the
// request's access-log line, still buffered at the end of the drain, is in the output.
func TestProxyGracefulStop(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "slow")["slow"]
	addr := harness.FreeAddr(t)
	p := startProxy(t, renderConfig(t, drainConfig, map[string]any{"Port": harness.Port(t, addr), "URL": m.URL}))

	res := make(chan answer, 1)
	go func() {
		a, err := send(context.Background(), "POST", "http://"+addr+"/v1/chat/completions", chat("gpt-4o"), "X-Mock-Latency", "1500ms", "X-Request-Id", "drained-request-1")
		if err != nil {
			a = answer{Body: []byte(err.Error())}
		}
		res <- a
	}()
	harness.Eventually(t, 5*time.Second, func() bool { return m.stats(t).InFlight == 1 }, "the slow request did not reach the upstream")
	start := time.Now()
	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	}, "the forward still accepts connections after SIGTERM")
	if resp, err := http.Get(p.Admin + "/ready"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable && !p.proc.Exited() {
			t.Errorf("/ready while draining = %d; want 503", resp.StatusCode)
		}
	}
	a := <-res
	if a.Status != http.StatusOK {
		t.Errorf("in-flight request during drain: status %d %s; want 200", a.Status, a.Body)
	}
	if code := p.proc.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM; want 0", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %s", d)
	}
	if !strings.Contains(p.proc.Output(), "drain") {
		t.Errorf("no drain in the log:\n%s", p.proc.Output())
	}
	if !strings.Contains(p.proc.Output(), `"msg":"request","request_id":"drained-request-1"`) {
		t.Errorf("no access-log line for the drained request:\n%s", p.proc.Output())
	}
}

// TestProxyNotReadyWithoutConfig starts a proxy in control-plane mode with an unreachable
// control plane and an empty state dir: it is alive (/health 200) but not ready (503).
func TestProxyNotReadyWithoutConfig(t *testing.T) {
	t.Parallel()
	admin := harness.FreeAddr(t)
	p := harness.Start(t, harness.Binaries(t).Proxy, []string{
		"--control-plane", harness.FreeAddr(t), "--node-id", "e2e-unready",
		"--state-dir", t.TempDir(), "--admin-addr", admin,
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.Exited() {
			if strings.Contains(p.Output(), "not built yet") {
				t.Skip("control-plane mode is not built yet")
			}
			t.Fatalf("llmproxy exited:\n%s", p.Output())
		}
		resp, err := http.Get("http://" + admin + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin did not come up:\n%s", p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for path, want := range map[string]int{"/health": 200, "/ready": 503, "/config": 503} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d; want %d", path, resp.StatusCode, want)
		}
	}
}
