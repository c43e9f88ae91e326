package config

import (
	"crypto/sha256"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	"github.com/llmproxy-go/llmproxy/proxy/quota"
	"github.com/llmproxy-go/llmproxy/proxy/redisguard"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// Consumers: a runtime maps the SHA-256 of every key to its consumer, so identifying a
// request is one hash and one map lookup. A consumer's limits are held by a quota.Limiter
// over counters that outlive configurations (the registry keeps them by consumer name):
// changing a consumer's limits keeps what it has used.
//
// Metric labels: consumer names are configuration, so they are labels. Models come from
// clients, so each consumer keeps at most telemetry.ConsumerModelLabels model values and
// counts further models under telemetry.UsageOther. Consumers' free-form labels go to one
// info metric, llmproxy_consumer_info, not onto every series: join on consumer.

// Consumer is one compiled consumer. It is immutable and safe for concurrent use.
type Consumer struct {
	// Name is the consumer's unique name.
	Name string
	// Models are the model globs the consumer may ask for; empty: any.
	Models []*route.Glob
	// Limiter holds the consumer to its limits; nil when it has none.
	Limiter *quota.Limiter
	// Labels are the consumer's labels, as configured.
	Labels map[string]string
	// Attributes go on the spans of the consumer's requests: llmproxy.consumer and
	// llmproxy.consumer.<label> for each label.
	Attributes []attribute.KeyValue

	forwards map[string]bool // nil: every forward
	models   *modelLabels
	requests *prometheus.CounterVec // curried: model, status
	tokens   *prometheus.CounterVec // curried: model, type
	spend    *prometheus.CounterVec // curried: model
	refusals *prometheus.CounterVec // curried: reason
	usage    *telemetry.UsageTable
}

// ConsumerKey is one valid-looking key: its consumer, and what may still refuse it.
type ConsumerKey struct {
	Consumer *Consumer
	// ID is the key's id within its consumer.
	ID string
	// ExpiresAt is when the key stops being valid; zero: never.
	ExpiresAt time.Time
	// Disabled keys are refused.
	Disabled bool
}

// Expired reports whether the key has expired at now.
func (k *ConsumerKey) Expired(now time.Time) bool {
	return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt)
}

// ConsumerKey returns the consumer key whose SHA-256 is that of key, or nil. It hashes key
// once and looks it up once; it does not allocate.
func (rt *Runtime) ConsumerKey(key string) *ConsumerKey {
	if rt == nil || len(rt.keys) == 0 {
		return nil
	}
	return rt.keys[sha256.Sum256(unsafe.Slice(unsafe.StringData(key), len(key)))]
}

// Price returns the spend of a request for model with the given tokens, in millionths of a
// US dollar, from the first pricing entry whose glob matches model; 0 when none does.
func (rt *Runtime) Price(model string, prompt, completion int64) int64 {
	for _, p := range rt.pricing {
		if p.Model.Match(model) {
			return int64(math.Round(float64(prompt)*p.InputPerMillion + float64(completion)*p.OutputPerMillion))
		}
	}
	return 0
}

// Refused counts a request refused before a consumer was identified (no key, unknown key).
func (rt *Runtime) Refused(reason string) {
	rt.Metrics.ConsumerRefusals.WithLabelValues("", reason).Inc()
}

// MayUse reports whether the consumer may use the forward named forward.
func (c *Consumer) MayUse(forward string) bool { return c.forwards == nil || c.forwards[forward] }

// MayAsk reports whether the consumer may ask for model. A request without a model (""),
// such as GET /v1/models, is not checked.
func (c *Consumer) MayAsk(model string) bool {
	if len(c.Models) == 0 || model == "" {
		return true
	}
	for _, g := range c.Models {
		if g.Match(model) {
			return true
		}
	}
	return false
}

// Refused counts a request of the consumer refused for reason.
func (c *Consumer) Refused(reason string) { c.refusals.WithLabelValues(reason).Inc() }

// Record counts one finished request of the consumer: its model, status, tokens and spend
// (micro-USD).
func (c *Consumer) Record(model string, status int, prompt, completion, spendMicros int64) {
	label := c.models.label(model)
	c.requests.WithLabelValues(label, strconv.Itoa(status)).Inc()
	if prompt > 0 {
		c.tokens.WithLabelValues(label, telemetry.TokenPrompt).Add(float64(prompt))
	}
	if completion > 0 {
		c.tokens.WithLabelValues(label, telemetry.TokenCompletion).Add(float64(completion))
	}
	if spendMicros > 0 {
		c.spend.WithLabelValues(label).Add(float64(spendMicros) / 1e6)
	}
	c.usage.Record(c.Name, status >= 500, prompt, completion)
}

// modelLabels is the bounded set of model label values of one consumer; it outlives
// configurations (the registry keeps it by consumer name). label reads without a lock.
type modelLabels struct {
	cur atomic.Pointer[map[string]struct{}]
	mu  sync.Mutex
}

func newModelLabels() *modelLabels {
	l := &modelLabels{}
	m := map[string]struct{}{}
	l.cur.Store(&m)
	return l
}

// label returns model when the set holds it or has room for it, else UsageOther.
func (l *modelLabels) label(model string) string {
	if _, ok := (*l.cur.Load())[model]; ok {
		return model
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.cur.Load()
	if _, ok := old[model]; ok {
		return model
	}
	if len(old) >= telemetry.ConsumerModelLabels {
		return telemetry.UsageOther
	}
	next := make(map[string]struct{}, len(old)+1)
	for k := range old {
		next[k] = struct{}{}
	}
	next[model] = struct{}{}
	l.cur.Store(&next)
	return model
}

// consumerState is what outlives configurations for one consumer name.
type consumerState struct {
	local  *quota.Local
	models *modelLabels
}

// sharedKey identifies the Redis store of the consumer counters.
type sharedKey struct {
	client  any
	timeout time.Duration
}

// quotaKeyPrefix starts the Redis keys of consumer counters.
const quotaKeyPrefix = "llmproxy:consumer:"

func (b *builder) consumerState(name string) *consumerState {
	return entry(b, name, func(s *state) map[string]*consumerState { return s.consumers }, func() *consumerState {
		return &consumerState{local: quota.NewLocal(nil), models: newModelLabels()}
	})
}

func (b *builder) shared() *quota.Shared {
	if b.opts.Redis == nil {
		return nil
	}
	k := sharedKey{b.opts.Redis, b.opts.RedisTimeout}
	return entry(b, k, func(s *state) map[sharedKey]*quota.Shared { return s.shared }, func() *quota.Shared {
		if b.opts.RedisGuard != nil {
			// The client's one guard: its breaker and logs cover the rate limits too.
			return quota.NewShared(b.opts.Redis, quotaKeyPrefix, b.opts.RedisGuard)
		}
		// A guard of the consumer counters' own: the same deadline and breaker, logged.
		return quota.NewShared(b.opts.Redis, quotaKeyPrefix, redisguard.New(redisguard.Options{Timeout: k.timeout, Logger: b.opts.Logger}))
	})
}

// consumers compiles the model's consumers and pricing into rt.
func (b *builder) consumers(m *validate.Model, rt *Runtime) {
	rt.pricing = m.Pricing
	if len(m.Consumers) == 0 {
		return
	}
	rt.keys = make(map[[32]byte]*ConsumerKey)
	shared := b.shared()
	mm := b.m
	fallback := func() { mm.ConsumerLimitFallbacks.Inc() }
	for _, c := range m.Consumers {
		st := b.consumerState(c.Name)
		label := prometheus.Labels{"consumer": c.Name}
		cs := &Consumer{
			Name:       c.Name,
			Models:     c.Models,
			Labels:     c.Labels,
			Attributes: []attribute.KeyValue{attribute.String("llmproxy.consumer", c.Name)},
			models:     st.models,
			requests:   mm.ConsumerRequests.MustCurryWith(label),
			tokens:     mm.ConsumerTokens.MustCurryWith(label),
			spend:      mm.ConsumerSpend.MustCurryWith(label),
			refusals:   mm.ConsumerRefusals.MustCurryWith(label),
			usage:      mm.Consumers,
		}
		for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
			cs.Attributes = append(cs.Attributes, attribute.String("llmproxy.consumer."+k, c.Labels[k]))
		}
		if len(c.Forwards) > 0 {
			cs.forwards = make(map[string]bool, len(c.Forwards))
			for _, i := range c.Forwards {
				cs.forwards[m.Forwards[i].Name] = true
			}
		}
		if l := limitsOf(c.Limits); !l.None() {
			cs.Limiter = quota.NewLimiter(c.Name, l, st.local, shared, fallback)
		}
		for _, k := range c.Keys {
			rt.keys[k.Hash] = &ConsumerKey{Consumer: cs, ID: k.ID, ExpiresAt: k.ExpiresAt, Disabled: k.Disabled}
		}
		rt.consumers = append(rt.consumers, cs)
	}
}

// limitsOf converts a consumer's configured limits.
func limitsOf(l validate.Limits) quota.Limits {
	q := quota.Limits{
		RequestsPerMinute: l.RequestsPerMinute,
		TokensPerMinute:   l.TokensPerMinute,
		TokensPerDay:      l.TokensPerDay,
		MaxParallel:       l.MaxParallel,
		Period:            quota.Month,
	}
	if b := l.Budget; b != nil {
		q.BudgetMicros = int64(math.Round(b.USD * 1e6))
		switch b.Period {
		case validate.BudgetDay:
			q.Period = quota.Day
		case validate.BudgetWeek:
			q.Period = quota.Week
		}
	}
	return q
}
