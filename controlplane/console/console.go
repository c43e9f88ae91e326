// Package console serves the operator console: a small web UI that the control plane offers
// under /ui/ on its --http-addr. Every asset is embedded in the binary, so the console works
// offline and its version always matches the API it calls.
//
// The console is static files only. It holds no data and has no endpoints of its own: the
// browser asks the operator for the admin token, keeps it in sessionStorage and calls the
// public REST API under /api/v1/ with "Authorization: Bearer <token>", so everything the
// console shows or does can be scripted with curl or llmproxyctl. Serving the files needs no
// token; the data behind them does.
//
// Stack: plain ES modules, a hand-written DOM helper and SVG charts, no framework and no
// build step. Browsers have loaded ES modules natively since 2018, so the files served are the
// files reviewed; nothing has to be regenerated when a dependency's toolchain moves on, no
// npm tree needs auditing, and the whole console stays in the tens of kilobytes. The cost is
// a little more DOM code per page, which suits an operator tool of five pages.
//
// Every answer carries a Content-Security-Policy that allows scripts, styles and fetches
// only from the control plane itself (no inline script or style, no framing), plus
// X-Content-Type-Options, Referrer-Policy and Cross-Origin-Opener-Policy.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is the path under which the console is served.
const Prefix = "/ui/"

// CSP is the Content-Security-Policy of every console answer: same-origin scripts, styles,
// images and API calls; nothing inline, no plugins, no framing, no foreign form targets.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

//go:embed assets
var assets embed.FS

// file is one embedded asset, ready to serve.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the embedded console. It is safe for concurrent use.
type Handler struct {
	files map[string]file // by path relative to Prefix; "" is index.html
	size  int
}

var _ http.Handler = (*Handler)(nil)

// contentTypes are the types of the asset extensions the console uses; an asset of another
// extension is a mistake the constructor reports.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// New returns the handler of the embedded assets, to be mounted at Prefix.
func New() (*Handler, error) {
	root, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("open console assets: %w", err)
	}
	return newHandler(root)
}

func newHandler(root fs.FS) (*Handler, error) {
	h := &Handler{files: map[string]file{}}
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("asset %s: no content type for %q", p, path.Ext(p))
		}
		body, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		h.files[p] = file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		h.size += len(body)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read console assets: %w", err)
	}
	index, ok := h.files["index.html"]
	if !ok {
		return nil, fmt.Errorf("read console assets: no index.html")
	}
	h.files[""] = index
	return h, nil
}

// Size returns the total size of the embedded assets in bytes.
func (h *Handler) Size() int { return h.size }

// ServeHTTP serves GET and HEAD of the assets under Prefix; Prefix itself is index.html.
// Answers are revalidated with an ETag (the assets change only with the binary).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", CSP)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the console is read-only files; its data comes from /api/v1/", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, ok := h.files[name]
	if !ok {
		http.Error(w, fmt.Sprintf("no console asset %q", name), http.StatusNotFound)
		return
	}
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("ETag", f.etag)
	hdr.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
