package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/router"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
)

// Options are the inputs of Compile besides the configuration.
type Options struct {
	// Revision is stored as Runtime.Revision.
	Revision string
	// Env resolves ${env:NAME} references; nil means os.LookupEnv.
	Env func(string) (string, bool)
	// Metrics receives every metric child; nil means a private, unexported set.
	Metrics *telemetry.Metrics
	// Logger; nil discards.
	Logger *slog.Logger
	// Redis backs rate limits with scope "global"; nil makes them local (logged once).
	Redis redis.UniversalClient
}

// Compile turns c into a Runtime, taking long-lived state from reg. c is not modified.
// The steps: clone, resolve ${env:NAME}, apply defaults, validate, refuse fields whose
// feature is not built yet, build. Every configuration fault is reported at once as
// validate.FieldErrors joined with errors.Join (see validate.Errors). Compile may be called
// concurrently; the Runtime is ready for Holder.Store, after which the caller should
// reg.Prune it.
func Compile(c *configv1.Config, reg *Registry, opts Options) (*Runtime, error) {
	if c == nil {
		c = &configv1.Config{}
	}
	if reg == nil {
		return nil, errors.New("compile config: nil registry")
	}
	if opts.Env == nil {
		opts.Env = os.LookupEnv
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = telemetry.NewMetrics()
	}
	src := proto.Clone(c).(*configv1.Config)
	validate.ApplyDefaults(src)
	cfg := proto.Clone(src).(*configv1.Config)
	if err := validate.ResolveEnv(cfg, opts.Env); err != nil {
		return nil, err
	}
	if err := validate.Validate(cfg); err != nil {
		return nil, err
	}
	if err := checkSupported(cfg); err != nil {
		return nil, err
	}
	b := &builder{reg: reg, opts: &opts, m: opts.Metrics}
	rt, err := b.build(cfg)
	if err != nil {
		return nil, err
	}
	rt.Revision = opts.Revision
	rt.Source = src
	return rt, nil
}

// checkSupported refuses fields whose feature the proxy does not implement yet.
func checkSupported(c *configv1.Config) error {
	var errs []error
	for i, g := range c.GetUpstreamGroups() {
		if g.GetCache().GetEnabled() {
			errs = append(errs, &validate.FieldError{
				Path: fmt.Sprintf("upstream_groups[%d].cache.enabled", i),
				Kind: validate.ErrNotSupported,
				Msg:  "the response cache is not supported yet",
			})
		}
	}
	return errors.Join(errs...)
}

type builder struct {
	reg  *Registry
	opts *Options
	m    *telemetry.Metrics
	keys usedKeys
}

func fieldErr(path, format string, args ...any) error {
	return &validate.FieldError{Path: path, Kind: validate.ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

func (b *builder) build(c *configv1.Config) (*Runtime, error) {
	rt := &Runtime{Metrics: b.m, Logger: b.opts.Logger, forwards: map[string]*Forward{}}
	var errs []error

	upstreams := map[string]*configv1.Upstream{}
	upIndex := map[string]int{}
	for i, u := range c.GetUpstreams() {
		upstreams[u.GetName()] = u
		upIndex[u.GetName()] = i
	}
	groupIndex := map[string]int{}
	for i, g := range c.GetUpstreamGroups() {
		grp, err := b.group(c, i, g, upstreams, upIndex)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		groupIndex[g.GetName()] = i
		rt.Groups = append(rt.Groups, grp)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for i, f := range c.GetHttpServer().GetForwards() {
		fw, err := b.forward(i, f, groupIndex)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rt.Forwards = append(rt.Forwards, fw)
		rt.forwards[fw.Name] = fw
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	rt.keys = b.keys
	return rt, nil
}

func (b *builder) forward(i int, f *configv1.Forward, groups map[string]int) (*Forward, error) {
	path := fmt.Sprintf("http_server.forwards[%d]", i)
	def, ok := groups[f.GetDefaultGroup()]
	if !ok {
		return nil, &validate.FieldError{Path: path + ".default_group", Kind: validate.ErrReference, Msg: fmt.Sprintf("upstream group %q is not defined", f.GetDefaultGroup())}
	}
	fw := &Forward{
		Name:          f.GetName(),
		Addr:          net.JoinHostPort(f.GetAddress(), strconv.FormatUint(uint64(f.GetPort()), 10)),
		DefaultGroup:  def,
		MaxBodyBytes:  int64(f.GetMaxBodyBytes()),
		HeaderTimeout: time.Duration(f.GetTimeout().GetConnect()) * time.Second,
		routes:        map[string]*RouteMetrics{},
		errors:        b.m.HTTPErrors,
	}
	rules := make([]router.Rule, 0, len(f.GetRouting()))
	for j, r := range f.GetRouting() {
		t, ok := groups[r.GetTargetGroup()]
		if !ok {
			return nil, &validate.FieldError{Path: fmt.Sprintf("%s.routing[%d].target_group", path, j), Kind: validate.ErrReference, Msg: fmt.Sprintf("upstream group %q is not defined", r.GetTargetGroup())}
		}
		rules = append(rules, router.Rule{Path: r.GetPath(), Model: r.GetModel(), Headers: r.GetHeaders(), Methods: r.GetMethods(), Target: t})
		fw.routes[r.GetPath()] = newRouteMetrics(b.m, fw.Name, r.GetPath())
	}
	rtr, err := router.New(rules, def)
	if err != nil {
		return nil, fieldErr(path+".routing", "%v", err)
	}
	fw.Router = rtr
	fw.NeedsModel = rtr.NeedsModel()
	fw.defaultRoute = newRouteMetrics(b.m, fw.Name, "")

	if rl := f.GetRatelimit(); rl.GetEnabled() {
		k := rateKey{forward: fw.Name, perSecond: float64(rl.GetPerSecond()), burst: int(rl.GetBurst()), key: rl.GetKey(), global: rl.GetScope() == "global"}
		r := &RateLimit{Rejected: b.m.RateLimited.WithLabelValues(fw.Name)}
		switch key := rl.GetKey(); {
		case key == "" || key == "ip":
		case strings.HasPrefix(key, "header:") && len(key) > len("header:"):
			r.Header = http.CanonicalHeaderKey(strings.TrimPrefix(key, "header:"))
		default:
			return nil, fieldErr(path+".ratelimit.key", "unknown key %q (want ip or header:NAME)", key)
		}
		r.Limiter = b.reg.rateLimiter(k, b.opts)
		b.keys.rateLimiters = append(b.keys.rateLimiters, k)
		fw.RateLimit = r
	}
	return fw, nil
}

func parseDuration(path, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fieldErr(path, "bad duration %q", s)
	}
	return d, nil
}

func (b *builder) group(c *configv1.Config, i int, g *configv1.UpstreamGroup, ups map[string]*configv1.Upstream, upIndex map[string]int) (*Group, error) {
	path := fmt.Sprintf("upstream_groups[%d]", i)
	hc := g.GetHttpClient()
	to := hc.GetTimeout()
	grp := &Group{
		Name:           g.GetName(),
		Index:          i,
		ConnectTimeout: time.Duration(to.GetConnect()) * time.Second,
		RequestTimeout: time.Duration(to.GetRequest()) * time.Second,
		IdleTimeout:    time.Duration(to.GetIdle()) * time.Second,
		Stream:         hc.GetStream(),
		Agent:          hc.GetAgent(),
		QueueDepth:     b.m.QueueDepth.WithLabelValues(g.GetName()),
		DroppedFull:    b.m.RequestsDropped.WithLabelValues(g.GetName(), "queue_full"),
		DroppedTimeout: b.m.RequestsDropped.WithLabelValues(g.GetName(), "queue_timeout"),
		retries:        b.m.Retries,
	}

	// Transport.
	tk := transportKey{connect: grp.ConnectTimeout, keepalive: time.Duration(hc.GetKeepalive()) * time.Second, idle: grp.IdleTimeout}
	var proxyURL *url.URL
	if p := hc.GetProxy().GetUrl(); p != "" {
		u, err := url.Parse(p)
		if err != nil || u.Host == "" {
			return nil, fieldErr(path+".http_client.proxy.url", "bad proxy URL")
		}
		proxyURL = u
		tk.proxy = p
	}
	grp.Transport = b.reg.transport(tk, proxyURL)
	b.keys.transports = append(b.keys.transports, tk)

	// Retry policy.
	if r := hc.GetRetry(); r != nil && r.GetAttempts() > 0 {
		p := &RetryPolicy{Attempts: int(r.GetAttempts()), Initial: time.Duration(r.GetInitial()) * time.Millisecond}
		var err error
		if p.MaxBackoff, err = parseDuration(path+".http_client.retry.max_backoff", r.GetMaxBackoff(), 10*time.Second); err != nil {
			return nil, err
		}
		for j, s := range r.GetRetryOn() {
			switch s {
			case "connect_error":
				p.ConnectError = true
			case "timeout":
				p.Timeout = true
			default:
				code, err := strconv.Atoi(s)
				if err != nil || code < 100 || code > 599 {
					return nil, fieldErr(fmt.Sprintf("%s.http_client.retry.retry_on[%d]", path, j), "bad retry condition %q", s)
				}
				p.setStatus(code)
			}
		}
		grp.Retry = p
	}

	// Concurrency.
	if cc := g.GetConcurrency(); cc != nil && cc.Max != nil {
		qt, err := parseDuration(path+".concurrency.queue_timeout", cc.GetQueueTimeout(), 30*time.Second)
		if err != nil {
			return nil, err
		}
		lk := limiterKey{group: grp.Name, max: int(cc.GetMax()), queue: int(cc.GetQueue()), drop: cc.GetDropExcess(), queueTimeout: qt}
		grp.Limiter = b.reg.limiter(lk)
		b.keys.limiters = append(b.keys.limiters, lk)
	}

	// Members.
	members := make([]balancer.Member, 0, len(g.GetUpstreams()))
	for j, ref := range g.GetUpstreams() {
		u, ok := ups[ref.GetName()]
		if !ok {
			return nil, &validate.FieldError{Path: fmt.Sprintf("%s.upstreams[%d].name", path, j), Kind: validate.ErrReference, Msg: fmt.Sprintf("upstream %q is not defined", ref.GetName())}
		}
		m, err := b.member(fmt.Sprintf("upstreams[%d]", upIndex[u.GetName()]), grp.Name, u, int(ref.GetWeight()))
		if err != nil {
			return nil, err
		}
		grp.Members = append(grp.Members, m)
		members = append(members, balancer.Member{Weight: m.Weight, Stats: m.Stats})
	}
	strategy := g.GetBalance().GetStrategy()
	if strategy == "" {
		strategy = "roundrobin"
	}
	pk, err := balancer.New(strategy, members)
	if err != nil {
		return nil, fieldErr(path+".balance.strategy", "%v", err)
	}
	grp.Picker = pk
	return grp, nil
}

func (b *builder) member(path, group string, u *configv1.Upstream, weight int) (*Member, error) {
	raw := u.GetUrl()
	pu, err := url.Parse(raw)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, fieldErr(path+".url", "bad upstream URL %q (want http(s)://host[:port][/prefix])", raw)
	}
	pu.RawQuery, pu.Fragment = "", ""
	if weight <= 0 {
		weight = 1
	}
	m := &Member{Name: u.GetName(), URL: pu, RawURL: raw, Weight: weight}
	switch a := u.GetAuth(); a.GetType() {
	case "", "none":
	case "bearer":
		m.Auth = "Bearer " + a.GetToken()
	case "basic":
		m.Auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(a.GetUsername()+":"+a.GetPassword()))
	default:
		return nil, fieldErr(path+".auth.type", "unknown auth type %q", a.GetType())
	}
	for j, h := range u.GetHeaders() {
		op := HeaderOp{Key: http.CanonicalHeaderKey(h.GetKey()), Value: h.GetValue()}
		switch h.GetOp() {
		case "insert":
			op.Op = HeaderInsert
		case "replace":
			op.Op = HeaderReplace
		case "remove":
			op.Op = HeaderRemove
		default:
			return nil, fieldErr(fmt.Sprintf("%s.headers[%d].op", path, j), "unknown header op %q", h.GetOp())
		}
		m.HeaderOps = append(m.HeaderOps, op)
	}
	br := u.GetBreaker()
	window, err := parseDuration(path+".breaker.window", br.GetWindow(), 10*time.Second)
	if err != nil {
		return nil, err
	}
	bc := breaker.Config{
		Threshold:      br.GetThreshold(),
		Cooldown:       time.Duration(br.GetCooldown()) * time.Second,
		Window:         window,
		MinRequests:    int(br.GetMinRequests()),
		HalfOpenProbes: int(br.GetHalfOpenProbes()),
	}
	k := upstreamKey{name: m.Name, url: raw, brk: bc}
	st := b.reg.upstream(k)
	b.keys.upstreams = append(b.keys.upstreams, k)
	m.Breaker, m.Stats = st.breaker, st.stats

	mm := b.m
	m.Requests = mm.UpstreamRequests.WithLabelValues(group, m.Name)
	m.Duration = mm.UpstreamDuration.WithLabelValues(group, m.Name)
	m.BreakerSuccess = mm.BreakerCalls.WithLabelValues(group, m.Name, raw, telemetry.ResultSuccess)
	m.BreakerFailure = mm.BreakerCalls.WithLabelValues(group, m.Name, raw, telemetry.ResultFailure)
	m.BreakerRejected = mm.BreakerCalls.WithLabelValues(group, m.Name, raw, telemetry.ResultRejected)
	m.PromptTokens = mm.Tokens.WithLabelValues(group, m.Name, telemetry.TokenPrompt)
	m.CompletionTokens = mm.Tokens.WithLabelValues(group, m.Name, telemetry.TokenCompletion)
	m.errConnect = mm.UpstreamErrors.WithLabelValues(UpstreamErrConnect, group, m.Name)
	m.errTimeout = mm.UpstreamErrors.WithLabelValues(UpstreamErrTimeout, group, m.Name)
	m.errStatus = mm.UpstreamErrors.WithLabelValues(UpstreamErrStatus, group, m.Name)
	m.errStream = mm.UpstreamErrors.WithLabelValues(UpstreamErrStream, group, m.Name)
	m.errOther = mm.UpstreamErrors.WithLabelValues(UpstreamErrOther, group, m.Name)
	return m, nil
}
