// Package harness runs the real binaries for end-to-end tests: it builds them once per test
// process, starts them on free loopback ports, captures their output, waits on conditions
// with deadlines and stops everything when the test ends.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Paths are the built binaries.
type Paths struct {
	ControlPlane string // llmproxy-controlplane
	Proxy        string // llmproxy
	Ctl          string // llmproxyctl
	MockLLM      string // mockllm
}

var (
	buildOnce sync.Once
	built     Paths
	buildErr  error
)

// commands maps a binary name to its package, relative to the module root.
var commands = map[string]string{
	"llmproxy-controlplane": "./controlplane/cmd/llmproxy-controlplane",
	"llmproxy":              "./proxy/cmd/llmproxy",
	"llmproxyctl":           "./controlplane/cmd/llmproxyctl",
	"mockllm":               "./e2e/cmd/mockllm",
}

// Binaries builds every binary once per test process (the Go build cache makes later
// processes cheap) and returns their paths. It fails the test when a build fails.
func Binaries(t testing.TB) Paths {
	t.Helper()
	buildOnce.Do(func() { built, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return built
}

func build() (Paths, error) {
	root, err := moduleRoot()
	if err != nil {
		return Paths{}, err
	}
	dir, err := os.MkdirTemp("", "llmproxy-e2e-bin-")
	if err != nil {
		return Paths{}, fmt.Errorf("make bin dir: %w", err)
	}
	out := map[string]string{}
	for name, pkg := range commands {
		bin := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return Paths{}, fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
		out[name] = bin
	}
	return Paths{
		ControlPlane: out["llmproxy-controlplane"],
		Proxy:        out["llmproxy"],
		Ctl:          out["llmproxyctl"],
		MockLLM:      out["mockllm"],
	}, nil
}

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("find module root: not inside the module")
	}
	return filepath.Dir(mod), nil
}

// handedOut holds the ports FreeAddr has returned in this test process. The kernel may
// hand a just-closed ephemeral port out again at once, and our listeners use SO_REUSEPORT,
// so two listeners given the same port would share it silently (seen: a proxy's admin and
// forward on one port). A port is therefore never returned twice.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

// FreeAddr returns "127.0.0.1:PORT" for a port that was free a moment ago and that no
// earlier call of this process returned.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find free port: %v", err)
		}
		addr := l.Addr().String()
		l.Close()
		handedOut.Lock()
		fresh := !handedOut.ports[addr]
		handedOut.ports[addr] = true
		handedOut.Unlock()
		if fresh {
			return addr
		}
	}
	t.Fatal("find free port: every port offered was handed out before")
	return ""
}

// FreePort returns a port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	return Port(t, FreeAddr(t))
}

// Port returns the port of a "host:port" address.
func Port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("split %q: %v", addr, err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

// Process is a started binary. Its combined output is kept and printed when the test fails.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// Start runs bin with args and extra environment (added to the test's own) and stops it
// with SIGTERM when the test ends (SIGKILL after 10 s).
func Start(t testing.TB, bin string, args []string, env ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = t.TempDir()
	p := &Process{Name: filepath.Base(bin), Cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- output of %s %s ---\n%s", p.Name, strings.Join(args, " "), p.Output())
		}
	})
	return p
}

// Output returns what the process has printed so far.
func (p *Process) Output() string { return p.out.String() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to end and returns its exit code (-1 when it
// did not end in time or was killed by a signal).
func (p *Process) Wait(timeout time.Duration) int {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		return -1
	}
}

// Stop sends SIGTERM and waits up to grace, then kills. It returns the exit code.
func (p *Process) Stop(grace time.Duration) int {
	if p.Exited() {
		return p.Cmd.ProcessState.ExitCode()
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.Wait(grace); code != -1 || p.Exited() {
		return code
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
	return -1
}

// Kill ends the process at once with SIGKILL.
func (p *Process) Kill() {
	if !p.Exited() {
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Eventually calls cond until it returns true or timeout passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitHTTP waits until GET url answers with status want.
func WaitHTTP(t testing.TB, url string, want int, timeout time.Duration) {
	t.Helper()
	WaitHTTPWith(t, &http.Client{Timeout: time.Second}, url, want, timeout)
}

// WaitHTTPWith is WaitHTTP with the given client (one that trusts a test CA, say); its
// Timeout should be short, as it bounds each try.
func WaitHTTPWith(t testing.TB, client *http.Client, url string, want int, timeout time.Duration) {
	t.Helper()
	last := "no answer"
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
		} else {
			resp.Body.Close()
			last = resp.Status
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: want %d within %s, last: %s", url, want, timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitTCP waits until addr accepts TCP connections.
func WaitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, "dial %s", addr)
}

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// WriteFile writes content to name inside a fresh temp dir and returns its path.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
