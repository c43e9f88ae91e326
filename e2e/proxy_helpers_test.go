package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
	"github.com/llmproxy-go/llmproxy/e2e/mockllm"
)

// mock is one running mockllm.
type mock struct {
	Name string
	Addr string // host:port
	URL  string // http://host:port
	*mockllm.Client
	proc *harness.Process
}

// startMocks starts one mockllm per name (each with --name NAME and the given extra flags)
// and waits until all answer /_mock/health.
func startMocks(t *testing.T, extra map[string][]string, names ...string) map[string]*mock {
	t.Helper()
	bins := harness.Binaries(t)
	out := make(map[string]*mock, len(names))
	for _, n := range names {
		addr := harness.FreeAddr(t)
		args := append([]string{"--addr", addr, "--name", n}, extra[n]...)
		m := &mock{Name: n, Addr: addr, URL: "http://" + addr}
		m.Client = &mockllm.Client{BaseURL: m.URL, HTTP: &http.Client{Timeout: 5 * time.Second}}
		m.proc = harness.Start(t, bins.MockLLM, args)
		out[n] = m
	}
	for _, m := range out {
		harness.WaitHTTP(t, m.URL+"/_mock/health", http.StatusOK, 10*time.Second)
	}
	return out
}

// requests returns what m has received so far.
func (m *mock) requests(t *testing.T) []mockllm.Record {
	t.Helper()
	recs, err := m.Requests(context.Background(), 0)
	if err != nil {
		t.Fatalf("requests of %s: %v", m.Name, err)
	}
	return recs
}

// stats returns m's counters.
func (m *mock) stats(t *testing.T) mockllm.Stats {
	t.Helper()
	s, err := m.Stats(context.Background())
	if err != nil {
		t.Fatalf("stats of %s: %v", m.Name, err)
	}
	return s
}

// proxy is one running llmproxy from a config file.
type proxy struct {
	Admin  string // admin base URL
	Config string // config file path
	proc   *harness.Process
}

// renderConfig executes a text/template YAML with data.
func renderConfig(t *testing.T, tmpl string, data any) string {
	t.Helper()
	tp, err := template.New("config").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		t.Fatalf("parse config template: %v", err)
	}
	var b strings.Builder
	if err := tp.Execute(&b, data); err != nil {
		t.Fatalf("render config: %v", err)
	}
	return b.String()
}

// startProxy writes yaml to a file, starts llmproxy on it with a free admin address and
// waits until /ready answers 200.
func startProxy(t *testing.T, yaml string, env ...string) *proxy {
	t.Helper()
	return startProxyAdmin(t, yaml, harness.FreeAddr(t), env...)
}

// startProxyAdmin is startProxy with the admin address admin (host:port), for a yaml
// whose http_server.admin names the same address.
func startProxyAdmin(t *testing.T, yaml, admin string, env ...string) *proxy {
	t.Helper()
	return startProxyFlags(t, yaml, admin, env)
}

// startProxyFlags is startProxyAdmin with extra flags.
func startProxyFlags(t *testing.T, yaml, admin string, env []string, flags ...string) *proxy {
	t.Helper()
	bins := harness.Binaries(t)
	path := harness.WriteFile(t, "config.yaml", yaml)
	p := &proxy{Admin: "http://" + admin, Config: path}
	args := append([]string{"--config", path, "--admin-addr", admin, "--shutdown-timeout", "10s"}, flags...)
	p.proc = harness.Start(t, bins.Proxy, args, env...)
	waitReady(t, p)
	return p
}

func waitReady(t *testing.T, p *proxy) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if p.proc.Exited() {
			t.Fatalf("llmproxy exited during startup:\n%s", p.proc.Output())
		}
		resp, err := http.Get(p.Admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("llmproxy not ready within 15s:\n%s", p.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// revision returns the revision the proxy's /config reports.
func (p *proxy) revision(t *testing.T) string {
	t.Helper()
	var out struct {
		Revision string `json:"revision"`
	}
	getJSON(t, p.Admin+"/config", &out)
	return out.Revision
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	b := fetch(t, url)
	if err := json.Unmarshal([]byte(b), v); err != nil {
		t.Fatalf("GET %s: decode %s: %v", url, b, err)
	}
}

// fetch GETs url and returns the body of a 200 answer.
func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

// answer is a response read whole.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
	TLS    *tls.ConnectionState // nil over plaintext
}

// Upstream is the mockllm that answered ("" when the proxy answered itself).
func (a answer) Upstream() string { return a.Header.Get("X-Mock-Upstream") }

// proxyError decodes the proxy's OpenAI-style error body.
func (a answer) proxyError(t *testing.T) (message, typ string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.Body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("status %d: body %q is not an OpenAI-style error (%v)", a.Status, a.Body, err)
	}
	if ct := a.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("status %d: Content-Type %q; want application/json", a.Status, ct)
	}
	return e.Error.Message, e.Error.Type
}

var httpClient = &http.Client{Timeout: 20 * time.Second}

// send makes one request; headers alternate name, value.
func send(ctx context.Context, method, url, body string, headers ...string) (answer, error) {
	return sendWith(ctx, httpClient, method, url, body, headers...)
}

// sendWith is send with the given client (one that trusts a test CA, say).
func sendWith(ctx context.Context, client *http.Client, method, url, body string, headers ...string) (answer, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return answer{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b, TLS: resp.TLS}, err
}

// mustSend is send that fails the test on a transport error.
func mustSend(t *testing.T, method, url, body string, headers ...string) answer {
	t.Helper()
	return mustSendWith(t, httpClient, method, url, body, headers...)
}

// mustSendWith is mustSend with the given client.
func mustSendWith(t *testing.T, client *http.Client, method, url, body string, headers ...string) answer {
	t.Helper()
	a, err := sendWith(context.Background(), client, method, url, body, headers...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

// chat is a small chat completion body for model.
func chat(model string) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]}`, model)
}

// countUpstreams sends n requests (conc at a time) and counts the answering upstreams.
func countUpstreams(t *testing.T, n, conc int, method, url, body string, headers ...string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				a, err := send(context.Background(), method, url, body, headers...)
				mu.Lock()
				switch {
				case err != nil:
					counts["error: "+err.Error()]++
				case a.Status != http.StatusOK:
					counts[fmt.Sprintf("status %d from %q: %s", a.Status, a.Upstream(), bytes.TrimSpace(a.Body))]++
				default:
					counts[a.Upstream()]++
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return counts
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
