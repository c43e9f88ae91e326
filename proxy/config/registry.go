package config

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/concurrency"
	"github.com/llmproxy-go/llmproxy/proxy/ratelimit"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// Registry holds the state that outlives one Runtime: breakers and balancer statistics per
// upstream identity, transports per client settings, concurrency limiters per group and
// settings, rate limiters per forward and settings. Compile takes entries from it (creating
// missing ones); Prune drops those the current runtime no longer uses. All methods are safe
// for concurrent use.
type Registry struct {
	logger  *slog.Logger
	metrics *telemetry.Metrics

	mu           sync.Mutex
	upstreams    map[upstreamKey]*upstreamState
	transports   map[transportKey]*http.Transport
	limiters     map[limiterKey]*concurrency.Limiter
	rateLimiters map[rateKey]*rateState
	warnedGlobal bool
}

// NewRegistry returns an empty registry. Breaker transitions are logged on logger and
// counted on m; either may be nil (no logs, no metrics).
func NewRegistry(m *telemetry.Metrics, logger *slog.Logger) *Registry {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		logger:       logger,
		metrics:      m,
		upstreams:    map[upstreamKey]*upstreamState{},
		transports:   map[transportKey]*http.Transport{},
		limiters:     map[limiterKey]*concurrency.Limiter{},
		rateLimiters: map[rateKey]*rateState{},
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
}

// transportKey is the part of a group's client settings a transport depends on.
type transportKey struct {
	connect, keepalive, idle time.Duration
	proxy                    string
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
	key       string
	global    bool
}

type rateState struct {
	limiter ratelimit.Limiter
	local   *ratelimit.Local
}

// usedKeys records which registry entries a runtime uses.
type usedKeys struct {
	upstreams    []upstreamKey
	transports   []transportKey
	limiters     []limiterKey
	rateLimiters []rateKey
}

func (r *Registry) upstream(k upstreamKey) *upstreamState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.upstreams[k]; s != nil {
		return s
	}
	name, rawURL := k.name, k.url
	var g interface{ Set(float64) }
	if r.metrics != nil {
		g = r.metrics.BreakerState.WithLabelValues(name)
		g.Set(0)
	}
	logger := r.logger
	m := r.metrics
	onChange := func(from, to breaker.State) {
		if m != nil {
			m.BreakerStateChanges.WithLabelValues("", name, rawURL, from.String(), to.String()).Inc()
			g.Set(float64(to))
		}
		level := slog.LevelWarn
		if to == breaker.Closed {
			level = slog.LevelInfo
		}
		logger.Log(context.Background(), level, "circuit breaker state change", "upstream", name, "url", rawURL, "from", from.String(), "to", to.String())
	}
	s := &upstreamState{breaker: breaker.New(k.brk, onChange), stats: balancer.NewStats()}
	r.upstreams[k] = s
	return s
}

func (r *Registry) transport(k transportKey, proxyURL *url.URL) *http.Transport {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.transports[k]; t != nil {
		return t
	}
	d := &net.Dialer{Timeout: k.connect, KeepAlive: k.keepalive}
	t := &http.Transport{
		DialContext:           d.DialContext,
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
		ReadBufferSize:    32 << 10,
		WriteBufferSize:   32 << 10,
	}
	if proxyURL != nil {
		t.Proxy = http.ProxyURL(proxyURL)
	}
	r.transports[k] = t
	return t
}

func (r *Registry) limiter(k limiterKey) *concurrency.Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.limiters[k]; l != nil {
		return l
	}
	l := concurrency.New(k.max, k.queue, k.drop, k.queueTimeout)
	r.limiters[k] = l
	return l
}

func (r *Registry) rateLimiter(k rateKey, opts *Options) ratelimit.Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.rateLimiters[k]; s != nil {
		return s.limiter
	}
	local := ratelimit.NewLocal(k.perSecond, k.burst)
	s := &rateState{limiter: local, local: local}
	if k.global {
		if opts.Redis != nil {
			s.limiter = ratelimit.NewRedis(opts.Redis, "llmproxy:ratelimit:"+k.forward+":", k.perSecond, k.burst, local)
		} else if !r.warnedGlobal {
			r.warnedGlobal = true
			opts.Logger.Warn("rate limit scope global without Redis: limits are per proxy", "forward", k.forward)
		}
	}
	r.rateLimiters[k] = s
	return s.limiter
}

// Prune drops every entry that rt does not use: breakers are stopped, idle connections of
// dropped transports closed, local rate limiters closed. Call it after storing rt as the
// current runtime. Requests still running on an older runtime keep working: a dropped
// breaker or limiter simply stops being shared. Prune(nil) drops everything.
func (r *Registry) Prune(rt *Runtime) {
	var keep usedKeys
	if rt != nil {
		keep = rt.keys
	}
	ups := make(map[upstreamKey]bool, len(keep.upstreams))
	for _, k := range keep.upstreams {
		ups[k] = true
	}
	trs := make(map[transportKey]bool, len(keep.transports))
	for _, k := range keep.transports {
		trs[k] = true
	}
	lims := make(map[limiterKey]bool, len(keep.limiters))
	for _, k := range keep.limiters {
		lims[k] = true
	}
	rls := make(map[rateKey]bool, len(keep.rateLimiters))
	for _, k := range keep.rateLimiters {
		rls[k] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, s := range r.upstreams {
		if !ups[k] {
			s.breaker.Stop()
			delete(r.upstreams, k)
			if r.metrics != nil && !r.upstreamNameUsed(k.name) {
				r.metrics.BreakerState.DeleteLabelValues(k.name)
			}
		}
	}
	for k, t := range r.transports {
		if !trs[k] {
			t.CloseIdleConnections()
			delete(r.transports, k)
		}
	}
	for k := range r.limiters {
		if !lims[k] {
			delete(r.limiters, k)
		}
	}
	for k, s := range r.rateLimiters {
		if !rls[k] {
			s.local.Close()
			delete(r.rateLimiters, k)
		}
	}
}

func (r *Registry) upstreamNameUsed(name string) bool {
	for k := range r.upstreams {
		if k.name == name {
			return true
		}
	}
	return false
}

// Close drops every entry (Prune(nil)).
func (r *Registry) Close() { r.Prune(nil) }
