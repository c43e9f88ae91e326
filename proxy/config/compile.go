package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/redisguard"
	"github.com/llmproxy-go/llmproxy/proxy/router"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"github.com/redis/go-redis/v9"
)

// Options are the inputs of Build besides the model.
type Options struct {
	// Revision is stored as Runtime.Revision (Build and Compile; an Applier sets it).
	Revision string
	// Env resolves ${env:NAME} references (Compile and Applier.Apply, through
	// validate.Parse); nil means os.LookupEnv.
	Env func(string) (string, bool)
	// Metrics receives every metric child; nil means a private, unexported set.
	Metrics *telemetry.Metrics
	// Logger; nil discards.
	Logger *slog.Logger
	// Redis backs rate limits with scope "global", consumers' limits and caches with backend
	// redis; nil makes those limits local and those groups uncached (each logged once; the
	// cache also as a Warning).
	Redis redis.UniversalClient
	// RedisTimeout bounds one Redis call on the request path; past it the limits count
	// locally. Zero selects redisguard.DefaultTimeout. Used when RedisGuard is nil.
	RedisTimeout time.Duration
	// CacheLookupTimeout bounds one lookup of a Redis cache; 0 means
	// cache.DefaultLookupTimeout (20ms). It applies to the caches this build creates.
	CacheLookupTimeout time.Duration
	// RedisGuard runs every request-path call to Redis (global rate limits, consumers'
	// limits) under its deadline and one circuit breaker shared by all of them; nil gives
	// each user a deadline of RedisTimeout and a guard of its own.
	RedisGuard *redisguard.Guard
	// EnvOverrides is stored as Runtime.EnvOverrides (Build; an Applier sets it).
	EnvOverrides []configfile.Override
	// Files is the TLS material the model names, from LoadFiles (Build; Compile and an
	// Applier load it). Nil is enough only for a model that names no file.
	Files *Files
}

func (o Options) withDefaults() Options {
	if o.Env == nil {
		o.Env = os.LookupEnv
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	return o
}

// Compile is validate.Parse, LoadFiles and Build: it validates c (resolving ${env:NAME} with
// opts.Env), reads the files it names and builds its Runtime. Every configuration fault is
// reported at once as validate.FieldErrors joined with errors.Join (see validate.Errors);
// Build itself cannot fail. c is not modified. Like Build, Compile registers nothing in reg: see Build for the
// caller's part.
func Compile(c *configv1.Config, reg *Registry, opts Options) (*Runtime, error) {
	if reg == nil {
		return nil, errors.New("compile config: nil registry")
	}
	opts = opts.withDefaults()
	m, err := validate.Parse(c, opts.Env)
	if err != nil {
		return nil, err
	}
	if opts.Files, err = LoadFiles(m, opts.Logger); err != nil {
		return nil, err
	}
	return Build(m, reg, opts), nil
}

// Build turns a validated model into a Runtime: routers, pickers, parsed URLs, precomputed
// auth headers, retry policies, caches and metric children, so the request path does no parsing and
// no label lookups. It checks nothing (validate.Parse did) and cannot fail.
//
// Long-lived state (breakers, balancer statistics, transports, limiters) is taken from reg
// where the identity is unchanged and created otherwise, but Build registers nothing: once
// the runtime is the current one the caller calls reg.Commit(rt), and when it refuses the
// runtime, reg.Discard(rt). Applier does both. Build may be called concurrently; reg must
// not be nil.
func Build(m *validate.Model, reg *Registry, opts Options) *Runtime {
	opts = opts.withDefaults()
	b := &builder{reg: reg, opts: &opts, m: opts.Metrics, st: newState()}
	rt := &Runtime{
		Revision:     opts.Revision,
		Source:       m.Source,
		EnvOverrides: opts.EnvOverrides,
		Metrics:      opts.Metrics,
		Logger:       opts.Logger,
		forwards:     make(map[string]*Forward, len(m.Forwards)),
	}
	for i, g := range m.Groups {
		rt.Groups = append(rt.Groups, b.group(m, i, g))
	}
	for i, f := range m.Forwards {
		fw := b.forward(f)
		if f.TLS != nil {
			fw.TLS = opts.Files.forward(i)
		}
		rt.Forwards = append(rt.Forwards, fw)
		rt.forwards[fw.Name] = fw
	}
	b.consumers(m, rt)
	rt.state = b.st
	rt.Warnings = b.warnings
	return rt
}

type builder struct {
	reg      *Registry
	opts     *Options
	m        *telemetry.Metrics
	st       *state // what the runtime uses
	warnings []Warning
}

func (b *builder) forward(f *validate.Forward) *Forward {
	fw := &Forward{
		Name:           f.Name,
		Addr:           f.Addr,
		DefaultGroup:   f.DefaultGroup,
		MaxBodyBytes:   f.MaxBodyBytes,
		HeaderTimeout:  f.HeaderTimeout,
		TrustedProxies: f.TrustedProxies,
		ClientAuth:     f.ClientAuth,
		BodyTimeout:    f.BodyTimeout,
		routes:         make(map[string]*RouteMetrics, len(f.Routes)),
		errors:         b.m.HTTPErrors,
	}
	rules := make([]router.Rule, 0, len(f.Routes))
	for _, r := range f.Routes {
		rules = append(rules, router.Rule{Pattern: r.Pattern, Model: r.Model, Headers: r.Headers, Methods: r.Methods, Target: r.Group})
		fw.routes[r.Pattern.String()] = newRouteMetrics(b.m, fw.Name, r.Pattern.String())
	}
	fw.Router = router.New(rules, f.DefaultGroup)
	fw.NeedsModel = fw.Router.NeedsModel()
	fw.defaultRoute = newRouteMetrics(b.m, fw.Name, "")

	if rl := f.RateLimit; rl != nil {
		k := rateKey{forward: fw.Name, perSecond: float64(rl.PerSecond), burst: rl.Burst, header: rl.Header, global: rl.Scope == validate.ScopeGlobal}
		fw.RateLimit = &RateLimit{
			Limiter:  b.rateLimiter(k).limiter,
			Header:   rl.Header,
			Rejected: b.m.RateLimited.WithLabelValues(fw.Name),
		}
	}
	return fw
}

func (b *builder) group(m *validate.Model, i int, g *validate.Group) *Group {
	cl := g.Client
	grp := &Group{
		Name:           g.Name,
		Index:          i,
		ConnectTimeout: cl.ConnectTimeout,
		RequestTimeout: cl.RequestTimeout,
		IdleTimeout:    cl.IdleTimeout,
		Stream:         cl.Stream,
		Agent:          cl.Agent,
		QueueDepth:     b.m.QueueDepth.WithLabelValues(g.Name),
		DroppedFull:    b.m.RequestsDropped.WithLabelValues(g.Name, "queue_full"),
		DroppedTimeout: b.m.RequestsDropped.WithLabelValues(g.Name, "queue_timeout"),
		retries:        b.m.Retries,
	}

	ca := b.opts.Files.ca(cl.CA)
	tk := transportKey{connect: cl.ConnectTimeout, keepalive: cl.Keepalive, idle: cl.IdleTimeout, ca: ca.digest}
	if cl.Proxy != nil {
		tk.proxy = cl.Proxy.String()
	}
	grp.Transport = b.transport(tk, cl.Proxy, ca.pool)

	if r := g.Retry; r != nil {
		grp.Retry = &RetryPolicy{
			Attempts:     r.Attempts,
			Initial:      r.Initial,
			MaxBackoff:   r.MaxBackoff,
			ConnectError: r.On.ConnectError,
			Reset:        r.On.Reset,
			Timeout:      r.On.Timeout,
			on:           r.On,
		}
	}

	if cc := g.Concurrency; cc != nil {
		grp.Limiter = b.limiter(limiterKey{group: grp.Name, max: cc.Max, queue: cc.Queue, drop: cc.DropExcess, queueTimeout: cc.QueueTimeout})
	}

	members := make([]balancer.Member, 0, len(g.Members))
	for _, ref := range g.Members {
		mb := b.member(grp.Name, m.Upstreams[ref.Upstream], ref.Weight)
		grp.Members = append(grp.Members, mb)
		members = append(members, balancer.Member{Weight: mb.Weight, Stats: mb.Stats})
	}
	grp.Picker = picker(g.Strategy, members)
	grp.Cache = b.cache(i, g)
	return grp
}

// picker builds the picker of a strategy; every validate.Strategy has its case.
func picker(s validate.Strategy, members []balancer.Member) balancer.Picker {
	switch s {
	case validate.StrategyWeightedRoundRobin:
		return balancer.NewWeightedRoundRobin(members)
	case validate.StrategyRandom:
		return balancer.NewRandom(len(members))
	case validate.StrategyResponseAware:
		return balancer.NewResponseAware(members)
	case validate.StrategyFailover:
		return balancer.NewFailover(len(members))
	case validate.StrategyLeastBusy:
		return balancer.NewLeastBusy(members)
	case validate.StrategyRoundRobin:
		return balancer.NewRoundRobin(len(members))
	}
	panic(fmt.Sprintf("config: no picker for strategy %v", s))
}

func (b *builder) member(group string, u *validate.Upstream, weight int) *Member {
	base := *u.URL
	base.RawQuery, base.Fragment = "", ""
	m := &Member{Name: u.Name, URL: &base, RawURL: u.RawURL, Weight: weight}
	switch u.Auth.Type {
	case validate.AuthBearer:
		m.Auth = "Bearer " + u.Auth.Token
	case validate.AuthBasic:
		m.Auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Auth.Username+":"+u.Auth.Password))
	}
	for _, h := range u.Headers {
		m.HeaderOps = append(m.HeaderOps, HeaderOp{Op: h.Op, Key: h.Key, Value: h.Value})
	}
	br := u.Breaker
	k := upstreamKey{name: m.Name, url: u.RawURL, brk: breaker.Config{
		Threshold:      br.Threshold,
		Cooldown:       br.Cooldown,
		Window:         br.Window,
		MinRequests:    br.MinRequests,
		HalfOpenProbes: br.HalfOpenProbes,
	}}
	st := b.upstream(k)
	m.Breaker, m.Stats = st.breaker, st.stats

	mm := b.m
	m.Requests = mm.UpstreamRequests.WithLabelValues(group, m.Name)
	m.Duration = mm.UpstreamDuration.WithLabelValues(group, m.Name)
	m.BreakerSuccess = mm.BreakerCalls.WithLabelValues(group, m.Name, u.RawURL, telemetry.ResultSuccess)
	m.BreakerFailure = mm.BreakerCalls.WithLabelValues(group, m.Name, u.RawURL, telemetry.ResultFailure)
	m.BreakerRejected = mm.BreakerCalls.WithLabelValues(group, m.Name, u.RawURL, telemetry.ResultRejected)
	m.PromptTokens = mm.Tokens.WithLabelValues(group, m.Name, telemetry.TokenPrompt)
	m.CompletionTokens = mm.Tokens.WithLabelValues(group, m.Name, telemetry.TokenCompletion)
	m.RateLimited = mm.UpstreamRateLimited.WithLabelValues(group, m.Name)
	m.errConnect = mm.UpstreamErrors.WithLabelValues(UpstreamErrConnect, group, m.Name)
	m.errReset = mm.UpstreamErrors.WithLabelValues(UpstreamErrReset, group, m.Name)
	m.errTimeout = mm.UpstreamErrors.WithLabelValues(UpstreamErrTimeout, group, m.Name)
	m.errStatus = mm.UpstreamErrors.WithLabelValues(UpstreamErrStatus, group, m.Name)
	m.errStream = mm.UpstreamErrors.WithLabelValues(UpstreamErrStream, group, m.Name)
	m.errOther = mm.UpstreamErrors.WithLabelValues(UpstreamErrOther, group, m.Name)
	return m
}
