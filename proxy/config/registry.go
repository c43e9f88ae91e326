package config

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/concurrency"
	"github.com/llmproxy-go/llmproxy/proxy/quota"
	"github.com/llmproxy-go/llmproxy/proxy/ratelimit"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"github.com/llmproxy-go/llmproxy/proxy/upstream"
)

// Registry holds the state that outlives one Runtime: breakers and balancer statistics per
// upstream identity, transports per client settings, concurrency limiters per group and
// settings, rate limiters per forward and settings, consumers' local counters and model
// labels per consumer name, response caches (backend and flights) per group. Build takes
// entries from it and creates the missing ones without registering them; Commit makes the
// registry hold exactly what the current runtime uses, Discard releases what a refused
// runtime created. All methods are safe for concurrent use.
type Registry struct {
	logger  *slog.Logger
	metrics *telemetry.Metrics

	mu           sync.Mutex
	st           *state
	warnedGlobal bool
	warnedCache  map[string]bool // groups logged as served uncached (backend missing)

	breakerListener atomic.Pointer[func()]
}

// OnBreakerChange makes fn run after every breaker transition of every upstream (the
// control-plane reporter sends a report at once). fn runs on the goroutine that caused the
// transition, with that breaker's lock held, so it must return at once and must not touch
// the breaker (a non-blocking channel send). nil removes it. Safe for concurrent use.
func (r *Registry) OnBreakerChange(fn func()) {
	if fn == nil {
		r.breakerListener.Store(nil)
		return
	}
	r.breakerListener.Store(&fn)
}

// NewRegistry returns an empty registry. Breaker transitions are logged on logger and
// counted on m; either may be nil (no logs, no metrics).
func NewRegistry(m *telemetry.Metrics, logger *slog.Logger) *Registry {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{logger: logger, metrics: m, st: newState(), warnedCache: map[string]bool{}}
}

// state is a set of long-lived entries by identity: the registry's, or the ones a runtime
// uses.
type state struct {
	upstreams    map[upstreamKey]*upstreamState
	transports   map[transportKey]*upstream.Client
	limiters     map[limiterKey]*concurrency.Limiter
	rateLimiters map[rateKey]*rateState
	consumers    map[string]*consumerState // by consumer name
	shared       map[sharedKey]*quota.Shared
	caches       map[cacheKey]*cacheState
}

func newState() *state {
	return &state{
		upstreams:    map[upstreamKey]*upstreamState{},
		transports:   map[transportKey]*upstream.Client{},
		limiters:     map[limiterKey]*concurrency.Limiter{},
		rateLimiters: map[rateKey]*rateState{},
		consumers:    map[string]*consumerState{},
		shared:       map[sharedKey]*quota.Shared{},
		caches:       map[cacheKey]*cacheState{},
	}
}

// upstreamKey is an upstream's identity: a change of any part gives a fresh breaker.
type upstreamKey struct {
	name, url string
	brk       breaker.Config
}

type upstreamState struct {
	breaker *breaker.Breaker
	stats   *balancer.Stats
	// gauge is the upstream's llmproxy_circuitbreaker_state child, set when the registry
	// adopts the state (a refused runtime's breaker shows in no metric).
	gauge atomic.Pointer[gaugeRef]
}

type gaugeRef struct{ prometheus.Gauge }

// transportKey is the part of a group's client settings a transport depends on.
type transportKey struct {
	connect, keepalive, idle time.Duration
	proxy                    string
	ca                       [sha256.Size]byte // SHA-256 of http_client.tls.ca; zero: system CAs
}

type limiterKey struct {
	group        string
	max, queue   int
	drop         bool
	queueTimeout time.Duration
}

type rateKey struct {
	forward   string
	perSecond float64
	burst     int
	header    string // "" keys by client IP
	global    bool
}

type rateState struct {
	limiter ratelimit.Limiter
	local   *ratelimit.Local
}

// entry returns the value for k in the runtime's state, else the registry's (recorded in
// the runtime's state), else a new one from create (recorded too, not registered).
func entry[K comparable, V any](b *builder, k K, of func(*state) map[K]V, create func() V) V {
	if v, ok := of(b.st)[k]; ok {
		return v
	}
	b.reg.mu.Lock()
	v, ok := of(b.reg.st)[k]
	b.reg.mu.Unlock()
	if !ok {
		v = create()
	}
	of(b.st)[k] = v
	return v
}

func (b *builder) upstream(k upstreamKey) *upstreamState {
	return entry(b, k, func(s *state) map[upstreamKey]*upstreamState { return s.upstreams }, func() *upstreamState {
		st := &upstreamState{stats: balancer.NewStats()}
		st.breaker = breaker.New(k.brk, b.reg.onBreakerChange(k.name, k.url, st))
		return st
	})
}

// onBreakerChange returns the transition hook of the breaker of upstream name at rawURL.
func (r *Registry) onBreakerChange(name, rawURL string, st *upstreamState) func(from, to breaker.State) {
	logger, m := r.logger, r.metrics
	return func(from, to breaker.State) {
		if m != nil {
			m.BreakerStateChanges.WithLabelValues("", name, rawURL, from.String(), to.String()).Inc()
		}
		if g := st.gauge.Load(); g != nil {
			g.Set(float64(to))
		}
		level := slog.LevelWarn
		if to == breaker.Closed {
			level = slog.LevelInfo
		}
		logger.Log(context.Background(), level, "circuit breaker state change", "upstream", name, "url", rawURL, "from", from.String(), "to", to.String())
		if fn := r.breakerListener.Load(); fn != nil {
			(*fn)()
		}
	}
}

// upstreamReadBuffer is the buffer an upstream answer is read through, held for the whole
// answer: an open stream holds it while it waits. Answers' headers (about 1 KiB from the
// big providers; longer lines are still read whole) and events fit; larger reads of a body
// bypass the buffer.
const upstreamReadBuffer = 1 << 10

// transport returns the transport of k, creating it (through proxyURL when not nil, trusting
// roots instead of the system's CAs when not nil) when there is none.
//
// The client exchanges cleartext HTTP/1.1 requests itself (package upstream: no goroutines
// or buffers per idle connection); the rest goes through a net/http Transport.
func (b *builder) transport(k transportKey, proxyURL *url.URL, roots *x509.CertPool) *upstream.Client {
	return entry(b, k, func(s *state) map[transportKey]*upstream.Client { return s.transports }, func() *upstream.Client {
		d := &net.Dialer{Timeout: k.connect, KeepAlive: k.keepalive}
		dial := countingDialer(d.DialContext)
		t := &http.Transport{
			DialContext:           dial,
			TLSHandshakeTimeout:   k.connect,
			MaxIdleConns:          0, // no global cap; per host below
			MaxIdleConnsPerHost:   1024,
			IdleConnTimeout:       k.idle,
			ExpectContinueTimeout: time.Second,
			// The client's Accept-Encoding passes through and answers are relayed as sent;
			// the transport must not add gzip and decode behind our back.
			DisableCompression: true,
			// HTTP/2 only where TLS negotiates it (ALPN); cleartext upstreams speak HTTP/1.1.
			ForceAttemptHTTP2: true,
			// Every upstream connection keeps both buffers for its life, an open stream
			// included. Bodies bigger than a buffer mostly bypass it (bufio reads into the
			// relay's buffer, in-memory request bodies are written by WriteTo), so larger
			// ones buy no speed: 4 KiB, net/http's default, holds a request's or an
			// answer's headers whole.
			ReadBufferSize:  4 << 10,
			WriteBufferSize: 4 << 10,
		}
		if proxyURL != nil {
			t.Proxy = http.ProxyURL(proxyURL)
		}
		if roots != nil {
			t.TLSClientConfig = tlsconfig.Client(roots, nil)
		}
		return upstream.New(upstream.Config{
			Dial:           dial,
			IdleTimeout:    k.idle,
			MaxIdlePerHost: t.MaxIdleConnsPerHost,
			ReadBufferSize: upstreamReadBuffer,
			FallbackOnly:   proxyURL != nil,
		}, t)
	})
}

func (b *builder) limiter(k limiterKey) *concurrency.Limiter {
	return entry(b, k, func(s *state) map[limiterKey]*concurrency.Limiter { return s.limiters }, func() *concurrency.Limiter {
		return concurrency.New(k.max, k.queue, k.drop, k.queueTimeout)
	})
}

func (b *builder) rateLimiter(k rateKey) *rateState {
	return entry(b, k, func(s *state) map[rateKey]*rateState { return s.rateLimiters }, func() *rateState {
		local := ratelimit.NewLocal(k.perSecond, k.burst)
		s := &rateState{limiter: local, local: local}
		if k.global && b.opts.Redis != nil {
			ro := []ratelimit.RedisOption{ratelimit.WithTimeout(b.opts.RedisTimeout)}
			if b.opts.RedisGuard != nil {
				ro = append(ro, ratelimit.WithGuard(b.opts.RedisGuard))
			}
			s.limiter = ratelimit.NewRedis(b.opts.Redis, "llmproxy:ratelimit:"+k.forward+":", k.perSecond, k.burst, local, ro...)
		}
		return s
	})
}

// Commit makes the registry hold exactly the entries rt uses: it adopts those rt created
// and drops the others (breakers are stopped, idle connections of dropped transports closed,
// local rate limiters closed). Call it once rt is the current runtime. Requests still running
// on an older runtime keep working: a dropped breaker or limiter simply stops being shared.
// Commit(nil) drops everything.
func (r *Registry) Commit(rt *Runtime) {
	keep := newState()
	if rt != nil && rt.state != nil {
		keep = rt.state
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var dropped []string
	commitMap(r.st.upstreams, keep.upstreams, func(k upstreamKey, s *upstreamState) {
		s.breaker.Stop()
		dropped = append(dropped, k.name)
	}, func(k upstreamKey, s *upstreamState) {
		if r.metrics != nil {
			g := r.metrics.BreakerState.WithLabelValues(k.name)
			s.gauge.Store(&gaugeRef{g})
			g.Set(float64(s.breaker.State()))
		}
	})
	commitMap(r.st.transports, keep.transports, func(_ transportKey, t *upstream.Client) { t.Close() }, nil)
	commitMap(r.st.limiters, keep.limiters, nil, nil)
	commitMap(r.st.rateLimiters, keep.rateLimiters, func(_ rateKey, s *rateState) { s.local.Close() }, func(k rateKey, s *rateState) {
		if k.global && s.limiter == ratelimit.Limiter(s.local) && !r.warnedGlobal {
			r.warnedGlobal = true
			r.logger.Warn("rate limit scope global without Redis: limits are per proxy", "forward", k.forward)
		}
	})
	commitMap(r.st.caches, keep.caches, func(_ cacheKey, s *cacheState) { s.release() }, nil)
	r.commitCaches(rt)
	for _, name := range dropped {
		if r.metrics != nil && !r.upstreamNameUsed(name) {
			r.metrics.BreakerState.DeleteLabelValues(name)
		}
	}
	commitMap(r.st.consumers, keep.consumers, func(name string, _ *consumerState) {
		if m := r.metrics; m != nil {
			gone := prometheus.Labels{"consumer": name}
			for _, v := range []*prometheus.CounterVec{m.ConsumerRequests, m.ConsumerTokens, m.ConsumerSpend, m.ConsumerRefusals} {
				v.DeletePartialMatch(gone)
			}
		}
	}, nil)
	commitMap(r.st.shared, keep.shared, nil, nil)
	if r.metrics != nil {
		info := map[string]map[string]string{}
		if rt != nil {
			for _, c := range rt.consumers {
				info[c.Name] = c.Labels
			}
		}
		r.metrics.ConsumerInfo.Set(info)
	}
}

// Discard releases the entries rt created that the registry does not hold: call it for a
// runtime that was built but refused (it never served), instead of Commit. The registry is
// left as it was.
func (r *Registry) Discard(rt *Runtime) {
	if rt == nil || rt.state == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	discardMap(r.st.upstreams, rt.state.upstreams, func(s *upstreamState) { s.breaker.Stop() })
	discardMap(r.st.transports, rt.state.transports, func(t *upstream.Client) { t.Close() })
	discardMap(r.st.rateLimiters, rt.state.rateLimiters, func(s *rateState) { s.local.Close() })
	discardMap(r.st.caches, rt.state.caches, func(s *cacheState) { s.release() })
}

// commitMap makes cur hold exactly keep's entries. drop (if not nil) gets every value
// removed or replaced, adopt (if not nil) every value added.
func commitMap[K, V comparable](cur, keep map[K]V, drop, adopt func(K, V)) {
	for k, v := range cur {
		if nv, ok := keep[k]; !ok || nv != v {
			if drop != nil {
				drop(k, v)
			}
			delete(cur, k)
		}
	}
	for k, v := range keep {
		if _, ok := cur[k]; !ok {
			cur[k] = v
			if adopt != nil {
				adopt(k, v)
			}
		}
	}
}

// discardMap releases every value of created that reg does not hold.
func discardMap[K, V comparable](reg, created map[K]V, release func(V)) {
	for k, v := range created {
		if rv, ok := reg[k]; !ok || rv != v {
			release(v)
		}
	}
}

func (r *Registry) upstreamNameUsed(name string) bool {
	for k := range r.st.upstreams {
		if k.name == name {
			return true
		}
	}
	return false
}

// Close drops every entry (Commit(nil)).
func (r *Registry) Close() { r.Commit(nil) }
