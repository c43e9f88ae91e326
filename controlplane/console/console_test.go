package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func newTest(t *testing.T) *Handler {
	t.Helper()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func serve(h http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestServesAssetsWithSecurityHeaders(t *testing.T) {
	h := newTest(t)
	for _, tc := range []struct {
		target, contentType, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="js/main.js"></script>`},
		{"/ui/index.html", "text/html; charset=utf-8", `<link rel="stylesheet" href="app.css">`},
		{"/ui/js/main.js", "text/javascript; charset=utf-8", "import"},
		{"/ui/app.css", "text/css; charset=utf-8", ":root"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			w := serve(h, http.MethodGet, tc.target)
			if w.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", tc.target, w.Code, w.Body)
			}
			if got := w.Header().Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q; want %q", got, tc.contentType)
			}
			if !strings.Contains(w.Body.String(), tc.contains) {
				t.Errorf("body does not contain %q", tc.contains)
			}
			for k, want := range map[string]string{
				"Content-Security-Policy": CSP,
				"X-Content-Type-Options":  "nosniff",
				"X-Frame-Options":         "DENY",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           "no-cache",
			} {
				if got := w.Header().Get(k); got != want {
					t.Errorf("%s: %q; want %q", k, got, want)
				}
			}
			if w.Header().Get("ETag") == "" {
				t.Error("no ETag")
			}
		})
	}
}

func TestCSPAllowsNothingInlineOrForeign(t *testing.T) {
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(CSP, want) {
			t.Errorf("CSP %q lacks %q", CSP, want)
		}
	}
	if strings.Contains(CSP, "unsafe") || strings.Contains(CSP, "http") {
		t.Errorf("CSP %q allows inline code or a foreign origin", CSP)
	}
}

func TestRevalidatesWithETag(t *testing.T) {
	h := newTest(t)
	first := serve(h, http.MethodGet, "/ui/js/main.js")
	etag := first.Header().Get("ETag")
	w := serve(h, http.MethodGet, "/ui/js/main.js", "If-None-Match", etag)
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Fatalf("If-None-Match %s: %d with %d bytes; want 304 and no body", etag, w.Code, w.Body.Len())
	}
	if other := serve(h, http.MethodGet, "/ui/app.css").Header().Get("ETag"); other == etag {
		t.Errorf("two assets share the ETag %s", etag)
	}
}

func TestRefusesWritesAndUnknownPaths(t *testing.T) {
	h := newTest(t)
	if w := serve(h, http.MethodPost, "/ui/"); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui/: %d, Allow %q; want 405, GET, HEAD", w.Code, w.Header().Get("Allow"))
	}
	for _, target := range []string{"/ui/nope.js", "/ui/js/", "/ui/../go.mod", "/api/v1/config"} {
		w := serve(h, http.MethodGet, target)
		if w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d; want 404", target, w.Code)
		}
		if w.Header().Get("Content-Security-Policy") != CSP {
			t.Errorf("GET %s: no CSP on the error", target)
		}
	}
	if w := serve(h, http.MethodHead, "/ui/"); w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Errorf("HEAD /ui/: %d with %d bytes", w.Code, w.Body.Len())
	}
}

func TestRefusesAssetOfUnknownType(t *testing.T) {
	_, err := newHandler(fstest.MapFS{"index.html": {Data: []byte("x")}, "notes.txt": {Data: []byte("x")}})
	if err == nil || !strings.Contains(err.Error(), "notes.txt") {
		t.Fatalf("got %v; want an error naming notes.txt", err)
	}
	if _, err := newHandler(fstest.MapFS{"app.js": {Data: []byte("x")}}); err == nil {
		t.Fatal("assets without index.html accepted")
	}
}

// The CSP forbids inline script and style; the assets must not depend on them, must load
// nothing from elsewhere, and must put API text into the page as text, never as HTML.
func TestAssetsKeepTheCSPAndLoadNothingForeign(t *testing.T) {
	root, err := fs.Sub(assets, "assets")
	if err != nil {
		t.Fatal(err)
	}
	forbidden := map[string]*regexp.Regexp{
		".html": regexp.MustCompile(`<script>|<script(?:\s[^>]*)?>[^<]|<style|\sstyle=|\son[a-z]+=|(?:src|href)="(?:https?:)?//`),
		".js":   regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\s*'style'|\blocalStorage\b|(?:from\s+|import\(\s*|fetch\(\s*)'(?:https?:)?//`),
		".css":  regexp.MustCompile(`@import|url\(\s*['"]?https?:`),
	}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		re := forbidden[path.Ext(p)]
		if re == nil {
			return nil
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllString(string(b), -1) {
			t.Errorf("%s: %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every module import names an embedded file, so no page fails to load for a typo.
func TestModuleImportsResolve(t *testing.T) {
	h := newTest(t)
	importRE := regexp.MustCompile(`(?m)^import\s[^;]*?from\s+'([^']+)';`)
	n := 0
	for name, f := range h.files {
		if path.Ext(name) != ".js" {
			continue
		}
		for _, m := range importRE.FindAllStringSubmatch(string(f.body), -1) {
			n++
			spec := m[1]
			if !strings.HasPrefix(spec, "./") && !strings.HasPrefix(spec, "../") {
				t.Errorf("%s imports %q: only relative imports of embedded files", name, spec)
				continue
			}
			target := path.Join(path.Dir(name), spec)
			if _, ok := h.files[target]; !ok {
				t.Errorf("%s imports %q: no embedded %s", name, spec, target)
			}
		}
	}
	if n == 0 {
		t.Fatal("no import found: the pattern no longer matches the modules")
	}
}

// The console is meant to stay small; the budget is generous, a bloat alarm, not a target.
func TestAssetsStaySmall(t *testing.T) {
	const budget = 160 << 10
	if size := newTest(t).Size(); size > budget {
		t.Errorf("console assets are %d bytes; the budget is %d", size, budget)
	} else {
		t.Logf("console assets: %d bytes", size)
	}
}
