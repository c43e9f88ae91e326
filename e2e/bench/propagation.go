package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/xdsclient"
)

func init() { PropagationFunc = Propagation }

const (
	propUpstreams = 1000
	propGroups    = 10
	propWrites    = 5
)

// fleetConfig is a config of propUpstreams upstreams in propGroups groups.
func fleetConfig() string {
	var b strings.Builder
	b.WriteString("http_server:\n  forwards:\n    - name: bench\n      address: 127.0.0.1\n      port: 3999\n      default_group: g0\nupstreams:\n")
	for i := range propUpstreams {
		fmt.Fprintf(&b, "  - name: u%04d\n    url: http://127.0.0.1:%d\n", i, 20000+i)
	}
	b.WriteString("upstream_groups:\n")
	per := propUpstreams / propGroups
	for g := range propGroups {
		fmt.Fprintf(&b, "  - name: g%d\n    upstreams:\n", g)
		for i := g * per; i < (g+1)*per; i++ {
			fmt.Fprintf(&b, "      - name: u%04d\n", i)
		}
	}
	return b.String()
}

// simProxy is one simulated proxy: the real ADS client, applying by recording.
type simProxy struct {
	rev    atomic.Uint64
	at     atomic.Int64 // unix nanos of the last apply
	hasKey atomic.Bool  // the last applied config holds revokedHash: the proxy accepts that key
}

// benchKeyHash is the hash of the key the revocation measurement revokes (any value of the
// right form: simulated proxies only look for it).
var benchKeyHash = "sha256:" + strings.Repeat("be", 32)

// holdsKey reports whether cfg has a consumer key of hash h.
func holdsKey(cfg *configv1.Config, h string) bool {
	for _, c := range cfg.GetConsumers() {
		for _, k := range c.GetKeys() {
			if k.GetHash() == h {
				return true
			}
		}
	}
	return false
}

// Propagation starts a control plane with 1,000 upstreams and n simulated proxies (each the
// real xdsclient on its own ADS stream, in this process), then times admin writes until every
// proxy has applied the new revision. Simulated proxies record a revision instead of compiling
// it, so the figure is the control plane's fan-out plus the client's decode and assembly.
func Propagation(ctx context.Context, o Options, n int) (PropagationRow, error) {
	row := PropagationRow{Proxies: n, Upstreams: propUpstreams, Writes: propWrites}
	cp, grpcAddr, api, err := startControlPlane(ctx, o, "prop-", fleetConfig())
	if err != nil {
		return row, err
	}
	defer cp.Stop()
	rev0, err := currentRevision(api)
	if err != nil {
		return row, err
	}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sims := make([]*simProxy, n)
	start := time.Now()
	for i := range sims {
		s := &simProxy{}
		sims[i] = s
		go func() {
			_ = xdsclient.Run(cctx, xdsclient.Options{
				Addr: grpcAddr, NodeID: fmt.Sprintf("sim-%04d", i),
				Apply: func(revision string, cfg *configv1.Config) error {
					r, _ := strconv.ParseUint(revision, 10, 64)
					s.hasKey.Store(holdsKey(cfg, benchKeyHash))
					s.at.Store(time.Now().UnixNano())
					s.rev.Store(r)
					return nil
				},
			})
		}()
	}
	if err := waitAll(ctx, sims, rev0, 120*time.Second); err != nil {
		return row, fmt.Errorf("initial sync: %w", err)
	}
	row.InitialSec = time.Since(start).Seconds()

	cpu0, _ := CPUSeconds(cp.Pid())
	var lat []time.Duration
	for w := range propWrites {
		members := []map[string]any{}
		for i := range 100 {
			members = append(members, map[string]any{"name": fmt.Sprintf("u%04d", i), "weight": 1 + (w+i)%3})
		}
		body, _ := json.Marshal(map[string]any{"upstreams": members})
		t0 := time.Now()
		rev, err := patchGroup(api+"/api/v1/upstream-groups/g0", body)
		if err != nil {
			return row, err
		}
		if err := waitAll(ctx, sims, rev, 60*time.Second); err != nil {
			return row, fmt.Errorf("write %d: %w", w+1, err)
		}
		for _, s := range sims {
			lat = append(lat, time.Duration(s.at.Load()-t0.UnixNano()))
		}
	}
	cpu1, _ := CPUSeconds(cp.Pid())
	_, peak, _ := Memory(cp.Pid())
	slices.Sort(lat)
	row.P50, row.P99, row.Max = Ms(Percentile(lat, 50)), Ms(Percentile(lat, 99)), Ms(lat[len(lat)-1])

	// Revocation: a consumer's key is removed; the time until the last proxy applied a
	// config without it, that is, refuses it.
	rev, err := adminWrite(http.MethodPost, api+"/api/v1/consumers",
		`{"name":"bench","keys":[{"id":"k1","hash":"`+benchKeyHash+`"}]}`)
	if err != nil {
		return row, err
	}
	if err := waitAll(ctx, sims, rev, 60*time.Second); err != nil {
		return row, fmt.Errorf("consumer: %w", err)
	}
	t0 := time.Now()
	if rev, err = adminWrite(http.MethodDelete, api+"/api/v1/consumers/bench/keys/k1", ""); err != nil {
		return row, err
	}
	if err := waitAll(ctx, sims, rev, 60*time.Second); err != nil {
		return row, fmt.Errorf("revocation: %w", err)
	}
	var rlat []time.Duration
	for _, s := range sims {
		if s.hasKey.Load() {
			return row, fmt.Errorf("a proxy at revision %d still holds the revoked key", rev)
		}
		rlat = append(rlat, time.Duration(s.at.Load()-t0.UnixNano()))
	}
	slices.Sort(rlat)
	row.RevokeP50, row.RevokeMax = Ms(Percentile(rlat, 50)), Ms(rlat[len(rlat)-1])
	row.CPCPUSec = cpu1 - cpu0
	row.CPPeakRSS = float64(peak) / (1 << 20)
	return row, nil
}

// startControlPlane starts llmproxy-controlplane on a fresh SQLite store in a new directory
// (named after prefix) under o.WorkDir, bootstrapped with config, without auth tokens, and
// waits until it answers. It returns the process, its gRPC address and its REST base URL.
func startControlPlane(ctx context.Context, o Options, prefix, config string) (cp *Proc, grpcAddr, api string, err error) {
	dir, err := os.MkdirTemp(o.WorkDir, prefix)
	if err != nil {
		return nil, "", "", err
	}
	boot := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(boot, []byte(config), 0o600); err != nil {
		return nil, "", "", err
	}
	grpcAddr, _ = FreeAddr()
	httpAddr, _ := FreeAddr()
	cp, err = Start(dir, "controlplane", filepath.Join(o.BinDir, "llmproxy-controlplane"), []string{
		"--store", "sqlite:" + filepath.Join(dir, "cp.db"), "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
		"--bootstrap", boot, "--log-level", "warn",
	}, "LLMPROXY_ADMIN_AUTH_TOKEN=", "LLMPROXY_XDS_AUTH_TOKEN=")
	if err != nil {
		return nil, "", "", err
	}
	api = "http://" + httpAddr
	if err := WaitHTTP(ctx, api+"/health", 20*time.Second); err != nil {
		cp.Stop()
		return nil, "", "", err
	}
	return cp, grpcAddr, api, nil
}

func waitAll(ctx context.Context, sims []*simProxy, rev uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		behind := 0
		for _, s := range sims {
			if s.rev.Load() < rev {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d proxies did not reach revision %d in %s", behind, len(sims), rev, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func currentRevision(api string) (uint64, error) {
	resp, err := http.Get(api + "/api/v1/proxies")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Revision json.Number `json:"revision"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return strconv.ParseUint(v.Revision.String(), 10, 64)
}

// adminWrite makes a REST write (body may be empty) and returns the new revision, read from
// the X-Llmproxy-Revision header (a delete answers 204 without a body).
func adminWrite(method, url, body string) (uint64, error) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return 0, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, b)
	}
	return strconv.ParseUint(resp.Header.Get("X-Llmproxy-Revision"), 10, 64)
}

func patchGroup(url string, body []byte) (uint64, error) {
	req, _ := http.NewRequest(http.MethodPatch, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("patch group: %s: %s", resp.Status, b)
	}
	var v struct {
		Revision json.Number `json:"revision"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("patch group: read revision: %w", err)
	}
	return strconv.ParseUint(v.Revision.String(), 10, 64)
}
