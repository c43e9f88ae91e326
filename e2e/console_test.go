package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end test of the operator console (/ui/): a real control plane, two proxies and
// mockllm, driven through headless Chromium the way an operator would use it.

// consoleShots is where TestConsole writes a screenshot of every page, relative to the e2e
// package (ignored by git). The test prints the absolute path.
const consoleShots = "testdata/console-screenshots"

const consoleToken = "console-e2e-admin-token"

// consoleWait bounds every browser step.
const consoleWait = 20 * time.Second

// consoleUpstreamA is up-a's URL in xdsBootstrap: each proxy resolves it from its own
// environment, so p1 and p2 reach different mockllm instances under one upstream name (one
// can fail while the other works).
const consoleUpstreamA = "${env:CONSOLE_E2E_A_URL}"

// consoleChromium returns the browser to drive, skipping the test when none is installed.
func consoleChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("console e2e needs a headless Chromium and none is on PATH (Debian: apt-get install -y chromium; .ci/run installs it)")
	return ""
}

// browser is one headless Chromium tab on the console.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
	n     int // failure screenshots taken

	mu   sync.Mutex
	errs []string // uncaught exceptions and console.error calls of the page
}

func startBrowser(t *testing.T, exe, shots string) *browser {
	t.Helper()
	b := &browser{t: t, shots: shots}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first call starts the browser; the tab lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	b.ctx = ctx
	return b
}

// listen records the page's script errors; it runs on chromedp's reader goroutine.
func (b *browser) listen(ev any) {
	var msg string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "uncaught: " + e.ExceptionDetails.Text
		if x := e.ExceptionDetails.Exception; x != nil {
			msg += " " + x.Description
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		msg = "console.error:"
		for _, a := range e.Args {
			msg += fmt.Sprintf(" %s%s", a.Value, a.Description)
		}
	default:
		return
	}
	b.mu.Lock()
	b.errs = append(b.errs, msg)
	b.mu.Unlock()
}

// scriptErrors fails the test when the page has thrown or logged an error.
func (b *browser) scriptErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) > 0 {
		b.t.Fatalf("the console's scripts failed:\n%s", strings.Join(b.errs, "\n"))
	}
}

// do runs browser steps, failing the test (with a screenshot) when one fails.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, consoleWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail("%s: %v", what, err)
	}
	b.scriptErrors()
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, consoleWait)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// waitFor waits until the JavaScript expression cond is true, as a user would wait for the
// page to show something.
func (b *browser) waitFor(what, cond string) {
	b.t.Helper()
	deadline := time.Now().Add(consoleWait)
	var lastErr error
	for {
		ok, err := eval[bool](b, "Boolean("+cond+")")
		if err == nil && ok {
			b.scriptErrors()
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			b.fail("timed out after %s waiting for %s (last error: %v)", consoleWait, what, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// choose selects value in the <select> sel and tells the page, as a user's pick would.
func (b *browser) choose(sel, value string) {
	b.t.Helper()
	_, err := eval[bool](b, fmt.Sprintf(`(() => { const s = document.querySelector(%s); s.value = %s; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value === %[2]s; })()`, jsString(sel), jsString(value)))
	if err != nil {
		b.fail("choose %s in %s: %v", value, sel, err)
	}
}

// shot saves a screenshot of the whole page as name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, consoleWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// fail ends the test with what the page shows and a screenshot.
func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	b.n++
	name := fmt.Sprintf("failed-%d", b.n)
	b.shot(name)
	text, _ := eval[string](b, `document.body.innerText.slice(0, 3000)`)
	b.t.Fatalf(format+"\nscreenshot %s.png; the page shows:\n%s", append(args, filepath.Join(b.shots, name), text)...)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// consoleScreenshotDir empties and returns the screenshot folder.
func consoleScreenshotDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(consoleShots)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	return dir
}

// TestConsole drives the console in headless Chromium against a control plane with an
// admin token, two proxies and mockllm: log in (a wrong token is refused), see both proxies
// ACK the bootstrap revision, repoint a route with the diff preview and see the new
// revision reach both proxies, roll it back from History, see the upstream turn degraded
// when it fails behind one proxy, and see usage charted. Every page is saved as a
// screenshot under testdata/console-screenshots.
func TestConsole(t *testing.T) {
	exe := consoleChromium(t)
	shots := consoleScreenshotDir(t)
	t.Logf("console screenshots: %s", shots)

	mocks := startMocks(t, nil, "a1", "a2", "b")
	port := harness.FreePort(t)
	forward := fmt.Sprintf("http://127.0.0.1:%d", port)
	boot := harness.WriteFile(t, "bootstrap.yaml", renderConfig(t, xdsBootstrap, map[string]any{"Port": port, "A": consoleUpstreamA, "B": mocks["b"].URL}))
	cp := startControlPlane(t, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), consoleToken, "--bootstrap", boot)
	interval := []string{"--report-interval", fleetReportInterval.String()}
	xdsToken := "LLMPROXY_XDS_AUTH_TOKEN=" + consoleToken
	p1 := xdsStartProxyWith(t, cp.grpcAddr, "p1", t.TempDir(), []string{"CONSOLE_E2E_A_URL=" + mocks["a1"].URL, xdsToken}, interval...)
	p2 := xdsStartProxyWith(t, cp.grpcAddr, "p2", t.TempDir(), []string{"CONSOLE_E2E_A_URL=" + mocks["a2"].URL, xdsToken}, interval...)

	// The assets need no token; the data does.
	if a := cp.rest(t, http.MethodGet, "/ui/", "", false); a.code != http.StatusOK || !strings.Contains(a.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("GET /ui/ without a token: %d, CSP %q; want 200 with the console's CSP", a.code, a.header.Get("Content-Security-Policy"))
	}
	if a := cp.rest(t, http.MethodGet, "/api/v1/proxies", "", false); a.code != http.StatusUnauthorized {
		t.Fatalf("GET /api/v1/proxies without a token: %d; want 401", a.code)
	}

	b := startBrowser(t, exe, shots)
	base := "http://" + cp.httpAddr

	// Log in: a wrong token is refused, the right one opens the Fleet page and stays in this
	// tab's session storage only.
	b.do("open the console", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	b.shot("login")
	b.do("log in with a wrong token", chromedp.SendKeys(chromedp.ID("token"), "not-the-token"), chromedp.Click(chromedp.ID("login-button")))
	b.waitFor("the wrong token refused", `document.querySelector('.login-status').textContent.includes('refused this token')`)
	b.do("log in", chromedp.Clear(chromedp.ID("token")), chromedp.SendKeys(chromedp.ID("token"), consoleToken), chromedp.Click(chromedp.ID("login-button")))
	b.waitFor("the Fleet page", `document.querySelector('main.page-fleet')`)
	b.waitFor("the token in session storage only", fmt.Sprintf(`sessionStorage.getItem('llmproxy-console-token') === %s && localStorage.length === 0 && !location.href.includes(%[1]s)`, jsString(consoleToken)))

	// Fleet: both proxies ACK revision 1 and report.
	fleetAt := func(rev int) string {
		return fmt.Sprintf(`['p1', 'p2'].every((n) => { const r = document.querySelector('tr[data-node="' + n + '"]');
			return r && r.dataset.acked === '%d' && r.querySelector('.rollout').textContent === 'ACK' && r.querySelector('.health').textContent.startsWith('ok'); })`, rev)
	}
	b.waitFor("p1 and p2 ACK revision 1 and report ok", fleetAt(1))
	b.shot("fleet")

	// Config: repoint the chat route from ga to gb; the preview shows the diff the API
	// computed; applying it waits for both proxies.
	const routeRow = `tr[data-name="/v1/chat/completions"]`
	b.do("open Config, Routes", chromedp.Click(chromedp.CSS(`header nav a[href="#/config"]`)), chromedp.Click(chromedp.CSS(`nav.tabs a[data-tab="routes"]`)))
	b.waitFor("the chat route targeting ga", `document.querySelector('`+routeRow+` .target').textContent === 'ga'`)
	b.shot("config")
	b.do("edit the chat route", chromedp.Click(chromedp.CSS(routeRow+` button.edit`)), chromedp.WaitVisible(chromedp.CSS(`dialog #f-target_group`)))
	b.choose(`dialog #f-target_group`, "gb")
	b.do("preview the change", chromedp.Click(chromedp.CSS(`dialog button.preview`)))
	diffShows := func(scope, from, to string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('%s tr[data-path]')].some((r) => r.dataset.path === 'routing["/v1/chat/completions"].target_group'
			&& r.querySelector('.old').textContent === %s && r.querySelector('.new').textContent === %s)`, scope, jsString(from), jsString(to))
	}
	b.waitFor("the diff ga → gb", diffShows("dialog", "ga", "gb"))
	b.shot("config-diff")
	b.do("apply the change", chromedp.SendKeys(chromedp.CSS(`dialog input[name="message"]`), "chat to gb from the console"), chromedp.Click(chromedp.CSS(`dialog button.commit`)))
	b.waitFor("revision 2 applied on both proxies", `document.querySelector('dialog .dialog-status').textContent.includes('applied on 2 of 2 proxies')`)
	b.shot("config-applied")
	xdsWaitRevision(t, 2, p1, p2)
	if got := xdsUpstreamOf(t, forward); got != "b" {
		t.Fatalf("after the console's change the chat route answered from %q; want b", got)
	}
	b.do("close the dialog", chromedp.Click(chromedp.CSS(`dialog button.close`)))
	b.waitFor("the route table showing gb", `!document.querySelector('dialog') && document.querySelector('`+routeRow+` .target').textContent === 'gb'`)

	b.do("open Fleet", chromedp.Click(chromedp.CSS(`header nav a[href="#/fleet"]`)))
	b.waitFor("p1 and p2 ACK revision 2", fleetAt(2))

	// History: revision 2 shows its diff; rolling back to revision 1 is previewed, confirmed,
	// and reaches both proxies as revision 3.
	b.do("open History", chromedp.Click(chromedp.CSS(`header nav a[href="#/history"]`)))
	b.waitFor("revision 2 listed with its message", `document.querySelector('tr[data-revision="2"]').textContent.includes('chat to gb from the console')`)
	b.do("show revision 2", chromedp.Click(chromedp.CSS(`tr[data-revision="2"] td:nth-child(3)`)))
	b.waitFor("revision 2's diff", diffShows(`tr[data-detail="2"]`, "ga", "gb"))
	b.shot("history")
	b.do("roll back to revision 1", chromedp.Click(chromedp.CSS(`tr[data-revision="1"] button.rollback`)))
	b.waitFor("the rollback's diff gb → ga", diffShows("dialog", "gb", "ga"))
	b.shot("history-rollback")
	b.do("confirm the rollback", chromedp.Click(chromedp.CSS(`dialog button.commit`)))
	b.waitFor("revision 3 applied on both proxies", `document.querySelector('dialog .dialog-status').textContent.includes('applied on 2 of 2 proxies')`)
	xdsWaitRevision(t, 3, p1, p2)
	if got := xdsUpstreamOf(t, forward); got != "a1" && got != "a2" {
		t.Fatalf("after the rollback the chat route answered from %q; want a1 or a2 (up-a)", got)
	}
	b.do("close the dialog", chromedp.Click(chromedp.CSS(`dialog button.close`)))
	b.waitFor("revision 3 current", `document.querySelector('tr[data-revision="3"]').textContent.includes('current')`)

	// Upstreams: up-a fails behind p1 only; once p1's breaker opens, the page shows the fleet
	// verdict degraded, open on p1, closed on p2.
	b.do("open Upstreams", chromedp.Click(chromedp.CSS(`header nav a[href="#/upstreams"]`)))
	b.waitFor("up-a healthy", `document.querySelector('section[data-upstream="up-a"]').dataset.verdict === 'healthy'`)
	const model = "console-e2e-model"
	for range 10 {
		if s := fleetSend(t, forward, model); s != http.StatusOK {
			t.Fatalf("healthy fleet answered %d", s)
		}
	}
	if err := mocks["a1"].SetBehaviour(context.Background(), `{"status":503}`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, _ := scrape(t, p1).sum("llmproxy_circuitbreaker_state", "upstream", "up-a")
		if v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("p1's breaker on up-a did not open")
		}
		fleetSend(t, forward, model)
	}
	b.waitFor("up-a degraded: open on p1, closed on p2", `(() => { const s = document.querySelector('section[data-upstream="up-a"]');
		return s.dataset.verdict === 'degraded' && s.querySelector('tr[data-node="p1"]').dataset.breaker === 'open'
			&& s.querySelector('tr[data-node="p2"]').dataset.breaker === 'closed'; })()`)
	b.waitFor("up-a's sparklines", `document.querySelectorAll('section[data-upstream="up-a"] svg.spark').length === 3`)
	b.shot("upstreams")

	// Usage: the model's requests, charted.
	b.do("open Usage", chromedp.Click(chromedp.CSS(`header nav a[href="#/usage"]`)))
	b.waitFor("the model's usage charted", fmt.Sprintf(`document.querySelector('tr[data-name=%s]') && document.querySelectorAll('svg.chart polyline.series').length >= 2 && document.querySelectorAll('svg.chart rect.bar').length >= 1`, jsString(model)))
	b.shot("usage")

	// Log out: back to the login form, the token gone.
	b.do("log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	b.waitFor("the token forgotten", `sessionStorage.getItem('llmproxy-console-token') === null`)
	b.scriptErrors()
}
