package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const envOverrideConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.FilePort}}
      default_group: g
upstreams:
  - name: a
    url: {{.URL}}
    auth:
      type: bearer
      token:
upstream_groups:
  - name: g
    upstreams: [{name: a}]
`

// TestProxyEnvOverrides runs a static proxy with LLMProxy's environment overrides: the
// token and the port come from LLMPROXY_ variables, /config says so without showing the
// token, and a misspelt variable makes --test fail naming it.
func TestProxyEnvOverrides(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "a")["a"]
	port := harness.FreePort(t)
	yaml := renderConfig(t, envOverrideConfig, map[string]any{"FilePort": harness.FreePort(t), "URL": m.URL})
	p := startProxy(t, yaml,
		"LLMPROXY_UPSTREAMS__0__AUTH__TOKEN=t",
		"LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT="+strconv.Itoa(port))

	a := mustSend(t, "POST", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port), chat("gpt-4o"), "Authorization", "Bearer client-key")
	if a.Status != 200 {
		t.Fatalf("request through the overridden port: %d %s", a.Status, a.Body)
	}
	recs := m.requests(t)
	if len(recs) != 1 || recs[0].Header.Get("Authorization") != "Bearer t" {
		t.Fatalf("upstream got %d requests; want one with Authorization: Bearer t: %+v", len(recs), recs)
	}

	var cfg struct {
		EnvOverrides []struct{ Variable, Path, Value string } `json:"env_overrides"`
	}
	getJSON(t, p.Admin+"/config", &cfg)
	want := fmt.Sprintf("[{LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT http_server.forwards[0].port %d} {LLMPROXY_UPSTREAMS__0__AUTH__TOKEN upstreams[0].auth.token <redacted>}]", port)
	if got := fmt.Sprint(cfg.EnvOverrides); got != want {
		t.Errorf("/config env_overrides = %s; want %s", got, want)
	}

	path := harness.WriteFile(t, "typo.yaml", yaml)
	code, stdout, stderr := runProxy(t, []string{"LLMPROXY_UPSTREAMZ__0__URL=http://127.0.0.1:1"}, "--config", path, "--test")
	if code != 1 || !strings.Contains(stderr, "LLMPROXY_UPSTREAMZ__0__URL") || !strings.Contains(stderr, `unknown key "upstreamz"`) {
		t.Errorf("--test with a misspelt override: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runProxy(t, []string{"LLMPROXY_UPSTREAMS__0__AUTH__TOKEN=t"}, "--config", path, "--test")
	if code != 0 {
		t.Errorf("--test with a good override: exit %d\n%s%s", code, stdout, stderr)
	}
}
