package e2e

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// readmeCommand is one `$ ` line of a console block in README.md.
type readmeCommand struct {
	line    int
	command string
	want409 bool // the line's comment says it answers 409
}

var comment409 = regexp.MustCompile(`#\s*409\b`)

// readmeCommands returns the commands of every ```console block in README.md.
func readmeCommands(t *testing.T, root string) []readmeCommand {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []readmeCommand
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "```console"):
			in = true
		case strings.HasPrefix(l, "```"):
			in = false
		case in && strings.HasPrefix(l, "$ "):
			cmd := strings.TrimPrefix(l, "$ ")
			out = append(out, readmeCommand{line: n, command: cmd, want409: comment409.MatchString(cmd)})
		}
	}
	if len(out) < 10 {
		t.Fatalf("README.md has %d console commands; the admin examples are missing", len(out))
	}
	return out
}

// TestREADMEExamples runs the README's curl, grpcurl and llmproxyctl examples, as printed,
// against a control plane on the default ports bootstrapped from the quickstart file.
func TestREADMEExamples(t *testing.T) {
	bins := harness.Binaries(t)
	root := harness.ModuleRoot(t)

	// Lay out a work dir where the printed relative paths resolve: bin/ and deploy/.
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
	if err := os.Symlink(filepath.Join(root, "deploy"), filepath.Join(work, "deploy")); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(binDir, "grpcurl"), "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build grpcurl: %v\n%s", err, out)
	}

	for _, addr := range []string{"127.0.0.1:18000", "127.0.0.1:18001"} {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("%s is in use: the README examples need the control plane's default ports (is `make run` running?)", addr)
		}
	}
	cp := harness.Start(t, bins.ControlPlane, []string{
		"--store", "sqlite:" + filepath.Join(work, "cp.db"),
		"--bootstrap", filepath.Join(root, "deploy/examples/quickstart.yaml"),
	}, "LLMPROXY_ADMIN_AUTH_TOKEN=")
	harness.WaitHTTP(t, "http://127.0.0.1:18001/health", 200, 20*time.Second)
	_ = cp

	env := append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "LLMPROXY_ADMIN_AUTH_TOKEN=", "LLMPROXY_SERVER=")
	for _, c := range readmeCommands(t, root) {
		cmd := exec.Command("bash", "-o", "pipefail", "-c", c.command)
		cmd.Dir = work
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		text := string(out)
		switch {
		case c.want409:
			if !strings.Contains(text, `"error"`) || !strings.Contains(text, "409") && !strings.Contains(strings.ToLower(text), "used by") {
				t.Errorf("README.md:%d: %s\nwant a 409 error naming the users, got (err %v):\n%s", c.line, c.command, err, text)
			}
		case err != nil:
			t.Errorf("README.md:%d: %s\nfailed: %v\n%s", c.line, c.command, err, text)
		case strings.Contains(text, `"error"`) || strings.Contains(text, "ERROR:"):
			t.Errorf("README.md:%d: %s\nanswered an error:\n%s", c.line, c.command, text)
		default:
			t.Logf("README.md:%d: %s\n%s", c.line, c.command, text)
		}
	}
}
