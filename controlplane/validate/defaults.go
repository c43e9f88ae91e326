package validate

import (
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Defaults of http_server.admin, also the proxy's --admin-addr default: a proxy run from the
// control plane has no admin block and listens where a file without one would.
const (
	DefaultAdminAddress = "127.0.0.1"
	DefaultAdminPort    = 9000
)

// Defaults documented in proto/llmproxy/config/v1/config.proto. Where LLMProxy's README
// differs, config.proto wins (http_server.admin.address is 127.0.0.1, keepalive is 60).
// This is the only place they are written; the proxy reads them from the Model.
const (
	defaultForwardPort         = 3000
	defaultForwardAddress      = "0.0.0.0"
	defaultMaxBodyBytes        = 10 << 20
	defaultAdminPort           = DefaultAdminPort
	defaultAdminAddress        = DefaultAdminAddress
	defaultServerConnect       = 10 // seconds
	defaultBodyTimeout         = "60s"
	defaultRatePerSecond       = 100
	defaultRateBurst           = 200
	defaultRateKey             = rateKeyIP
	defaultRateScope           = ScopeLocal
	defaultAuthType            = AuthNone
	defaultBreakerThreshold    = 0.5
	defaultBreakerCooldown     = 30 // seconds
	defaultBreakerWindow       = "10s"
	defaultBreakerMinRequests  = 5
	defaultBreakerProbes       = 1
	defaultWeight              = 1
	defaultStrategy            = StrategyRoundRobin
	defaultAgent               = "LLMProxy/1.0"
	defaultKeepalive           = 60 // seconds
	defaultStream              = true
	defaultClientConnect       = 10  // seconds
	defaultClientRequest       = 300 // seconds
	defaultClientIdle          = 60  // seconds
	defaultRetryAttempts       = 3
	defaultRetryInitial        = 500 // milliseconds
	defaultRetryMaxBackoff     = "10s"
	defaultQueue               = 0
	defaultQueueTimeout        = "30s"
	defaultCacheBackend        = CacheMemory
	defaultCacheTTL            = "5m"
	defaultCacheMaxObjectBytes = 1 << 20
	defaultCacheMaxBytes       = 64 << 20
	defaultClientAuth          = ClientAuthOff
	defaultBudgetPeriod        = BudgetMonth
)

// defaultRetryOn returns the retry_on list used when a retry block sets none. It leaves
// out reset: a request whose connection was lost after it was written may have been
// processed (and billed) by the upstream, so sending it again is the operator's choice.
func defaultRetryOn() []string {
	return []string{retryConnectError, retryTimeout, "429", "502", "503", "504"}
}

// ApplyDefaults fills, in place, every unset optional field of c with its documented default.
// It is idempotent and never changes a field the user set.
//
// Blocks whose absence has a meaning of its own stay absent: http_server.admin (the proxy's
// --admin-addr applies), ratelimit (no limit), retry (no retries), http_client.proxy
// (direct), concurrency (no limit), cache (off), and a consumer's limits and budget (none).
// When present, their unset fields are
// filled; concurrency.max is required and never defaulted. Every other block is created
// when absent: a forward's timeout, an upstream's auth (type none) and breaker (a breaker
// always guards an upstream), a group's balance and http_client with its timeout.
// A nil c is a no-op.
func ApplyDefaults(c *configv1.Config) {
	if c == nil {
		return
	}
	if hs := c.GetHttpServer(); hs != nil {
		for _, f := range hs.GetForwards() {
			defaultForward(f)
		}
		if a := hs.GetAdmin(); a != nil {
			setU32(&a.Port, defaultAdminPort)
			setStr(&a.Address, defaultAdminAddress)
			if a.Timeout == nil {
				a.Timeout = &configv1.ServerTimeout{}
			}
			setU32(&a.Timeout.Connect, defaultServerConnect)
		}
	}
	for _, u := range c.GetUpstreams() {
		defaultUpstream(u)
	}
	for _, g := range c.GetUpstreamGroups() {
		defaultGroup(g)
	}
	for _, cs := range c.GetConsumers() {
		defaultConsumer(cs)
	}
}

func defaultConsumer(c *configv1.Consumer) {
	if c == nil {
		return
	}
	for _, k := range c.GetKeys() {
		if k != nil {
			setBool(&k.Disabled, false)
		}
	}
	if b := c.GetLimits().GetBudget(); b != nil && b.Period == "" {
		b.Period = defaultBudgetPeriod.String()
	}
}

func defaultForward(f *configv1.Forward) {
	if f == nil {
		return
	}
	setU32(&f.Port, defaultForwardPort)
	setStr(&f.Address, defaultForwardAddress)
	setU32(&f.MaxBodyBytes, defaultMaxBodyBytes)
	if f.Timeout == nil {
		f.Timeout = &configv1.ServerTimeout{}
	}
	setU32(&f.Timeout.Connect, defaultServerConnect)
	if f.ClientAuth == "" {
		f.ClientAuth = defaultClientAuth.String()
	}
	if f.Timeout.Body == "" {
		f.Timeout.Body = defaultBodyTimeout
	}
	if rl := f.Ratelimit; rl != nil {
		setBool(&rl.Enabled, true) // the block's presence enables it
		setU32(&rl.PerSecond, defaultRatePerSecond)
		setU32(&rl.Burst, defaultRateBurst)
		if rl.Key == "" {
			rl.Key = defaultRateKey
		}
		if rl.Scope == "" {
			rl.Scope = defaultRateScope.String()
		}
	}
}

func defaultUpstream(u *configv1.Upstream) {
	if u == nil {
		return
	}
	if u.Auth == nil {
		u.Auth = &configv1.Auth{}
	}
	if u.Auth.Type == "" {
		u.Auth.Type = defaultAuthType.String()
	}
	if u.Breaker == nil {
		u.Breaker = &configv1.Breaker{}
	}
	b := u.Breaker
	if b.Threshold == nil {
		v := defaultBreakerThreshold
		b.Threshold = &v
	}
	setU32(&b.Cooldown, defaultBreakerCooldown)
	if b.Window == "" {
		b.Window = defaultBreakerWindow
	}
	setU32(&b.MinRequests, defaultBreakerMinRequests)
	setU32(&b.HalfOpenProbes, defaultBreakerProbes)
}

func defaultGroup(g *configv1.UpstreamGroup) {
	if g == nil {
		return
	}
	for _, m := range g.GetUpstreams() {
		if m != nil {
			setU32(&m.Weight, defaultWeight)
		}
	}
	if g.Balance == nil {
		g.Balance = &configv1.Balance{}
	}
	if g.Balance.Strategy == "" {
		g.Balance.Strategy = defaultStrategy.String()
	}
	if g.HttpClient == nil {
		g.HttpClient = &configv1.HttpClient{}
	}
	hc := g.HttpClient
	setStr(&hc.Agent, defaultAgent)
	setU32(&hc.Keepalive, defaultKeepalive)
	setBool(&hc.Stream, defaultStream)
	if hc.Timeout == nil {
		hc.Timeout = &configv1.ClientTimeout{}
	}
	setU32(&hc.Timeout.Connect, defaultClientConnect)
	setU32(&hc.Timeout.Request, defaultClientRequest)
	setU32(&hc.Timeout.Idle, defaultClientIdle)
	if r := hc.Retry; r != nil {
		setU32(&r.Attempts, defaultRetryAttempts)
		setU32(&r.Initial, defaultRetryInitial)
		if r.MaxBackoff == "" {
			r.MaxBackoff = defaultRetryMaxBackoff
		}
		if len(r.RetryOn) == 0 {
			r.RetryOn = defaultRetryOn()
		}
	}
	if cc := g.Concurrency; cc != nil {
		setU32(&cc.Queue, defaultQueue)
		setBool(&cc.DropExcess, false)
		if cc.QueueTimeout == "" {
			cc.QueueTimeout = defaultQueueTimeout
		}
	}
	if ca := g.Cache; ca != nil {
		setBool(&ca.Enabled, false)
		if ca.Backend == "" {
			ca.Backend = defaultCacheBackend.String()
		}
		if ca.Ttl == "" {
			ca.Ttl = defaultCacheTTL
		}
		setU32(&ca.MaxObjectBytes, defaultCacheMaxObjectBytes)
		setU32(&ca.MaxBytes, defaultCacheMaxBytes)
		setBool(&ca.Shared, false)
	}
}

func setU32(p **uint32, v uint32) {
	if *p == nil {
		*p = &v
	}
}

func setStr(p **string, v string) {
	if *p == nil {
		*p = &v
	}
}

func setBool(p **bool, v bool) {
	if *p == nil {
		*p = &v
	}
}
