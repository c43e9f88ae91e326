package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// Defaults for Options.
const (
	DefaultDrainTimeout = 30 * time.Second
	DefaultMoveGrace    = 5 * time.Second
	defaultIdleTimeout  = 90 * time.Second
)

// ErrClosed is returned by Apply and StartAdmin once Shutdown has begun.
var ErrClosed = errors.New("server is shut down")

// Options configure a Server.
type Options struct {
	// Holder receives every applied runtime; the admin endpoints read it. Required.
	Holder *config.Holder
	// Handler returns the handler serving a forward's listener. It is called once per opened
	// listener; the handler must read the current runtime from the holder on every request.
	// Required.
	Handler func(forward string) http.Handler
	// Metrics is served at /metrics on the admin listener. Nil: an empty registry.
	Metrics prometheus.Gatherer
	// Logger receives listener events. Nil: slog.Default().
	Logger *slog.Logger
	// DrainTimeout bounds how long a removed or moved forward's in-flight requests may run
	// after its listener stops accepting; then its connections are closed. Zero:
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	// MoveGrace is how long the old listener of a moved forward keeps accepting after the new
	// one opened, so clients and load balancers can follow the move. Zero: DefaultMoveGrace;
	// negative: the old listener stops accepting at once.
	MoveGrace time.Duration
}

// Server runs one listener per forward and the admin listener. Apply, Shutdown and the
// accessors may be called from any goroutine.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	live      map[string]*listener // forward name → serving listener
	lingering map[*listener]bool   // moved-away listeners still accepting during MoveGrace
	admin     *http.Server
	adminAddr string // the admin listener's bound address, once started
	closed    bool

	draining atomic.Bool    // Shutdown has begun: /ready answers 503
	wg       sync.WaitGroup // background drains and Serve loops
}

// listener is one forward's socket and HTTP server.
type listener struct {
	spec    forwardSpec
	ln      net.Listener
	srv     *http.Server
	stopped chan struct{} // closed when Serve has returned
	timer   *time.Timer   // the MoveGrace timer while lingering
}

// forwardSpec is what the server needs to know of a forward to serve it.
type forwardSpec struct {
	name          string
	addr          string        // host:port to bind
	headerTimeout time.Duration // http.Server.ReadHeaderTimeout
	// tls is the certificate served; nil: plaintext. Two specs naming the same files are the
	// same listener (see same): the pair rereads changed files by itself.
	tls *tlsconfig.Pair
}

// same reports whether a listener opened for a can serve b unchanged.
func (a forwardSpec) same(b forwardSpec) bool {
	ac, ak := tlsFiles(a.tls)
	bc, bk := tlsFiles(b.tls)
	return a.name == b.name && a.addr == b.addr && a.headerTimeout == b.headerTimeout && ac == bc && ak == bk
}

func tlsFiles(p *tlsconfig.Pair) (cert, key string) {
	if p == nil {
		return "", ""
	}
	return p.Files()
}

// New returns a Server with no listeners. It panics when a required option is missing.
func New(opts Options) *Server {
	if opts.Holder == nil || opts.Handler == nil {
		panic("server.New: Holder and Handler are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = prometheus.NewRegistry()
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.MoveGrace == 0 {
		opts.MoveGrace = DefaultMoveGrace
	}
	return &Server{
		opts:      opts,
		log:       opts.Logger,
		live:      map[string]*listener{},
		lingering: map[*listener]bool{},
	}
}

// Apply makes rt the running config: it opens the listeners rt needs that are not open yet,
// stores rt in the holder, then retires the listeners rt no longer has. When a listener
// cannot be opened nothing changes: the listeners opened so far are closed, the holder keeps
// the previous runtime and the error names the forward and address.
func (s *Server) Apply(rt *config.Runtime) error {
	if rt == nil {
		return errors.New("apply config: nil runtime")
	}
	return s.apply(specsOf(rt), func() { s.opts.Holder.Store(rt) })
}

// apply is Apply on plain specs; commit stores the runtime once every listener is open.
func (s *Server) apply(specs []forwardSpec, commit func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := checkSpecs(specs, s.adminAddr); err != nil {
		return err
	}

	// Open first: any failure leaves the running state as it was.
	var opened []*listener
	for _, sp := range specs {
		if cur := s.live[sp.name]; cur != nil && cur.spec.same(sp) {
			continue
		}
		l, err := s.open(sp)
		if err != nil {
			for _, o := range opened {
				o.ln.Close()
			}
			return err
		}
		opened = append(opened, l)
	}

	commit()

	wanted := make(map[string]bool, len(specs))
	for _, sp := range specs {
		wanted[sp.name] = true
	}
	newAddrs := map[string]bool{}
	for _, l := range opened {
		newAddrs[l.spec.addr] = true
	}
	// Lingering listeners of earlier moves must not share an address with a new listener,
	// or the kernel would split its connections between two forwards.
	for l := range s.lingering {
		if conflicts(l.spec.addr, newAddrs) {
			l.timer.Stop()
			delete(s.lingering, l)
			s.drain(l, "address reused")
		}
	}
	for _, l := range opened {
		old := s.live[l.spec.name]
		s.live[l.spec.name] = l
		s.serve(l)
		if old == nil {
			s.log.Info("forward listening", "forward", l.spec.name, "addr", l.ln.Addr().String())
			continue
		}
		s.log.Info("forward moved", "forward", l.spec.name, "from", old.spec.addr, "to", l.spec.addr)
		// The old listener keeps accepting for MoveGrace unless its port is taken over by a
		// new listener (the same forward re-timed, or another forward moving in).
		if s.opts.MoveGrace < 0 || conflicts(old.spec.addr, newAddrs) {
			s.drain(old, "replaced")
			continue
		}
		s.linger(old)
	}
	for name, l := range s.live {
		if !wanted[name] {
			delete(s.live, name)
			s.drain(l, "removed")
		}
	}
	return nil
}

// checkSpecs refuses forwards that would share a socket address with each other or with
// the admin listener (admin, its bound address; empty before it starts): with SO_REUSEPORT
// the kernel would otherwise split one port's connections between them.
func checkSpecs(specs []forwardSpec, admin string) error {
	var errs []error
	for i, a := range specs {
		if admin != "" && sameSocket(a.addr, admin) {
			errs = append(errs, fmt.Errorf("forward %q listens on %s, the admin listener's address (--admin-addr or http_server.admin)", a.name, a.addr))
		}
		for _, b := range specs[:i] {
			if sameSocket(a.addr, b.addr) {
				errs = append(errs, fmt.Errorf("forwards %q and %q both listen on %s", b.name, a.name, a.addr))
			}
		}
	}
	return errors.Join(errs...)
}

// sameSocket reports whether two listen addresses would take the same port: equal hosts,
// or one of them a wildcard.
func sameSocket(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	if pa != pb {
		return false
	}
	return ha == hb || isWildcard(ha) || isWildcard(hb)
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// conflicts reports whether addr takes the same port as one of addrs.
func conflicts(addr string, addrs map[string]bool) bool {
	for a := range addrs {
		if sameSocket(addr, a) {
			return true
		}
	}
	return false
}

// open binds a forward's listener and prepares, without starting, its HTTP server.
func (s *Server) open(sp forwardSpec) (*listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(context.Background(), "tcp", sp.addr)
	if err != nil {
		return nil, fmt.Errorf("open listener for forward %q on %s: %w", sp.name, sp.addr, err)
	}
	srv := &http.Server{
		Handler:           s.opts.Handler(sp.name),
		ReadHeaderTimeout: sp.headerTimeout,
		IdleTimeout:       defaultIdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if sp.tls != nil {
		srv.TLSConfig = tlsconfig.Server(sp.tls, nil)
	} else if tlsconfig.Exposed(sp.addr) {
		s.log.Warn("forward serves plaintext HTTP on a non-loopback address: client keys and prompts cross the network in clear; set tls on the forward or terminate TLS in front of it",
			"forward", sp.name, "addr", sp.addr)
	}
	return &listener{spec: sp, ln: ln, srv: srv, stopped: make(chan struct{})}, nil
}

// serve starts l's accept loop.
func (s *Server) serve(l *listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(l.stopped)
		serve := l.srv.Serve
		if l.spec.tls != nil {
			// The certificate comes from TLSConfig; HTTP/2 is offered by ALPN.
			serve = func(ln net.Listener) error { return l.srv.ServeTLS(ln, "", "") }
		}
		if err := serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("forward listener failed", "forward", l.spec.name, "addr", l.spec.addr, "err", err)
		}
	}()
}

// linger keeps a moved-away listener accepting for MoveGrace, then drains it.
// Called with s.mu held.
func (s *Server) linger(l *listener) {
	s.lingering[l] = true
	l.timer = time.AfterFunc(s.opts.MoveGrace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.lingering[l] {
			delete(s.lingering, l)
			s.drain(l, "moved")
		}
	})
}

// drain stops l accepting and lets its in-flight requests finish in the background, up to
// DrainTimeout, then closes what is left. Called with s.mu held.
func (s *Server) drain(l *listener, why string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.DrainTimeout)
		defer cancel()
		err := l.srv.Shutdown(ctx)
		if err != nil {
			l.srv.Close()
		}
		s.log.Info("forward listener drained", "forward", l.spec.name, "addr", l.spec.addr, "why", why, "forced", err != nil)
	}()
}

// Addrs returns the bound address of every serving forward listener, by forward name.
func (s *Server) Addrs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.live))
	for name, l := range s.live {
		out[name] = l.ln.Addr().String()
	}
	return out
}

// Shutdown stops every listener accepting, waits for in-flight requests (background drains
// included) until ctx ends, then closes the remaining connections and returns ctx's error.
// The admin listener stays up while forwards drain (/ready answers 503) and closes last.
// Apply fails with ErrClosed afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.mu.Lock()
	s.closed = true
	var all []*listener
	for name, l := range s.live {
		all = append(all, l)
		delete(s.live, name)
	}
	for l := range s.lingering {
		l.timer.Stop()
		all = append(all, l)
		delete(s.lingering, l)
	}
	admin := s.admin
	s.mu.Unlock()

	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, l := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = l.srv.Shutdown(ctx); errs[i] != nil {
				l.srv.Close()
			}
		}()
	}
	wg.Wait()

	// Background drains of earlier reloads: wait for them within the same deadline.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if admin != nil {
		actx, cancel := context.WithTimeout(context.Background(), time.Second)
		admin.Shutdown(actx)
		cancel()
	}
	if err == nil {
		err = errors.Join(errs...)
	}
	if err != nil {
		return fmt.Errorf("shut down listeners: %w", err)
	}
	return nil
}
