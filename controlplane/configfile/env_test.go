package configfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
)

const envBase = `
http_server:
  forwards:
    - name: main
      port: 3000
      default_group: g
      routing:
        - path: /v1/*
          target_group: g
          headers: {X-Tenant: a}
upstreams:
  - name: a
    url: http://127.0.0.1:8001
    auth: {type: bearer, token: from-file}
    headers: &h
      - {op: insert, key: x-team, value: blue}
  - name: b
    url: http://127.0.0.1:8002
    auth:
      type: bearer
      token:
    headers: *h
upstream_groups:
  - name: g
    upstreams: [{name: a}, {name: b}]
    http_client:
      stream_mode: true
      retry: {retry_on: [502, timeout]}
`

func parseBase(t *testing.T) *File {
	t.Helper()
	f, err := Parse("config.yaml", []byte(envBase))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestWithEnv checks that overrides replace the values they name, whatever the case of
// their names, with the field's type, and leave everything else alone.
func TestWithEnv(t *testing.T) {
	f := parseBase(t)
	g, err := f.WithEnv([]string{
		"LLMPROXY_UPSTREAMS__0__AUTH__TOKEN=sk-env",
		"LLMPROXY_UPSTREAMS__1__AUTH__TOKEN=sk-placeholder-filled",
		"llmproxy_http_server__forwards__0__port=not-ours", // the prefix is case-sensitive
		"LLMPROXY_http_server__FORWARDS__0__Port=8080",
		"LLMPROXY_UPSTREAMS__0__HEADERS__0__VALUE=red",
		"LLMPROXY_UPSTREAM_GROUPS__0__HTTP_CLIENT__STREAM=false",
		"LLMPROXY_UPSTREAM_GROUPS__0__HTTP_CLIENT__RETRY__RETRY_ON__1=503",
		"LLMPROXY_HTTP_SERVER__FORWARDS__0__ROUTING__0__HEADERS__x-tenant=b",
		"LLMPROXY_ADMIN_AUTH_TOKEN=admin",
		"LLMPROXY_REDIS_URL=redis://x",
		"LLMPROXY_SERVICE_HOST=10.0.0.1", // Kubernetes service links
		"LLMPROXY_SERVICE_PORT_HTTP=3000",
		"LLMPROXY_PORT=tcp://10.0.0.1:3000",
		"LLMPROXY_PORT_3000_TCP_ADDR=10.0.0.1",
		"LLMPROXY_CONTROLPLANE_SERVICE_PORT=18000",
		"OPENAI_API_KEY=sk-other",
		"NOEQUALS",
	})
	if err != nil {
		t.Fatalf("WithEnv: %v", err)
	}
	c, err := g.Validate()
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	eq(t, "token 0", c.Upstreams[0].Auth.Token, "sk-env")
	eq(t, "token 1", c.Upstreams[1].Auth.Token, "sk-placeholder-filled")
	eq(t, "port", c.HttpServer.Forwards[0].GetPort(), uint32(8080))
	eq(t, "header of a", c.Upstreams[0].Headers[0].Value, "red")
	eq(t, "header of b (shares the anchor)", c.Upstreams[1].Headers[0].Value, "blue")
	eq(t, "stream (written stream_mode)", c.UpstreamGroups[0].HttpClient.GetStream(), false)
	eq(t, "retry_on", strings.Join(c.UpstreamGroups[0].HttpClient.Retry.RetryOn, ","), "502,503")
	eq(t, "route header", c.HttpServer.Forwards[0].Routing[0].Headers["X-Tenant"], "b")

	wantOverrides := []Override{
		{"LLMPROXY_HTTP_SERVER__FORWARDS__0__ROUTING__0__HEADERS__x-tenant", `http_server.forwards[0].routing[0].headers["X-Tenant"]`},
		{"LLMPROXY_UPSTREAMS__0__AUTH__TOKEN", "upstreams[0].auth.token"},
		{"LLMPROXY_UPSTREAMS__0__HEADERS__0__VALUE", "upstreams[0].headers[0].value"},
		{"LLMPROXY_UPSTREAMS__1__AUTH__TOKEN", "upstreams[1].auth.token"},
		{"LLMPROXY_UPSTREAM_GROUPS__0__HTTP_CLIENT__RETRY__RETRY_ON__1", "upstream_groups[0].http_client.retry.retry_on[1]"},
		{"LLMPROXY_UPSTREAM_GROUPS__0__HTTP_CLIENT__STREAM", "upstream_groups[0].http_client.stream"},
		{"LLMPROXY_http_server__FORWARDS__0__Port", "http_server.forwards[0].port"},
	}
	if got := g.Overrides(); !slices.Equal(got, wantOverrides) {
		t.Errorf("overrides:\n got  %v\n want %v", got, wantOverrides)
	}

	// The file it came from is unchanged.
	orig := f.Config()
	eq(t, "original token", orig.Upstreams[0].Auth.Token, "from-file")
	eq(t, "original port", orig.HttpServer.Forwards[0].GetPort(), uint32(3000))
	if f.Overrides() != nil {
		t.Errorf("original has overrides: %v", f.Overrides())
	}
	// No override at all: the same file.
	if same, err := f.WithEnv([]string{"HOME=/root", "LLMPROXY_SERVER=x"}); err != nil || same != f {
		t.Errorf("WithEnv without overrides = %p, %v; want the file itself", same, err)
	}
}

// TestWithEnvErrors checks that every override that names nothing, or names something that
// is not a value, is an error naming the variable, and that all are reported at once.
func TestWithEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  string
		want string
	}{
		{"misspelt top-level key", "LLMPROXY_UPSTREAMZ__0__URL=http://x",
			`config.yaml: env LLMPROXY_UPSTREAMZ__0__URL: unknown key "upstreamz" (valid keys: http_server, upstreams, upstream_groups, consumers, pricing)`},
		{"misspelt inner key", "LLMPROXY_UPSTREAMS__0__AUTH__TOKN=x",
			`config.yaml: env LLMPROXY_UPSTREAMS__0__AUTH__TOKN: unknown key "tokn" in upstreams[0].auth (valid keys: type, token, username, password)`},
		{"key the file does not set", "LLMPROXY_UPSTREAMS__0__BREAKER__COOLDOWN=5",
			`config.yaml: env LLMPROXY_UPSTREAMS__0__BREAKER__COOLDOWN: upstreams[0].breaker is not in the file; an override replaces a value the file sets (write "breaker:" with no value to leave it to the environment)`},
		{"index past the end", "LLMPROXY_UPSTREAMS__2__URL=http://x",
			`config.yaml: env LLMPROXY_UPSTREAMS__2__URL: upstreams has 2 items in the file; there is no index 2`},
		{"not an index", "LLMPROXY_UPSTREAMS__A__URL=http://x",
			`config.yaml: env LLMPROXY_UPSTREAMS__A__URL: upstreams is a list: "A" is not an index`},
		{"a mapping", "LLMPROXY_UPSTREAMS__0__AUTH=x",
			`config.yaml: env LLMPROXY_UPSTREAMS__0__AUTH: upstreams[0].auth is a mapping, not a value`},
		{"a list item mapping", "LLMPROXY_UPSTREAMS__0=x",
			`config.yaml: env LLMPROXY_UPSTREAMS__0: upstreams[0] is a mapping, not a value`},
		{"a list", "LLMPROXY_UPSTREAMS=x",
			`config.yaml: env LLMPROXY_UPSTREAMS: upstreams is a list, not a value`},
		{"below a value", "LLMPROXY_UPSTREAMS__0__URL__HOST=x",
			`config.yaml: env LLMPROXY_UPSTREAMS__0__URL__HOST: upstreams[0].url is a value; it has no "host"`},
		{"empty segment", "LLMPROXY_UPSTREAMS____URL=x",
			`config.yaml: env LLMPROXY_UPSTREAMS____URL: empty path segment (segments are joined by "__")`},
		{"missing map key", "LLMPROXY_HTTP_SERVER__FORWARDS__0__ROUTING__0__HEADERS__X_TEAM=x",
			`config.yaml: env LLMPROXY_HTTP_SERVER__FORWARDS__0__ROUTING__0__HEADERS__X_TEAM: http_server.forwards[0].routing[0].headers has no key "X_TEAM" in the file`},
		{"unknown single word", "LLMPROXY_DEBUG=1",
			`config.yaml: env LLMPROXY_DEBUG: unknown key "debug" (valid keys: http_server, upstreams, upstream_groups, consumers, pricing)`},
		{"value of the wrong type", "LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT=eighty",
			`config.yaml: env LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT: http_server.forwards[0].port: expected an integer 0-4294967295, got string "eighty"`},
	}
	f := parseBase(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := f.WithEnv([]string{tt.env})
			if g != nil {
				t.Errorf("file returned with an error")
			}
			checkLines(t, err, []string{tt.want})
			if !errors.Is(err, validate.ErrInvalid) {
				t.Errorf("error is not validate.ErrInvalid")
			}
		})
	}

	t.Run("all at once, and two spellings of one path", func(t *testing.T) {
		_, err := f.WithEnv([]string{"LLMPROXY_UPSTREAMZ=1", "LLMPROXY_UPSTREAMS__0__URL=http://x", "LLMPROXY_upstreams__0__url=http://y",
			"LLMPROXY_DEBUG=1", "LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT=eighty"})
		checkLines(t, err, []string{
			`config.yaml: env LLMPROXY_DEBUG: unknown key "debug" (valid keys: http_server, upstreams, upstream_groups, consumers, pricing)`,
			`config.yaml: env LLMPROXY_UPSTREAMZ: unknown key "upstreamz" (valid keys: http_server, upstreams, upstream_groups, consumers, pricing)`,
			`config.yaml: env LLMPROXY_upstreams__0__url: upstreams[0].url is also set by LLMPROXY_UPSTREAMS__0__URL`,
			`config.yaml: env LLMPROXY_HTTP_SERVER__FORWARDS__0__PORT: http_server.forwards[0].port: expected an integer 0-4294967295, got string "eighty"`,
		})
	})
	t.Run("empty file", func(t *testing.T) {
		empty, err := Parse("config.yaml", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = empty.WithEnv([]string{"LLMPROXY_UPSTREAMS__0__URL=http://x"})
		checkLines(t, err, []string{`config.yaml: env LLMPROXY_UPSTREAMS__0__URL: upstreams is not in the file`})
	})
}

// TestWithEnvValidation checks that validation errors in a value from the environment name
// the variable instead of the line it replaced.
func TestWithEnvValidation(t *testing.T) {
	g, err := parseBase(t).WithEnv([]string{"LLMPROXY_UPSTREAMS__1__URL=ftp://b", "LLMPROXY_UPSTREAMS__0__AUTH__TOKEN=", "LLMPROXY_UPSTREAMS__1__AUTH__TOKEN=t"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Validate()
	lines := errLines(err)
	if len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "config.yaml: env LLMPROXY_UPSTREAMS__0__AUTH__TOKEN: upstreams[0].auth.token: ") ||
		!strings.HasPrefix(lines[1], "config.yaml: env LLMPROXY_UPSTREAMS__1__URL: upstreams[1].url: ") {
		t.Errorf("got:\n%v", err)
	}
}

// TestSettingVariablesListed checks that every LLMPROXY_ variable named in the module's Go
// source is a setting listed in SettingVariables (or an example of an override), so a new
// flag variable cannot be mistaken for a config path by a static proxy.
func TestSettingVariablesListed(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	literal := regexp.MustCompile(`"(LLMPROXY_[A-Z0-9_]+)"`)
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "gen" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range literal.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !seen["LLMPROXY_REDIS_URL"] {
		t.Fatalf("the scan found no known variable; it looked in %s", root)
	}
	for name := range seen {
		if !slices.Contains(SettingVariables, name) && !strings.Contains(name, "__") {
			t.Errorf("%s is read by a binary but not listed in SettingVariables", name)
		}
	}
}

func TestValueAt(t *testing.T) {
	c := parseBase(t).Config()
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"upstreams[0].auth.token", "from-file", true},
		{"http_server.forwards[0].port", "3000", true},
		{`http_server.forwards[0].routing[0].headers["X-Tenant"]`, "a", true},
		{"upstream_groups[0].http_client.stream", "true", true},
		{"upstream_groups[0].http_client.retry.retry_on[1]", "timeout", true},
		{"upstreams[0].auth", "", false},
		{"upstreams[5].url", "", false},
		{"upstreams[0].breaker.cooldown", "", false},
		{`http_server.forwards[0].routing[0].headers["x-tenant"]`, "", false},
		{"upstreams[0].url.host", "", false},
		{"nope", "", false},
	}
	for _, tt := range tests {
		got, ok := ValueAt(c, tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ValueAt(%s) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzWithEnv checks that no override, however named or valued, panics or changes the file
// it was applied to, and that an accepted one is listed.
func FuzzWithEnv(f *testing.F) {
	f.Add("UPSTREAMS__0__AUTH__TOKEN", "t")
	f.Add("HTTP_SERVER__FORWARDS__0__ROUTING__0__HEADERS__X-TENANT", "b")
	f.Add("UPSTREAMS__1__HEADERS__0__VALUE", "~")
	f.Add("UPSTREAM_GROUPS__0__HTTP_CLIENT__RETRY__RETRY_ON__9", "1")
	f.Fuzz(func(t *testing.T, path, value string) {
		file := parseBase(t)
		before := file.Config()
		g, err := file.WithEnv([]string{EnvPrefix + path + "=" + value})
		if !proto.Equal(file.Config(), before) {
			t.Fatal("WithEnv changed the file it was applied to")
		}
		if err == nil && g != file && len(g.Overrides()) != 1 {
			t.Fatalf("one variable accepted, overrides %v", g.Overrides())
		}
	})
}
