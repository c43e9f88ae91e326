package e2e

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// makeRunPorts are the fixed ports `make run` uses.
var makeRunPorts = []string{"127.0.0.1:3000", "127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:9000", "127.0.0.1:18000", "127.0.0.1:18001"}

// TestMakeRun runs deploy/run-local.sh (what `make run` runs after building), then the
// commands it prints, as printed: the chat completion, the stream, the route change (the
// next answer comes from the other upstream) and the fleet status; then Ctrl-C stops all.
func TestMakeRun(t *testing.T) {
	bins := harness.Binaries(t)
	root := harness.ModuleRoot(t)
	for _, a := range makeRunPorts {
		if c, err := net.DialTimeout("tcp", a, 200*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("%s is in use: make run needs its fixed ports", a)
		}
	}
	work := t.TempDir()
	binDir := filepath.Join(work, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{bins.Ctl, bins.ControlPlane, bins.Proxy, bins.MockLLM} {
		if err := os.Symlink(b, filepath.Join(binDir, filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
	}

	script := exec.Command("bash", filepath.Join(root, "deploy/run-local.sh"))
	script.Env = append(os.Environ(), "BIN="+binDir, "DATA="+filepath.Join(work, "data"), "LLMPROXY_ADMIN_AUTH_TOKEN=", "LLMPROXY_SERVER=")
	script.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := script.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	script.Stderr = script.Stdout
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = syscall.Kill(-script.Process.Pid, syscall.SIGKILL)
	})

	// Read what it prints until the banner's last line.
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- script.Wait()
	}()
	var printed []string
	deadline := time.After(60 * time.Second)
read:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("make run ended early:\n%s", strings.Join(printed, "\n"))
			}
			printed = append(printed, l)
			if strings.Contains(l, "Ctrl-C stops everything") {
				break read
			}
		case <-deadline:
			t.Fatalf("make run did not print its banner in 60 s:\n%s", strings.Join(printed, "\n"))
		}
	}
	go func() { // keep draining
		for range lines {
		}
	}()

	cmds := printedCommands(printed)
	if len(cmds) < 4 {
		t.Fatalf("make run printed %d commands, want the curl, the stream, the route change and status:\n%s", len(cmds), strings.Join(printed, "\n"))
	}
	run := func(c string) string {
		t.Helper()
		cmd := exec.Command("bash", "-c", c)
		cmd.Dir = work
		cmd.Env = script.Env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s\nfailed: %v\n%s", c, err, out)
		}
		return string(out)
	}
	var chat string
	for _, c := range cmds {
		out := run(c)
		switch {
		case strings.HasPrefix(c, "curl -si"):
			chat = c
			if !strings.Contains(out, "200 OK") || !strings.Contains(out, "X-Mock-Upstream: mock-a") {
				t.Errorf("%s\nwant 200 from mock-a, got:\n%s", c, out)
			}
		case strings.HasPrefix(c, "curl -N"):
			if !strings.Contains(out, "data: [DONE]") || strings.Count(out, "data: {") < 2 {
				t.Errorf("%s\nwant a stream of chunks ending in [DONE], got:\n%s", c, out)
			}
		case strings.Contains(c, "route set"):
			harness.Eventually(t, 10*time.Second, func() bool {
				return strings.Contains(run(chat), "X-Mock-Upstream: mock-b")
			}, "after %q the chat completion is still not answered by mock-b", c)
		case strings.Contains(c, "status"):
			if !strings.Contains(out, "local-proxy") {
				t.Errorf("%s\nwant the proxy in the fleet status, got:\n%s", c, out)
			}
		}
	}

	// Ctrl-C stops everything.
	if err := syscall.Kill(-script.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("make run did not stop within 30 s of Ctrl-C")
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		for _, a := range makeRunPorts {
			if c, err := net.DialTimeout("tcp", a, 100*time.Millisecond); err == nil {
				c.Close()
				return false
			}
		}
		return true
	}, "a process of make run still listens after Ctrl-C")
}

// printedCommands returns the shell commands of the banner: lines starting with curl or
// bin/llmproxyctl, joined with their backslash continuations.
func printedCommands(lines []string) []string {
	var out []string
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "curl ") && !strings.HasPrefix(l, "bin/llmproxyctl ") {
			continue
		}
		cmd := l
		for strings.HasSuffix(cmd, `\`) && i+1 < len(lines) {
			i++
			cmd = strings.TrimSuffix(cmd, `\`) + " " + strings.TrimSpace(lines[i])
		}
		out = append(out, cmd)
	}
	return out
}
