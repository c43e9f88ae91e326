package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// AdminHandler returns the admin endpoints: /health, /ready, /metrics and /config.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.draining.Load():
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
		case s.opts.Holder.Load() == nil:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "no config applied"})
		default:
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "revision": revisionOf(s.opts.Holder.Load())})
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /config", s.serveConfig)
	return mux
}

// serveConfig answers {"revision":…,"config":{…}} with the applied config in proto field
// names, secrets redacted; 503 before the first config. A static config whose values came
// from LLMPROXY_ variables adds "env_overrides": [{"variable","path","value"}], the values
// read from the redacted config. What the proxy serves differently from the config (a cache
// backend it lacks, see config.Warning) is listed in "warnings": [{"path","message"}].
func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	rt := s.opts.Holder.Load()
	if rt == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "no config applied"})
		return
	}
	red := redact.Config(sourceOf(rt))
	var raw json.RawMessage = []byte("{}")
	if red != nil {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(red)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		raw = b
	}
	type override struct {
		configfile.Override
		Value string `json:"value"`
	}
	var overrides []override
	for _, o := range rt.EnvOverrides {
		v, _ := configfile.ValueAt(red, o.Path)
		overrides = append(overrides, override{o, v})
	}
	writeJSON(w, http.StatusOK, struct {
		Revision     string           `json:"revision"`
		Config       json.RawMessage  `json:"config"`
		EnvOverrides []override       `json:"env_overrides,omitempty"`
		Warnings     []config.Warning `json:"warnings,omitempty"`
	}{revisionOf(rt), raw, overrides, rt.Warnings})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "<redacted>" reads as such
	_ = enc.Encode(v)
}

// DefaultAdminHeaderTimeout is the admin listener's time to receive a request's headers
// when StartAdmin is given none (http_server.admin.timeout.connect's default).
const DefaultAdminHeaderTimeout = 10 * time.Second

// StartAdmin opens the admin listener on addr (SO_REUSEPORT, like the forwards) and serves
// AdminHandler on it until Shutdown, giving a request headerTimeout to send its headers
// (0: DefaultAdminHeaderTimeout). It returns the bound address. It may be called once.
func (s *Server) StartAdmin(addr string, headerTimeout time.Duration) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	if s.admin != nil {
		return "", errors.New("start admin: already started")
	}
	for name, l := range s.live {
		if sameSocket(l.spec.addr, addr) {
			return "", fmt.Errorf("open admin listener on %s: forward %q listens there", addr, name)
		}
	}
	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("open admin listener on %s: %w", addr, err)
	}
	s.admin = &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: cmp.Or(headerTimeout, DefaultAdminHeaderTimeout),
		IdleTimeout:       defaultIdleTimeout,
	}
	s.adminAddr = ln.Addr().String()
	srv := s.admin
	// Not in s.wg: Shutdown waits for the forwards first and closes the admin server last.
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", "addr", addr, "err", err)
		}
	}()
	s.log.Info("admin listening", "addr", ln.Addr().String())
	if tlsconfig.Exposed(addr) {
		s.log.Warn("admin listener on a non-loopback address, plaintext and without authentication: /config shows the whole configuration (secrets redacted); bind it to 127.0.0.1 or firewall it",
			"addr", ln.Addr().String())
	}
	return ln.Addr().String(), nil
}
