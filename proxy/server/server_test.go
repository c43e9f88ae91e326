package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"google.golang.org/protobuf/proto"
)

// gate lets a test hold requests in flight: a request to /slow blocks until release.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 16), release: make(chan struct{})} }

// handler answers "<forward> <revision>" and blocks on /slow until the gate opens.
func (g *gate) handler(h *config.Holder) func(string) http.Handler {
	return func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				g.entered <- struct{}{}
				<-g.release
			}
			io.WriteString(w, name+" "+h.Load().Revision)
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func runtime(rev string, fwds ...[2]string) *config.Runtime {
	rt := &config.Runtime{Revision: rev, Source: &configv1.Config{}}
	for _, f := range fwds {
		rt.Forwards = append(rt.Forwards, &config.Forward{Name: f[0], Addr: f[1], HeaderTimeout: 5 * time.Second})
	}
	return rt
}

func newTestServer(t *testing.T, grace time.Duration) (*Server, *config.Holder, *gate) {
	t.Helper()
	h := &config.Holder{}
	g := newGate()
	s := New(Options{
		Holder:       h,
		Handler:      g.handler(h),
		Logger:       slog.New(slog.DiscardHandler),
		DrainTimeout: 5 * time.Second,
		MoveGrace:    grace,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, h, g
}

// client never reuses connections, so each request shows whether a listener accepts.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

func get(addr, path string) (string, error) {
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func mustGet(t *testing.T, addr, path, want string) {
	t.Helper()
	got, err := get(addr, path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	if got != want {
		t.Fatalf("GET %s%s = %q; want %q", addr, path, got, want)
	}
}

func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out: " + msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestApplyOpensAndKeepsListeners(t *testing.T) {
	s, _, _ := newTestServer(t, -1)
	a, b := freeAddr(t), freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", a}, [2]string{"b", b})); err != nil {
		t.Fatal(err)
	}
	mustGet(t, a, "/", "a r1")
	mustGet(t, b, "/", "b r1")
	before := s.Addrs()

	// Unchanged forwards keep their listener and see the new runtime.
	if err := s.Apply(runtime("r2", [2]string{"a", a}, [2]string{"b", b})); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	la := s.live["a"]
	s.mu.Unlock()
	if err := s.Apply(runtime("r3", [2]string{"a", a}, [2]string{"b", b})); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	same := s.live["a"] == la
	s.mu.Unlock()
	if !same {
		t.Error("unchanged forward got a new listener")
	}
	mustGet(t, a, "/", "a r3")
	if after := s.Addrs(); after["a"] != before["a"] || after["b"] != before["b"] {
		t.Errorf("addresses changed: %v → %v", before, after)
	}
}

func TestApplyPortTakenKeepsOldConfig(t *testing.T) {
	s, h, _ := newTestServer(t, -1)
	a := freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", a})); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0") // plain socket: no SO_REUSEPORT
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	fresh := freeAddr(t)

	err = s.Apply(runtime("r2", [2]string{"a", a}, [2]string{"fresh", fresh}, [2]string{"b", taken.Addr().String()}))
	if err == nil {
		t.Fatal("Apply with a taken port succeeded")
	}
	if !strings.Contains(err.Error(), `forward "b"`) || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("error %q does not name the forward and address", err)
	}
	if got := h.Load().Revision; got != "r1" {
		t.Errorf("holder revision = %q; want r1 kept", got)
	}
	if !refused(fresh) {
		t.Error("listener opened before the failure was left open")
	}
	mustGet(t, a, "/", "a r1")
}

func TestApplyRefusesSharedAddress(t *testing.T) {
	s, h, _ := newTestServer(t, -1)
	a := freeAddr(t)
	_, port, _ := net.SplitHostPort(a)
	err := s.Apply(runtime("r1", [2]string{"a", a}, [2]string{"b", "0.0.0.0:" + port}))
	if err == nil || !strings.Contains(err.Error(), `forwards "a" and "b"`) {
		t.Fatalf("Apply = %v; want a shared-address error", err)
	}
	if h.Load() != nil {
		t.Error("config stored despite the error")
	}
}

func TestForwardAndAdminNeverShareAnAddress(t *testing.T) {
	// Admin first, then a forward on its address.
	s, h, _ := newTestServer(t, -1)
	admin, err := s.StartAdmin(freeAddr(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Apply(runtime("r1", [2]string{"a", admin}))
	if err == nil || !strings.Contains(err.Error(), `forward "a" listens on `+admin+`, the admin listener's address`) {
		t.Fatalf("Apply on the admin's address = %v; want it refused, naming both", err)
	}
	if h.Load() != nil {
		t.Error("config stored despite the error")
	}
	mustGet(t, admin, "/health", `{"status":"ok"}`+"\n")

	// A forward first, then the admin on its address.
	s2, _, _ := newTestServer(t, -1)
	a := freeAddr(t)
	if err := s2.Apply(runtime("r1", [2]string{"a", a})); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.StartAdmin(a, 0); err == nil || !strings.Contains(err.Error(), `forward "a" listens there`) {
		t.Fatalf("StartAdmin on a forward's address = %v; want it refused", err)
	}
}

func TestRemovedForwardDrains(t *testing.T) {
	s, _, g := newTestServer(t, -1)
	a, b := freeAddr(t), freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", a}, [2]string{"b", b})); err != nil {
		t.Fatal(err)
	}
	res := make(chan string, 1)
	go func() { body, err := get(b, "/slow"); res <- body + errString(err) }()
	<-g.entered

	if err := s.Apply(runtime("r2", [2]string{"a", a})); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return refused(b) }, "removed forward still accepts")
	close(g.release)
	if got := <-res; got != "b r2" {
		t.Errorf("in-flight request on removed forward = %q; want it completed", got)
	}
	mustGet(t, a, "/", "a r2")
}

func TestMovedForwardLingersThenDrains(t *testing.T) {
	s, _, g := newTestServer(t, 300*time.Millisecond)
	old, moved := freeAddr(t), freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", old})); err != nil {
		t.Fatal(err)
	}
	res := make(chan string, 1)
	go func() { body, err := get(old, "/slow"); res <- body + errString(err) }()
	<-g.entered

	start := time.Now()
	if err := s.Apply(runtime("r2", [2]string{"a", moved})); err != nil {
		t.Fatal(err)
	}
	mustGet(t, moved, "/", "a r2")
	// Within the grace the old address still takes new requests.
	mustGet(t, old, "/", "a r2")
	eventually(t, func() bool { return refused(old) }, "old address of a moved forward still accepts")
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("old listener closed after %s; want the 300ms grace", d)
	}
	close(g.release)
	if got := <-res; got != "a r2" {
		t.Errorf("in-flight request on the old address = %q; want it completed", got)
	}
}

func TestSwapAddressesBetweenForwards(t *testing.T) {
	s, _, _ := newTestServer(t, time.Hour)
	x, y := freeAddr(t), freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", x}, [2]string{"b", y})); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(runtime("r2", [2]string{"a", y}, [2]string{"b", x})); err != nil {
		t.Fatal(err)
	}
	// The old listeners share a port with a new one: they must stop at once, not linger,
	// or the kernel would split connections between the two forwards.
	eventually(t, func() bool {
		for range 20 {
			if body, _ := get(x, "/"); body != "b r2" {
				return false
			}
			if body, _ := get(y, "/"); body != "a r2" {
				return false
			}
		}
		return true
	}, "swapped addresses still reach the old forwards")
}

func TestShutdownDrainsInFlight(t *testing.T) {
	s, _, g := newTestServer(t, -1)
	a := freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", a})); err != nil {
		t.Fatal(err)
	}
	admin, err := s.StartAdmin("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan string, 1)
	go func() { body, err := get(a, "/slow"); res <- body + errString(err) }()
	<-g.entered

	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	eventually(t, func() bool { return refused(a) }, "listener still accepts during shutdown")
	if code := status(t, admin, "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready during shutdown = %d; want 503", code)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v before the in-flight request finished", err)
	default:
	}
	close(g.release)
	if got := <-res; got != "a r1" {
		t.Errorf("in-flight request = %q; want it completed", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := s.Apply(runtime("r2", [2]string{"a", a})); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Shutdown = %v; want ErrClosed", err)
	}
	if !refused(admin) {
		t.Error("admin listener still open after Shutdown")
	}
}

func TestShutdownDeadline(t *testing.T) {
	s, _, g := newTestServer(t, -1)
	defer close(g.release)
	a := freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", a})); err != nil {
		t.Fatal(err)
	}
	go get(a, "/slow")
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v; want deadline exceeded", err)
	}
}

func status(t *testing.T, addr, path string) int {
	t.Helper()
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAdminEndpoints(t *testing.T) {
	s, _, _ := newTestServer(t, -1)
	admin, err := s.StartAdmin("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if code := status(t, admin, "/health"); code != 200 {
		t.Errorf("/health = %d; want 200", code)
	}
	if code := status(t, admin, "/ready"); code != 503 {
		t.Errorf("/ready before config = %d; want 503", code)
	}
	if code := status(t, admin, "/config"); code != 503 {
		t.Errorf("/config before config = %d; want 503", code)
	}

	src := &configv1.Config{
		Upstreams: []*configv1.Upstream{
			{Name: "secret", Url: "http://127.0.0.1:1", Auth: &configv1.Auth{Type: "bearer", Token: "sk-live-123"}},
			{Name: "env", Url: "http://127.0.0.1:2", Auth: &configv1.Auth{Type: "bearer", Token: "${env:KEY}"}},
		},
		UpstreamGroups: []*configv1.UpstreamGroup{{Name: "g", Upstreams: []*configv1.UpstreamRef{{Name: "secret"}}}},
	}
	keep := proto.Clone(src)
	rt := runtime("file:abc123", [2]string{"a", freeAddr(t)})
	rt.Source = src
	if err := s.Apply(rt); err != nil {
		t.Fatal(err)
	}
	if code := status(t, admin, "/ready"); code != 200 {
		t.Errorf("/ready after config = %d; want 200", code)
	}

	resp, err := client.Get("http://" + admin + "/config")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var got struct {
		Revision string `json:"revision"`
		Config   struct {
			Upstreams []struct {
				Name string `json:"name"`
				Auth struct {
					Token string `json:"token"`
				} `json:"auth"`
			} `json:"upstreams"`
			UpstreamGroups []json.RawMessage `json:"upstream_groups"`
		} `json:"config"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode /config %s: %v", body, err)
	}
	if got.Revision != "file:abc123" {
		t.Errorf("revision = %q", got.Revision)
	}
	if !strings.Contains(string(body), `"token":"<redacted>"`) {
		t.Errorf("/config does not show the redaction marker: %s", body)
	}
	if strings.Contains(string(body), "sk-live-123") {
		t.Errorf("/config leaks a secret: %s", body)
	}
	if len(got.Config.Upstreams) != 2 || got.Config.Upstreams[1].Auth.Token != "${env:KEY}" || len(got.Config.UpstreamGroups) != 1 {
		t.Errorf("/config body = %s", body)
	}
	if !proto.Equal(src, keep) {
		t.Error("/config modified the applied config")
	}

	resp, err = client.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/metrics = %d", resp.StatusCode)
	}
	if strings.Contains(string(body), "env_overrides") {
		t.Errorf("/config lists env overrides when there are none: %s", body)
	}
}

// TestAdminConfigEnvOverrides checks that /config names the values that came from the
// environment, with their secrets redacted.
func TestAdminConfigEnvOverrides(t *testing.T) {
	s, _, _ := newTestServer(t, -1)
	admin, err := s.StartAdmin("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	rt := runtime("file:abc123", [2]string{"a", freeAddr(t)})
	rt.Source = &configv1.Config{Upstreams: []*configv1.Upstream{
		{Name: "u", Url: "http://127.0.0.1:7", Auth: &configv1.Auth{Type: "bearer", Token: "sk-from-env"}},
	}}
	rt.EnvOverrides = []configfile.Override{
		{Variable: "LLMPROXY_UPSTREAMS__0__AUTH__TOKEN", Path: "upstreams[0].auth.token"},
		{Variable: "LLMPROXY_UPSTREAMS__0__URL", Path: "upstreams[0].url"},
	}
	if err := s.Apply(rt); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get("http://" + admin + "/config")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var got struct {
		EnvOverrides []struct{ Variable, Path, Value string } `json:"env_overrides"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode /config %s: %v", body, err)
	}
	want := []struct{ Variable, Path, Value string }{
		{"LLMPROXY_UPSTREAMS__0__AUTH__TOKEN", "upstreams[0].auth.token", "<redacted>"},
		{"LLMPROXY_UPSTREAMS__0__URL", "upstreams[0].url", "http://127.0.0.1:7"},
	}
	if !slices.Equal(got.EnvOverrides, want) {
		t.Errorf("env_overrides = %+v; want %+v", got.EnvOverrides, want)
	}
	if strings.Contains(string(body), "sk-from-env") {
		t.Errorf("/config leaks a secret: %s", body)
	}
}

func errString(err error) string {
	if err != nil {
		return " error: " + err.Error()
	}
	return ""
}

func TestRetimedForwardReopensOnSameAddress(t *testing.T) {
	s, _, _ := newTestServer(t, time.Hour)
	a := freeAddr(t)
	if err := s.Apply(runtime("r1", [2]string{"a", a})); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	old := s.live["a"]
	s.mu.Unlock()
	rt := runtime("r2", [2]string{"a", a})
	rt.Forwards[0].HeaderTimeout = 7 * time.Second
	if err := s.Apply(rt); err != nil {
		t.Fatalf("re-timed forward on the same address: %v", err)
	}
	s.mu.Lock()
	cur, lingering := s.live["a"], len(s.lingering)
	s.mu.Unlock()
	if cur == old || cur.srv.ReadHeaderTimeout != 7*time.Second {
		t.Fatalf("forward kept its old server (header timeout %s)", cur.srv.ReadHeaderTimeout)
	}
	if lingering != 0 {
		t.Error("the replaced listener lingers on the address its successor took")
	}
	select {
	case <-old.stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the replaced listener kept serving")
	}
	mustGet(t, a, "/", "a r2")
}
