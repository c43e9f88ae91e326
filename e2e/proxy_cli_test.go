package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// runProxy runs llmproxy to completion with args and returns its exit code and output. The
// environment is the test's without the provider keys, plus env.
func runProxy(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(harness.Binaries(t).Proxy, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPENAI_API_KEY=") && !strings.HasPrefix(kv, "ANTHROPIC_API_KEY=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("run llmproxy %v: %v", args, err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("llmproxy %v did not exit", args)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

const badConfig = `
http_server:
  forwards:
    - name: f
      port: 3000
      default_group: nowhere
upstreams:
  - {name: a, url: "http://127.0.0.1:1"}
  - {name: a, url: "http://127.0.0.1:2"}
upstream_groups:
  - name: g
    balance: {strategy: fastest}
    upstreams: [{name: missing}]
`

// TestProxyCheckConfig runs llmproxy --test on good and bad files, the shipped examples
// included, and checks the exit codes and that every error is listed.
func TestProxyCheckConfig(t *testing.T) {
	t.Parallel()
	root := harness.ModuleRoot(t)
	quickstart := filepath.Join(root, "deploy/examples/quickstart.yaml")
	providers := filepath.Join(root, "deploy/examples/providers.yaml")
	keys := []string{"OPENAI_API_KEY=sk-test", "ANTHROPIC_API_KEY=sk-ant-test"}

	cases := []struct {
		name     string
		env      []string
		args     []string
		code     int
		contains []string // in stdout+stderr
	}{
		{"quickstart example", nil, []string{"--test", "--config", quickstart}, 0, []string{"configuration ok"}},
		{"providers example with keys", keys, []string{"--test", "--config", providers}, 0, []string{"configuration ok"}},
		{"providers example without keys", nil, []string{"--test", "--config", providers}, 1, []string{"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}},
		{"every error listed", nil, []string{"--test", "--config", harness.WriteFile(t, "bad.yaml", badConfig)}, 1, []string{
			`default_group`, `"nowhere"`, `already defined`, `strategy`, `"missing"`, `bad.yaml:`,
		}},
		{"unknown key with its line", nil, []string{"--test", "--config", harness.WriteFile(t, "typo.yaml", "http_server:\n  forwardz: []\n")}, 1, []string{
			`typo.yaml:2`, `forwardz`,
		}},
		{"missing file", nil, []string{"--test", "--config", filepath.Join(t.TempDir(), "none.yaml")}, 1, []string{"none.yaml"}},
		{"no mode", nil, []string{"--test"}, 2, []string{"--config"}},
		{"neither config nor control plane", nil, nil, 2, []string{"--config", "--control-plane"}},
		{"both config and control plane", nil, []string{"--config", quickstart, "--control-plane", "127.0.0.1:1"}, 2, []string{"exclusive"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runProxy(t, c.env, c.args...)
			out := stdout + stderr
			if code != c.code {
				t.Errorf("exit code %d; want %d\n%s", code, c.code, out)
			}
			for _, want := range c.contains {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
