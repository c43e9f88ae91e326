package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
	"github.com/llmproxy-go/llmproxy/e2e/mockllm"
)

// This file holds the small toolkit of the resilience tests: mockllm processes that can be
// stopped and started again on the same address, a proxy run from a YAML file, requests that
// remember how long they took, and a reader of the proxy's Prometheus exposition.

// resChatPath is the API path every resilience test sends to.
const resChatPath = "/v1/chat/completions"

// resMock is one mockllm process on a fixed loopback address.
type resMock struct {
	t    *testing.T
	name string
	addr string // host:port, kept across restarts
	url  string // http://host:port
	api  *mockllm.Client
	proc *harness.Process
}

// resStartMock starts a mockllm named name on a free port and waits for its health check.
func resStartMock(t *testing.T, name string) *resMock {
	t.Helper()
	addr := harness.FreeAddr(t)
	m := &resMock{t: t, name: name, addr: addr, url: "http://" + addr}
	m.api = &mockllm.Client{BaseURL: m.url, HTTP: &http.Client{Timeout: 5 * time.Second}}
	m.start()
	return m
}

// on returns m for use by test t (a subtest), so that failures are reported on t.
func (m *resMock) on(t *testing.T) *resMock {
	c := *m
	c.t = t
	return &c
}

// start runs the process (again) on m's address and waits until it answers.
func (m *resMock) start() {
	m.t.Helper()
	bin := harness.Binaries(m.t).MockLLM
	m.proc = harness.Start(m.t, bin, []string{"--addr", m.addr, "--name", m.name, "--max-records", "100000"})
	harness.WaitHTTP(m.t, m.url+"/_mock/health", http.StatusOK, 10*time.Second)
}

// stop ends the process; connections to its address are refused from then on.
func (m *resMock) stop() {
	m.t.Helper()
	m.proc.Stop(5 * time.Second)
	if c, err := http.Get(m.url + "/_mock/health"); err == nil {
		c.Body.Close()
		m.t.Fatalf("mockllm %s still answers after stop", m.name)
	}
}

// records returns every request m has recorded since it (re)started.
func (m *resMock) records() []mockllm.Record {
	m.t.Helper()
	recs, err := m.api.Requests(context.Background(), 0)
	if err != nil {
		m.t.Fatalf("requests of mockllm %s: %v", m.name, err)
	}
	return recs
}

// recordsWith returns the recorded requests whose header key has value val.
func (m *resMock) recordsWith(key, val string) []mockllm.Record {
	m.t.Helper()
	var out []mockllm.Record
	for _, r := range m.records() {
		if r.Header.Get(key) == val {
			out = append(out, r)
		}
	}
	return out
}

// countBodies is the number of recorded requests whose body contains substr.
func (m *resMock) countBodies(substr string) int {
	m.t.Helper()
	n := 0
	for _, r := range m.records() {
		if strings.Contains(r.Body, substr) {
			n++
		}
	}
	return n
}

// count is the number of API requests m has received since it (re)started.
func (m *resMock) count() int {
	m.t.Helper()
	return int(m.stats().Requests)
}

// stats returns m's counters.
func (m *resMock) stats() mockllm.Stats {
	m.t.Helper()
	s, err := m.api.Stats(context.Background())
	if err != nil {
		m.t.Fatalf("stats of mockllm %s: %v", m.name, err)
	}
	return s
}

// behave switches m's server-wide behaviour (raw JSON, see mockllm's doc); "" resets it.
func (m *resMock) behave(raw string) {
	m.t.Helper()
	var err error
	if raw == "" {
		err = m.api.ResetBehaviour(context.Background())
	} else {
		err = m.api.SetBehaviour(context.Background(), raw)
	}
	if err != nil {
		m.t.Fatalf("set behaviour of mockllm %s to %q: %v", m.name, raw, err)
	}
}

// resProxy is one llmproxy run from a static YAML file.
type resProxy struct {
	t     *testing.T
	admin string // admin base URL
	proc  *harness.Process
}

// resStartProxy renders tmpl with data, starts llmproxy on it (with env added to the
// test's environment) and waits for /ready.
func resStartProxy(t *testing.T, tmpl string, data any, env ...string) *resProxy {
	t.Helper()
	tp, err := template.New("config").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		t.Fatalf("parse config template: %v", err)
	}
	var b strings.Builder
	if err := tp.Execute(&b, data); err != nil {
		t.Fatalf("render config: %v", err)
	}
	path := harness.WriteFile(t, "llmproxy.yaml", b.String())
	admin := harness.FreeAddr(t)
	p := &resProxy{t: t, admin: "http://" + admin}
	p.proc = harness.Start(t, harness.Binaries(t).Proxy, []string{"--config", path, "--admin-addr", admin}, env...)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if p.proc.Exited() {
			t.Fatalf("llmproxy exited before it was ready; config:\n%s\noutput:\n%s", b.String(), p.proc.Output())
		}
		resp, err := resScrapeClient.Get(p.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("llmproxy not ready within 15s; config:\n%s", b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resAnswer is one client request's outcome, read whole.
type resAnswer struct {
	Status  int
	Header  http.Header
	Body    []byte
	Elapsed time.Duration // from sending to the end of the body
	Err     error         // transport or body read error
}

// Upstream names the mockllm that answered ("" when the proxy answered by itself).
func (a resAnswer) Upstream() string { return a.Header.Get("X-Mock-Upstream") }

func (a resAnswer) String() string {
	if a.Err != nil && a.Status == 0 {
		return fmt.Sprintf("error %v after %s", a.Err, a.Elapsed.Round(time.Millisecond))
	}
	return fmt.Sprintf("%d from %q after %s: %s", a.Status, a.Upstream(), a.Elapsed.Round(time.Millisecond), bytes.TrimSpace(a.Body))
}

// resClient sends the tests' client traffic; keep-alive like a real application.
var resClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64},
}

// resScrapeClient reads admin endpoints without keeping connections (and their server
// goroutines) open between scrapes.
var resScrapeClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// resSend POSTs body to url with headers (alternating name, value) and reads the answer.
func resSend(ctx context.Context, c *http.Client, url, body string, headers ...string) resAnswer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return resAnswer{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return resDo(c, req)
}

// resDo sends req with c and reads the answer whole, timing both.
func resDo(c *http.Client, req *http.Request) resAnswer {
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return resAnswer{Err: err, Elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resAnswer{Status: resp.StatusCode, Header: resp.Header, Body: b, Elapsed: time.Since(start), Err: err}
}

// resChat is a chat completion request body; content makes it recognisable.
func resChat(content string, stream bool) string {
	return fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%t,"messages":[{"role":"user","content":%q}]}`, stream, content)
}

// resCheckProxyError asserts that a is an error made by the proxy with status want, in the
// OpenAI shape {"error":{"message","type",…}}, and returns its message.
func resCheckProxyError(t *testing.T, a resAnswer, want int) string {
	t.Helper()
	if a.Status != want {
		t.Errorf("got %s; want status %d from the proxy", a, want)
		return ""
	}
	if a.Upstream() != "" {
		t.Errorf("got %s; want an answer made by the proxy, not by upstream %q", a, a.Upstream())
	}
	var e struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.Body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("status %d body %q is not an OpenAI-style error {\"error\":{\"message\",\"type\",…}} (%v)", a.Status, a.Body, err)
		return ""
	}
	if ct := a.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("status %d: Content-Type %q; want application/json", a.Status, ct)
	}
	return e.Error.Message
}

// resSample is one line of a Prometheus text exposition.
type resSample struct {
	name   string
	labels map[string]string
	value  float64
}

// resMetrics is a scrape of the proxy's admin /metrics.
type resMetrics []resSample

// on returns p for use by test t (a subtest), so that failures are reported on t.
func (p *resProxy) on(t *testing.T) *resProxy {
	c := *p
	c.t = t
	return &c
}

// metrics scrapes the proxy's /metrics and fails the test when it cannot.
func (p *resProxy) metrics() resMetrics {
	p.t.Helper()
	ms, err := p.tryMetrics()
	if err != nil {
		p.t.Fatal(err)
	}
	return ms
}

// tryMetrics scrapes the proxy's /metrics; any goroutine may call it.
func (p *resProxy) tryMetrics() (resMetrics, error) {
	resp, err := resScrapeClient.Get(p.admin + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape /metrics: %s", resp.Status)
	}
	ms, err := resParseMetrics(string(b))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return ms, nil
}

// resParseMetrics reads the sample lines of a text exposition (comments skipped).
func resParseMetrics(text string) (resMetrics, error) {
	var out resMetrics
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s := resSample{labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			return nil, fmt.Errorf("no value in %q", line)
		}
		s.name, line = line[:i], line[i:]
		if line[0] == '{' {
			rest, err := resParseLabels(line[1:], s.labels)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			line = rest
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			return nil, fmt.Errorf("%s: no value", s.name)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %q: %w", s.name, fields[0], err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, nil
}

// resParseLabels reads `k="v",…}` into into and returns what follows the closing brace.
func resParseLabels(s string, into map[string]string) (string, error) {
	for {
		s = strings.TrimLeft(s, ", ")
		if s == "" {
			return "", fmt.Errorf("unterminated labels")
		}
		if s[0] == '}' {
			return s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return "", fmt.Errorf("bad label in %q", s)
		}
		key := s[:eq]
		s = s[eq+2:]
		var val strings.Builder
		for {
			if s == "" {
				return "", fmt.Errorf("unterminated value of %s", key)
			}
			c := s[0]
			s = s[1:]
			if c == '"' {
				break
			}
			if c == '\\' && s != "" {
				switch s[0] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[0])
				}
				s = s[1:]
				continue
			}
			val.WriteByte(c)
		}
		into[key] = val.String()
	}
}

// sum adds the samples of name whose labels include every given pair (alternating
// name, value); found reports whether any sample matched.
func (ms resMetrics) sum(name string, labels ...string) (total float64, found bool) {
next:
	for _, s := range ms {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		total += s.value
		found = true
	}
	return total, found
}

// has reports whether any sample of the metric family name exists.
func (ms resMetrics) has(name string) bool {
	for _, s := range ms {
		if s.name == name {
			return true
		}
	}
	return false
}

// dump lists the samples of name, for failure messages.
func (ms resMetrics) dump(name string) string {
	var b strings.Builder
	for _, s := range ms {
		if s.name == name {
			fmt.Fprintf(&b, "  %s%v %g\n", s.name, s.labels, s.value)
		}
	}
	if b.Len() == 0 {
		return "  (no samples of " + name + ")\n"
	}
	return b.String()
}

// resWait polls cond every 20 ms until it holds or timeout passes; it reports whether it held.
// Unlike harness.Eventually it lets the caller word the failure with the last observation.
func resWait(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
