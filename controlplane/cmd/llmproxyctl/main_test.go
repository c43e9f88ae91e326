package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

const seed = `
http_server:
  forwards:
    - name: main
      port: 3000
      default_group: g1
      routing:
        - {path: /v1/models, target_group: g1}
upstreams:
  - name: a
    url: http://127.0.0.1:8001
    auth: {type: bearer, token: sk-secret-a}
upstream_groups:
  - name: g1
    upstreams: [{name: a}]
  - name: g2
    upstreams: [{name: a}]
`

// fleet is a fixed fleet of one proxy.
type fleet struct{}

func (fleet) Proxies() []*adminv1.ProxyStatus {
	return []*adminv1.ProxyStatus{{
		NodeId: "proxy-1", Connected: true, AckedRevision: 1,
		ConnectedSince: timestamppb.Now(), LastNackRevision: 1, LastNackError: "bad\nthing",
	}}
}

// startServer runs an admin gRPC server on a fresh SQLite store holding seed (when not
// empty) and returns its address.
func startServer(t *testing.T, seedYAML string) string {
	t.Helper()
	return startServerWith(t, seedYAML, fleet{})
}

// startServerWith is startServer with the given fleet.
func startServerWith(t *testing.T, seedYAML string, fl admin.Fleet) string {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gs := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(gs, admin.New(st, fl, nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	addr := l.Addr().String()
	if seedYAML != "" {
		if _, errOut, code := ctl(t, addr, seedYAML, "apply", "-f", "-"); code != 0 {
			t.Fatalf("seed: %d %s", code, errOut)
		}
	}
	return addr
}

// ctl runs the CLI against server with stdin and returns stdout, stderr and the exit code.
func ctl(t *testing.T, server, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	env := map[string]string{"LLMPROXY_SERVER": server}
	code := run(args, strings.NewReader(stdin), &out, &errb, func(k string) string { return env[k] })
	return out.String(), errb.String(), code
}

func TestExitCodes(t *testing.T) {
	addr := startServer(t, seed)
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"no command", nil, exitUsage, "missing command"},
		{"unknown command", []string{"gett"}, exitUsage, `unknown command "gett" (did you mean get?)`},
		{"unknown flag", []string{"get", "upstreams", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{"bad output format", []string{"export", "-o", "xml"}, exitUsage, "want yaml or json"},
		{"too many arguments", []string{"get", "upstreams", "a", "b"}, exitUsage, "usage: llmproxyctl get"},
		{"unknown kind", []string{"delete", "thing", "x"}, exitUsage, `unknown kind "thing"`},
		{"apply without file", []string{"apply"}, exitUsage, "apply needs -f FILE"},
		{"route without action", []string{"route"}, exitUsage, "route needs an action"},
		{"missing upstream", []string{"get", "upstream", "nope"}, exitNotFound, `upstream "nope" not found`},
		{"missing forward of a route", []string{"route", "delete", "nope", "/x"}, exitNotFound, `forward "nope" not found`},
		{"missing route", []string{"route", "delete", "main", "/x"}, exitNotFound, `route "/x" not found`},
		{"deletion of a used upstream", []string{"delete", "upstream", "a"}, exitInvalid, `upstream group "g1"`},
		{"stale revision", []string{"delete", "group", "g2", "--expected-revision", "99"}, exitConflict, "revision"},
		{"unreadable file", []string{"validate", "-f", filepath.Join(t.TempDir(), "none.yaml")}, exitError, "read config"},
		{"unreachable server", []string{"export", "--server", "127.0.0.1:1"}, exitError, "control plane unavailable"},
		{"revision not a number", []string{"diff", "three"}, exitUsage, `REV: "three" is not a revision number`},
		{"missing revision", []string{"rollback", "99"}, exitNotFound, "revision 99 is not in the history"},
		{"missing base revision", []string{"diff", "1", "99"}, exitNotFound, "base 99 is not in the history"},
		{"history pages both ways", []string{"history", "--all", "--page-token", "3"}, exitUsage, "--all and --page-token exclude each other"},
		{"wait with a dry run", []string{"rollback", "1", "--wait", "--dry-run"}, exitUsage, "--wait and --dry-run exclude each other"},
		{"wait with diff", []string{"apply", "-f", "-", "--diff", "--wait=5s"}, exitUsage, "--wait and --diff exclude each other"},
		{"negative wait", []string{"delete", "group", "g2", "--wait=-1s"}, exitUsage, "--wait: want a positive duration"},
		{"wait with a detached value", []string{"rollback", "1", "--wait", "10s"}, exitUsage, "write --wait=10s"},
		{"bad wait", []string{"delete", "group", "g2", "--wait=soon"}, exitUsage, `invalid argument "soon" for "--wait"`},
		{"mass deletion", []string{"apply", "-f", os.DevNull}, exitInvalid, "llmproxyctl: hint: apply --force applies it anyway"},
		{"client certificate without key", []string{"status", "--cert", "c.pem"}, exitUsage, "--cert and --key go together"},
		{"unreadable CA file", []string{"status", "--ca", filepath.Join(t.TempDir(), "none.pem")}, exitError, "none.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := ctl(t, addr, "", tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d; want %d with %q in:\n%s", code, tt.code, tt.want, errOut)
			}
			if !strings.HasPrefix(errOut, "llmproxyctl: ") {
				t.Errorf("stderr does not start with the program name: %q", errOut)
			}
		})
	}
}

// TestHelp checks that every command has help that exits 0 and that the root's lists the
// exit codes.
func TestHelp(t *testing.T) {
	out, _, code := ctl(t, "127.0.0.1:1", "", "--help")
	if code != 0 || !strings.Contains(out, "Exit codes:") || !strings.Contains(out, "5  conflict") ||
		!strings.Contains(out, "6  refused") || !strings.Contains(out, "7  timeout") {
		t.Fatalf("--help: %d\n%s", code, out)
	}
	for _, cmd := range [][]string{
		{"apply"}, {"get"}, {"delete"}, {"route"}, {"route", "set"}, {"route", "delete"},
		{"export"}, {"validate"}, {"status"}, {"completion"}, {"history"}, {"diff"}, {"rollback"},
		{"cache"}, {"cache", "purge"},
	} {
		out, errOut, code := ctl(t, "127.0.0.1:1", "", append([]string{"help"}, cmd...)...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("help %v: %d %s %s", cmd, code, out, errOut)
		}
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := ctl(t, "127.0.0.1:1", "", "completion", shell)
		if code != 0 || !strings.Contains(out, "llmproxyctl") {
			t.Errorf("completion %s: %d %s", shell, code, errOut)
		}
	}
	addr := startServer(t, seed)
	out, _, _ := ctl(t, addr, "", "__complete", "get", "groups", "")
	if !strings.Contains(out, "g1\ng2\n") {
		t.Errorf("names of groups not completed:\n%s", out)
	}
	out, _, _ = ctl(t, addr, "", "__complete", "route", "set", "main", "")
	if !strings.Contains(out, "/v1/models\n") {
		t.Errorf("route paths not completed:\n%s", out)
	}
	if _, errOut, code := ctl(t, addr, "", "route", "set", "main", "/v1/models", "g2"); code != 0 {
		t.Fatal(errOut)
	}
	out, _, _ = ctl(t, addr, "", "__complete", "rollback", "")
	if !strings.HasPrefix(out, "2\n1\n:") {
		t.Errorf("revisions not completed newest first:\n%s", out)
	}
}

func TestOutputFormats(t *testing.T) {
	addr := startServer(t, seed)

	yamlOut, _, code := ctl(t, addr, "", "get", "upstreams", "a")
	if code != 0 || !strings.Contains(yamlOut, "upstreams:\n  - name: a\n") || strings.Contains(yamlOut, "sk-secret-a") {
		t.Errorf("get -o yaml: %d\n%s", code, yamlOut)
	}
	jsonOut, _, code := ctl(t, addr, "", "get", "upstreams", "a", "-o", "json")
	var got struct {
		Upstreams []struct {
			Name string `json:"name"`
			Auth struct {
				Token string `json:"token"`
			} `json:"auth"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal([]byte(jsonOut), &got); code != 0 || err != nil || len(got.Upstreams) != 1 || got.Upstreams[0].Auth.Token != "<redacted>" {
		t.Errorf("get -o json: %d %v\n%s", code, err, jsonOut)
	}

	exportJSON, _, code := ctl(t, addr, "", "export", "-o", "json")
	if code != 0 || !strings.Contains(exportJSON, `"upstream_groups"`) || !strings.HasPrefix(exportJSON, "{\n  ") {
		t.Errorf("export -o json: %d\n%s", code, exportJSON)
	}

	table, _, code := ctl(t, addr, "", "status")
	if code != 0 || !strings.Contains(table, "NODE") || !strings.Contains(table, "proxy-1") || !strings.Contains(table, "1: bad thing") {
		t.Errorf("status: %d\n%s", code, table)
	}
	statusJSON, _, code := ctl(t, addr, "", "status", "-o", "json")
	var sj struct {
		Revision string `json:"revision"`
		Proxies  []struct {
			NodeID string `json:"node_id"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal([]byte(statusJSON), &sj); code != 0 || err != nil || sj.Revision != "1" || len(sj.Proxies) != 1 || sj.Proxies[0].NodeID != "proxy-1" {
		t.Errorf("status -o json: %d %v\n%s", code, err, statusJSON)
	}
	statusYAML, _, code := ctl(t, addr, "", "status", "-o", "yaml")
	var sy struct {
		Revision string `yaml:"revision"`
		Proxies  []struct {
			NodeID        string `yaml:"node_id"`
			LastNackError string `yaml:"last_nack_error"`
		} `yaml:"proxies"`
	}
	if err := yaml.Unmarshal([]byte(statusYAML), &sy); code != 0 || err != nil || sy.Revision != "1" || len(sy.Proxies) != 1 || sy.Proxies[0].LastNackError != "bad\nthing" {
		t.Errorf("status -o yaml: %d %v\n%s", code, err, statusYAML)
	}
	if strings.Contains(statusYAML, "{") || strings.Contains(statusYAML, `"node_id"`) {
		t.Errorf("status -o yaml is not block YAML:\n%s", statusYAML)
	}
}

// TestRouteSet checks that route set creates a missing route and repoints an existing one.
func TestRouteSet(t *testing.T) {
	addr := startServer(t, seed)
	out, errOut, code := ctl(t, addr, "", "route", "set", "main", "/v1/chat/completions", "g2")
	if code != 0 || !strings.Contains(out, "created") {
		t.Fatalf("create: %d %s %s", code, out, errOut)
	}
	out, errOut, code = ctl(t, addr, "", "route", "set", "main", "/v1/chat/completions", "g1")
	if code != 0 || !strings.Contains(out, "updated") || !strings.Contains(out, `target_group "g1"`) {
		t.Fatalf("repoint: %d %s %s", code, out, errOut)
	}
	_, errOut, code = ctl(t, addr, "", "route", "set", "nope", "/v1/x", "g1")
	if code != exitNotFound || !strings.Contains(errOut, `forward "nope" not found`) {
		t.Errorf("route set on a missing forward: %d %s", code, errOut)
	}
}

// TestValidateAndApplyPositions checks that validate (from a file and from stdin) and apply
// point their errors at the file's lines.
func TestValidateAndApplyPositions(t *testing.T) {
	const bad = "upstreams:\n  - name: a\n    url: ftp://a\n"
	_, errOut, code := ctl(t, "127.0.0.1:1", bad, "validate", "-f", "-")
	if code != exitInvalid || !strings.Contains(errOut, "llmproxyctl: <stdin>:3:10: upstreams[0].url: ") {
		t.Errorf("validate stdin: %d %s", code, errOut)
	}
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte(bad+"upstream_groups:\n  - {name: g, upstreams: [{name: ghost}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = ctl(t, "127.0.0.1:1", "", "validate", "-f", p)
	if code != exitInvalid || !strings.Contains(errOut, "llmproxyctl: 2 errors:\n") || !strings.Contains(errOut, p+":5:34: upstream_groups[0].upstreams[0].name: ") {
		t.Errorf("validate file: %d %s", code, errOut)
	}
	good, _, code := ctl(t, "127.0.0.1:1", seed, "validate", "-f", "-")
	if code != 0 || good != "-: valid\n" {
		t.Errorf("validate good: %d %q", code, good)
	}

	addr := startServer(t, seed)
	_, errOut, code = ctl(t, addr, bad, "apply", "-f", "-")
	if code != exitInvalid || !strings.Contains(errOut, "llmproxyctl: <stdin>:3:10: upstreams[0].url: ") {
		t.Errorf("apply of a bad file: %d %s", code, errOut)
	}
}
