package e2e

import (
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const routingConfig = `
http_server:
  forwards:
    - name: routes
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g-default
      routing:
        - {path: /v1/chat/completions, target_group: g-static}
        - {path: "/v1/:kind/completions", target_group: g-param}
        - {path: "/v1/{kind:[0-9]+}/completions", target_group: g-regex}
        - {path: "/v1/*", target_group: g-wild}
        - {path: "/v6/:a/:b", target_group: g-param}
        - {path: "/v6/users/:id", target_group: g-static}
        - {path: "/v2/chat", model: "claude-*", target_group: g-model}
        - {path: "/v2/*", target_group: g-wild}
        - {path: "/v3/chat", headers: {X-Tenant: blue}, target_group: g-header}
        - {path: "/v4/models", methods: [POST], target_group: g-method}
upstreams:
{{- range .Mocks}}
  - {name: {{.Name}}, url: "{{.URL}}"}
{{- end}}
upstream_groups:
{{- range .Mocks}}
  - name: g-{{.Name}}
    upstreams: [{name: {{.Name}}}]
{{- end}}
`

// TestProxyRouting sends each case of LLMProxy's priority order (static > more static
// segments > regex param > plain param > wildcard; model, header and method conditions that
// fall through when they fail) and checks which mockllm received it, and with which path.
func TestProxyRouting(t *testing.T) {
	t.Parallel()
	names := []string{"static", "param", "regex", "wild", "model", "header", "method", "default"}
	mocks := startMocks(t, nil, names...)
	var list []*mock
	for _, n := range names {
		list = append(list, mocks[n])
	}
	addr := harness.FreeAddr(t)
	startProxy(t, renderConfig(t, routingConfig, map[string]any{"Port": harness.Port(t, addr), "Mocks": list}))
	base := "http://" + addr

	cases := []struct {
		name, method, path, model string
		headers                   []string
		want                      string
	}{
		{"static beats param and wildcard", "POST", "/v1/chat/completions", "gpt-4o", nil, "static"},
		{"plain param", "POST", "/v1/text/completions", "gpt-4o", nil, "param"},
		{"regex param beats plain param", "POST", "/v1/42/completions", "gpt-4o", nil, "regex"},
		{"wildcard at the end takes one segment", "POST", "/v1/embeddings", "gpt-4o", nil, "wild"},
		{"wildcard at the end takes the rest", "POST", "/v1/a/b/c/d", "gpt-4o", nil, "wild"},
		{"more static segments win", "GET", "/v6/users/7", "", nil, "static"},
		{"fewer static segments otherwise", "GET", "/v6/groups/7", "", nil, "param"},
		{"model glob matches", "POST", "/v2/chat", "claude-3-5-sonnet", nil, "model"},
		{"model glob fails: next candidate", "POST", "/v2/chat", "gpt-4o", nil, "wild"},
		{"header matches", "POST", "/v3/chat", "gpt-4o", []string{"X-Tenant", "blue"}, "header"},
		{"header differs: default group", "POST", "/v3/chat", "gpt-4o", []string{"X-Tenant", "red"}, "default"},
		{"header absent: default group", "POST", "/v3/chat", "gpt-4o", nil, "default"},
		{"method matches", "POST", "/v4/models", "gpt-4o", nil, "method"},
		{"method differs: default group", "GET", "/v4/models", "", nil, "default"},
		{"no route: default group", "POST", "/nowhere/chat/completions", "gpt-4o", nil, "default"},
	}
	for _, c := range cases {
		body := ""
		if c.model != "" {
			body = chat(c.model)
		}
		m := mocks[c.want]
		before := m.stats(t).LastSeq
		a := mustSend(t, c.method, base+c.path, body, c.headers...)
		if got := a.Upstream(); got != c.want {
			t.Errorf("%s: %s %s went to %q (status %d); want %q", c.name, c.method, c.path, got, a.Status, c.want)
			continue
		}
		recs, err := m.Requests(t.Context(), before)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].Method != c.method || recs[0].Path != c.path {
			t.Errorf("%s: upstream %s recorded %+v; want one %s %s", c.name, c.want, recs, c.method, c.path)
		}
		if c.model != "" && len(recs) == 1 && recs[0].Body != body {
			t.Errorf("%s: upstream got body %q; want %q unchanged", c.name, recs[0].Body, body)
		}
	}
}
