package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"config", []string{"--config", "x.yaml"}, ""},
		{"control plane", []string{"--control-plane", "127.0.0.1:18000"}, ""},
		{"neither", nil, "one of --config FILE or --control-plane HOST:PORT is required"},
		{"both", []string{"--config", "x.yaml", "--control-plane", "h:1"}, "exclusive"},
		{"test without config", []string{"--control-plane", "h:1", "--test"}, "--test needs --config"},
		{"bad timeout", []string{"--config", "x", "--shutdown-timeout", "0s"}, "--shutdown-timeout"},
		{"bad cache timeout", []string{"--config", "x", "--cache-lookup-timeout", "0s"}, "--cache-lookup-timeout"},
		{"stray argument", []string{"--config", "x", "extra"}, "unexpected arguments"},
		{"tls", []string{"--control-plane", "h:1", "--control-plane-ca", "ca.pem", "--tls-cert", "c", "--tls-key", "k"}, ""},
		{"cert without key", []string{"--control-plane", "h:1", "--tls-cert", "c"}, "--tls-cert and --tls-key go together"},
		{"tls without a control plane", []string{"--config", "x", "--control-plane-ca", "ca.pem"}, "they need --control-plane"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := parseFlags(c.args, &bytes.Buffer{})
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("parseFlags(%q) = %v", c.args, err)
				}
				if f.adminAddr != "127.0.0.1:9000" || f.stateDir != ".data/proxy" || f.shutdownTimeout != 30*time.Second || f.cacheTimeout != 20*time.Millisecond {
					t.Errorf("defaults: %+v", f)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("parseFlags(%q) = %v; want an error containing %q", c.args, err, c.wantErr)
			}
		})
	}
}

func TestRedisFlagFromEnv(t *testing.T) {
	t.Setenv("LLMPROXY_REDIS_URL", "redis://127.0.0.1:6379/3")
	f, err := parseFlags([]string{"--config", "x"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if f.redisURL != "redis://127.0.0.1:6379/3" {
		t.Errorf("redis = %q; want the env value", f.redisURL)
	}
}

// TestExamplesPassTest runs --test on the shipped example files.
func TestExamplesPassTest(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-test")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-test")
	for _, name := range []string{"quickstart.yaml", "providers.yaml"} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			path := filepath.Join("..", "..", "..", "deploy", "examples", name)
			if code := run([]string{"--test", "--config", path}, &stdout, &stderr); code != 0 {
				t.Fatalf("--test %s: exit %d\n%s%s", name, code, stdout.String(), stderr.String())
			}
			if got := stdout.String(); got != "configuration ok\n" {
				t.Errorf("stdout = %q", got)
			}
		})
	}
}

func TestPprofAddrLoopbackOnly(t *testing.T) {
	for _, a := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:6060"} {
		if _, err := parseFlags([]string{"--config", "x", "--pprof-addr", a}, &bytes.Buffer{}); err != nil {
			t.Errorf("--pprof-addr %s: %v", a, err)
		}
	}
	for _, a := range []string{"0.0.0.0:6060", ":6060", "10.0.0.1:6060", "6060"} {
		if _, err := parseFlags([]string{"--config", "x", "--pprof-addr", a}, &bytes.Buffer{}); err == nil {
			t.Errorf("--pprof-addr %s accepted; want an error", a)
		}
	}
}

func TestAccessLogFlag(t *testing.T) {
	f, err := parseFlags([]string{"--config", "x"}, &bytes.Buffer{})
	if err != nil || !f.accessLog {
		t.Fatalf("default --access-log = %v, %v; want on", f != nil && f.accessLog, err)
	}
	f, err = parseFlags([]string{"--config", "x", "--access-log=false"}, &bytes.Buffer{})
	if err != nil || f.accessLog {
		t.Fatalf("--access-log=false: %+v, %v", f, err)
	}
}

// --test reports a cache backend this proxy would lack as an error naming the field; with
// --redis the same file is fine (no connection is made).
func TestTestReportsMissingCacheBackend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yaml := `
http_server:
  forwards: [{name: f, address: 127.0.0.1, port: 3999, default_group: g}]
upstreams: [{name: u, url: "http://127.0.0.1:1"}]
upstream_groups:
  - {name: g, upstreams: [{name: u}], cache: {enabled: true, backend: redis}}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--test", "--config", path}, &stdout, &stderr); code != 1 {
		t.Fatalf("--test without --redis: exit %d; want 1\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "upstream_groups[0].cache.backend: backend redis needs --redis") {
		t.Errorf("stderr %q does not name the field and the reason", stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"--test", "--config", path, "--redis", "redis://127.0.0.1:1/0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--test with --redis: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}
