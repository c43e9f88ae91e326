package forward

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestJoinURLPath(t *testing.T) {
	tests := []struct{ base, req, want string }{
		{"", "/v1/chat", "/v1/chat"},
		{"/", "/v1/chat", "/v1/chat"},
		{"", "", "/"},
		{"/openai", "/v1/chat", "/openai/v1/chat"},
		{"/openai/", "/v1/chat", "/openai/v1/chat"},
		{"/openai", "v1/chat", "/openai/v1/chat"},
		{"/openai/", "v1", "/openai/v1"},
		{"/openai", "", "/openai"},
		{"/openai", "/", "/openai/"},
		{"/a/b", "/c/", "/a/b/c/"},
		// The end of the base repeats the start of the request path: written once.
		{"/v1", "/v1/chat", "/v1/chat"},
		{"/v1/", "/v1/chat", "/v1/chat"},
		{"/v1", "/v1", "/v1"},
		{"/v1", "/v1/", "/v1/"},
		{"/v1/chat/completions", "/v1/chat/completions", "/v1/chat/completions"},
		{"/llm/v1", "/v1/models", "/llm/v1/models"},
		{"/a/b/a", "/a/b/a/c", "/a/b/a/c"}, // the longest overlap wins
		{"/a/b/a", "/a/c", "/a/b/a/c"},
		// Whole segments only, never a string prefix.
		{"/v1x", "/v1/chat", "/v1x/v1/chat"},
		{"/v1", "/v1x/chat", "/v1/v1x/chat"},
		{"/xv1", "/v1/chat", "/xv1/v1/chat"},
		{"/v1/chat", "/chat/completions", "/v1/chat/completions"},
		{"/v1/chat/completions", "/v1/embeddings", "/v1/chat/completions/v1/embeddings"},
	}
	for _, tt := range tests {
		if got := joinURLPath(tt.base, tt.req); got != tt.want {
			t.Errorf("joinURLPath(%q, %q) = %q; want %q", tt.base, tt.req, got, tt.want)
		}
	}
}

func TestTargetURL(t *testing.T) {
	tests := []struct{ base, in, want string }{
		{"http://up:8080", "/v1/chat/completions?a=1&b=2", "http://up:8080/v1/chat/completions?a=1&b=2"},
		{"https://host/openai/", "/v1/models", "https://host/openai/v1/models"},
		{"http://up/pre", "/a%2Fb/c?x=%20", "http://up/pre/a%2Fb/c?x=%20"},
		{"http://up", "/", "http://up/"},
		{"http://up/v1", "/v1/chat?x=1", "http://up/v1/chat?x=1"},
		// Escaped paths overlap as sent: "%2F" separates nothing.
		{"http://up/a%2Fb", "/b/c", "http://up/a%2Fb/b/c"},
		{"http://up/a%2Fb", "/a%2Fb/c", "http://up/a%2Fb/c"},
		{"http://up/v1", "/v1/a%2Fb", "http://up/v1/a%2Fb"},
	}
	// One URL for every row, as the attempts reuse pooled ones: nothing of a row may stay
	// in the next (an escaped path's RawPath, a query).
	var u url.URL
	for _, tt := range tests {
		b, _ := url.Parse(tt.base)
		in, _ := url.ParseRequestURI(tt.in)
		targetURL(&u, b, in)
		if got := u.String(); got != tt.want {
			t.Errorf("targetURL(%q, %q) = %q; want %q", tt.base, tt.in, got, tt.want)
		}
	}
}

// TestTargetURLREADME runs every row of the README's table of upstream urls ("Pointing
// it at real providers"): request path, upstream url, what the upstream receives.
func TestTargetURLREADME(t *testing.T) {
	rows := readmeURLTable(t)
	if len(rows) < 8 {
		t.Fatalf("README's url table has %d rows; want the examples back", len(rows))
	}
	for _, row := range rows {
		t.Run(row[0]+" via "+row[1], func(t *testing.T) {
			base, err := url.Parse(row[1])
			if err != nil {
				t.Fatal(err)
			}
			in, err := url.ParseRequestURI(row[0])
			if err != nil {
				t.Fatal(err)
			}
			var u url.URL
			targetURL(&u, base, in)
			if got := u.String(); got != row[2] {
				t.Errorf("client calls %s through url %s: upstream gets %s; the README says %s", row[0], row[1], got, row[2])
			}
		})
	}
}

// readmeURLTable returns the first three cells (backquotes removed) of the rows of the
// README table whose header starts with "| client calls |".
func readmeURLTable(t *testing.T) [][3]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows [][3]string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "| client calls |"):
			in = true
		case !in || strings.HasPrefix(line, "|---"):
		case !strings.HasPrefix(line, "|"):
			return rows
		default:
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) < 3 {
				t.Fatalf("README url table row %q: want at least 3 cells", line)
			}
			var row [3]string
			for i := range row {
				row[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// recorder is an upstream that records the requests it receives.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, r)
	rc.body = append(rc.body, string(b))
	rc.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "X-Hop")
	w.Header().Set("X-Hop", "1")
	w.Header().Set("Keep-Alive", "timeout=5")
	w.Header().Set("X-Request-Id", "upstream-id")
	w.Write([]byte(`{"ok":true}`))
}

func (rc *recorder) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		t.Fatal("upstream received nothing")
	}
	return rc.reqs[len(rc.reqs)-1], rc.body[len(rc.body)-1]
}

func TestUpstreamReceives(t *testing.T) {
	var bearer, basic, none recorder
	sb := httptest.NewServer(&bearer)
	defer sb.Close()
	sba := httptest.NewServer(&basic)
	defer sba.Close()
	sn := httptest.NewServer(&none)
	defer sn.Close()
	cfg := `
http_server:
  forwards:
    - name: f
      port: 3999
      default_group: gb
      routing:
        - path: /basic/*
          target_group: gba
        - path: /none/*
          target_group: gn
upstreams:
  - name: b
    url: "{{U0}}/prefix/"
    auth: {type: bearer, token: "${env:TEST_TOKEN}"}
    headers:
      - {op: insert, key: x-insert, value: ins}
      - {op: replace, key: x-replace, value: rep}
      - {op: remove, key: x-remove}
  - name: ba
    url: "{{U1}}"
    auth: {type: basic, username: user, password: pass}
  - name: n
    url: "{{U2}}"
upstream_groups:
  - name: gb
    upstreams: [{name: b}]
    http_client: {agent: "TestAgent/2"}
  - name: gba
    upstreams: [{name: ba}]
  - name: gn
    upstreams: [{name: n}]
`
	p := newTestProxy(t, cfg, sb.URL, sba.URL, sn.URL)

	t.Run("bearer, header ops, hop-by-hop, forwarded", func(t *testing.T) {
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions?x=1&y=%2F", strings.NewReader(`{"model":"m"}`))
		req.Header.Set("Authorization", "Bearer client-key")
		req.Header.Set("X-Insert", "client")
		req.Header.Set("X-Replace", "client")
		req.Header.Set("X-Remove", "client")
		req.Header.Set("Connection", "X-Conn-Named")
		req.Header.Set("X-Conn-Named", "1")
		req.Header.Set("Proxy-Authorization", "Basic xx")
		req.Header.Set("Te", "trailers")
		req.Header.Set("X-Forwarded-For", "10.0.0.1")
		req.Header.Set("X-Request-Id", "my-id-1")
		req.Header.Set("User-Agent", "client-agent")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != `{"ok":true}` {
			t.Errorf("body = %q", got)
		}
		if got := resp.Header.Get("X-Request-Id"); got != "my-id-1" {
			t.Errorf("client X-Request-Id = %q; want my-id-1", got)
		}
		if got := resp.Header.Get("X-Upstream-Request-Id"); got != "upstream-id" {
			t.Errorf("X-Upstream-Request-Id = %q; want upstream-id", got)
		}
		for _, h := range []string{"X-Hop", "Keep-Alive"} {
			if v := resp.Header.Get(h); v != "" {
				t.Errorf("client got hop-by-hop %s: %q", h, v)
			}
		}
		r, body := bearer.last(t)
		if body != `{"model":"m"}` {
			t.Errorf("body = %q", body)
		}
		if got, want := r.URL.RequestURI(), "/prefix/v1/chat/completions?x=1&y=%2F"; got != want {
			t.Errorf("request URI = %q; want %q", got, want)
		}
		want := map[string]string{
			"Authorization":       "Bearer sekrit",
			"X-Insert":            "client",
			"X-Replace":           "rep",
			"X-Remove":            "",
			"X-Conn-Named":        "",
			"Proxy-Authorization": "",
			"Te":                  "",
			"X-Forwarded-For":     "10.0.0.1, 127.0.0.1",
			"X-Forwarded-Proto":   "http",
			"X-Request-Id":        "my-id-1",
			"User-Agent":          "TestAgent/2",
		}
		for k, v := range want {
			if got := r.Header.Get(k); got != v {
				t.Errorf("upstream %s = %q; want %q", k, got, v)
			}
		}
	})
	t.Run("insert when absent, generated request id", func(t *testing.T) {
		resp := post(t, p.URL+"/x", "{}")
		readAll(t, resp)
		r, _ := bearer.last(t)
		if got := r.Header.Get("X-Insert"); got != "ins" {
			t.Errorf("X-Insert = %q; want ins", got)
		}
		id := r.Header.Get("X-Request-Id")
		if len(id) != 32 || resp.Header.Get("X-Request-Id") != id {
			t.Errorf("generated id upstream %q, client %q; want the same 32 hex digits", id, resp.Header.Get("X-Request-Id"))
		}
		if got := r.Header.Get("User-Agent"); got != "TestAgent/2" {
			t.Errorf("User-Agent = %q", got)
		}
	})
	t.Run("basic", func(t *testing.T) {
		readAll(t, post(t, p.URL+"/basic/x", "{}", "Authorization", "Bearer client"))
		r, _ := basic.last(t)
		u, pw, ok := r.BasicAuth()
		if !ok || u != "user" || pw != "pass" {
			t.Errorf("basic auth = %q %q %v", u, pw, ok)
		}
		if got := r.Header.Get("User-Agent"); got != "LLMProxy/1.0" {
			t.Errorf("default agent = %q", got)
		}
	})
	t.Run("none passes the client's Authorization", func(t *testing.T) {
		readAll(t, post(t, p.URL+"/none/x", "{}", "Authorization", "Bearer client"))
		r, _ := none.last(t)
		if got := r.Header.Get("Authorization"); got != "Bearer client" {
			t.Errorf("Authorization = %q; want the client's", got)
		}
	})
}

func TestRemoveHopHeaders(t *testing.T) {
	h := http.Header{
		"Connection":        {"close, X-A", "x-b"},
		"X-A":               {"1"},
		"X-B":               {"1"},
		"Keep-Alive":        {"x"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"websocket"},
		"Proxy-Connection":  {"keep-alive"},
		"Trailer":           {"X"},
		"X-Keep":            {"1"},
	}
	removeHopHeaders(h)
	if len(h) != 1 || h.Get("X-Keep") != "1" {
		t.Errorf("after removeHopHeaders: %v; want only X-Keep", h)
	}
}
