// Package telemetry holds the proxy's Prometheus collectors and its OpenTelemetry tracing
// setup. It is a leaf: it imports none of the proxy's other packages.
//
// Every collector lives on the Metrics value's own *prometheus.Registry; nothing is
// registered globally, so several proxies (or tests) can share one process. Label children
// that are known when a configuration is compiled (forward, route pattern, group, upstream)
// should be resolved once with WithLabelValues and kept in the compiled configuration, so a
// request does no label-map lookups.
package telemetry

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values used by several collectors.
const (
	// PathDefault is the path label of a request that matched no route.
	PathDefault = "default"
	// TokenPrompt and TokenCompletion are the type label values of TokensTotal.
	TokenPrompt     = "prompt"
	TokenCompletion = "completion"
	// Breaker call results (CircuitBreakerCalls' result label).
	ResultSuccess  = "success"
	ResultFailure  = "failure"
	ResultRejected = "rejected"
)

// Metrics holds every collector of the proxy. All fields are set by NewMetrics and safe for
// concurrent use. A nil *Metrics is not valid; tests that do not care pass NewMetrics().
type Metrics struct {
	// Registry holds every collector below plus the Go runtime and process collectors.
	Registry *prometheus.Registry

	// HTTPRequests counts client requests by forward, method and route pattern
	// ("default" when no route matched; never the raw path).
	HTTPRequests *prometheus.CounterVec
	// HTTPDuration observes whole client requests by forward, method and route pattern.
	HTTPDuration *prometheus.HistogramVec
	// HTTPErrors counts requests that ended with an error made by the proxy, by forward,
	// error kind (see the forward package) and status.
	HTTPErrors *prometheus.CounterVec
	// RateLimited counts requests refused by a forward's rate limit.
	RateLimited *prometheus.CounterVec

	// UpstreamRequests counts upstream attempts by group and upstream.
	UpstreamRequests *prometheus.CounterVec
	// UpstreamDuration observes attempts up to the response headers, by group and upstream.
	UpstreamDuration *prometheus.HistogramVec
	// UpstreamErrors counts failed attempts by error kind, group and upstream.
	UpstreamErrors *prometheus.CounterVec
	// UpstreamRateLimited counts upstream answers with status 429 by group and upstream.
	UpstreamRateLimited *prometheus.CounterVec

	// BreakerStateChanges counts breaker transitions. Breakers belong to upstreams, not to
	// groups (one upstream in two groups has one breaker), so the group label is always
	// empty; it is kept for compatibility with LLMProxy's metric.
	BreakerStateChanges *prometheus.CounterVec
	// BreakerCalls counts breaker decisions per attempt by group, upstream, url and result
	// (success, failure, rejected).
	BreakerCalls *prometheus.CounterVec
	// BreakerState is each upstream's breaker state: 0 closed, 1 open, 2 half-open.
	BreakerState *prometheus.GaugeVec

	// CacheHits and CacheMisses count response-cache lookups by group (a hit answered from
	// the cache; a miss went upstream). CacheBypasses counts cacheable requests that skipped
	// the cache (request no-store or no-cache, a method other than GET and POST);
	// CacheCoalesced requests answered with an identical request's answer in flight;
	// CacheStores answers stored; CacheEvictions entries a memory cache evicted to stay
	// within max_bytes; CacheBackendErrors lookups and stores a backend failed or did not
	// answer in time.
	CacheHits          *prometheus.CounterVec
	CacheMisses        *prometheus.CounterVec
	CacheBypasses      *prometheus.CounterVec
	CacheCoalesced     *prometheus.CounterVec
	CacheStores        *prometheus.CounterVec
	CacheEvictions     *prometheus.CounterVec
	CacheBackendErrors *prometheus.CounterVec
	// CacheBytes is the bytes a group's memory cache holds.
	CacheBytes *prometheus.GaugeVec
	// CacheBackendUp is 1 while a group's cache backend is usable, 0 when it is down or
	// missing (backend redis on a proxy without --redis: the group is served uncached).
	CacheBackendUp *prometheus.GaugeVec
	// CacheTokens counts the tokens of answers served from the cache, by group and type
	// (prompt, completion); Tokens counts only tokens an upstream produced.
	CacheTokens *prometheus.CounterVec

	// QueueDepth is the number of requests waiting for a group's concurrency slot.
	QueueDepth *prometheus.GaugeVec
	// RequestsDropped counts requests a group's concurrency limit refused, by reason
	// (queue_full, queue_timeout).
	RequestsDropped *prometheus.CounterVec
	// Retries counts retries by group and reason (a status code, connect_error, timeout).
	Retries *prometheus.CounterVec
	// Tokens counts prompt and completion tokens read from upstream answers.
	Tokens *prometheus.CounterVec
	// ConfigVersion is the applied configuration's revision when it is numeric.
	ConfigVersion prometheus.Gauge
	// AccessLogDropped counts access-log lines dropped because the log's output could not
	// keep up or failed.
	AccessLogDropped prometheus.Counter

	// Models counts client requests and tokens per requested model for the control-plane
	// reports; it is not exported to Prometheus (model names come from clients).
	Models *UsageTable

	// Consumers counts identified consumers' requests and tokens for the control-plane
	// reports.
	Consumers *UsageTable
	// ConsumerRequests counts identified consumers' requests by consumer, model (bounded per
	// consumer, see ConsumerModelLabels) and status.
	ConsumerRequests *prometheus.CounterVec
	// ConsumerTokens counts their tokens by consumer, model and type (prompt, completion).
	ConsumerTokens *prometheus.CounterVec
	// ConsumerSpend counts their spend in US dollars by consumer and model, as priced by
	// the configuration's pricing list.
	ConsumerSpend *prometheus.CounterVec
	// ConsumerRefusals counts requests refused by client auth or a consumer's limits, by
	// consumer ("" when none was identified) and reason.
	ConsumerRefusals *prometheus.CounterVec
	// ConsumerLimitFallbacks counts limit decisions and charges made in the process because
	// Redis could not be asked.
	ConsumerLimitFallbacks prometheus.Counter
	// ConsumerInfo exports each consumer's labels (llmproxy_consumer_info).
	ConsumerInfo *InfoCollector
}

// ConsumerModelLabels is how many distinct model label values the consumer metrics keep per
// consumer; further models are counted under UsageOther.
const ConsumerModelLabels = 32

// durationBuckets span fast non-stream answers to long generations.
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// NewMetrics creates every collector on a fresh registry, with the Go and process
// collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg, Models: NewUsageTable(0), Consumers: NewUsageTable(0)}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets}, labels)
		reg.MustRegister(h)
		return h
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		reg.MustRegister(g)
		return g
	}
	m.HTTPRequests = counter("llmproxy_http_requests_total", "Client requests by forward, method and route pattern.", "forward", "method", "path")
	m.HTTPDuration = histogram("llmproxy_http_request_duration_seconds", "Client request duration in seconds.", "forward", "method", "path")
	m.HTTPErrors = counter("llmproxy_http_request_errors_total", "Requests that ended with an error made by the proxy.", "forward", "error", "status")
	m.RateLimited = counter("llmproxy_ratelimit_total", "Requests refused by a forward's rate limit.", "forward")
	m.UpstreamRequests = counter("llmproxy_upstream_requests_total", "Upstream attempts.", "group", "upstream")
	m.UpstreamDuration = histogram("llmproxy_upstream_duration_seconds", "Upstream attempt duration up to the response headers, in seconds.", "group", "upstream")
	m.UpstreamErrors = counter("llmproxy_upstream_errors_total", "Failed upstream attempts by error kind.", "error", "group", "upstream")
	m.UpstreamRateLimited = counter("llmproxy_upstream_rate_limited_total", "Upstream answers with status 429.", "group", "upstream")
	m.BreakerStateChanges = counter("llmproxy_circuitbreaker_state_changes_total", "Circuit breaker transitions (group is empty: breakers are per upstream).", "group", "upstream", "url", "from", "to")
	m.BreakerCalls = counter("llmproxy_circuitbreaker_calls_total", "Circuit breaker decisions per attempt.", "group", "upstream", "url", "result")
	m.BreakerState = gauge("llmproxy_circuitbreaker_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open.", "upstream")
	m.CacheHits = counter("llmproxy_cache_hits_total", "Response cache hits.", "group")
	m.CacheMisses = counter("llmproxy_cache_misses_total", "Response cache misses.", "group")
	m.CacheBypasses = counter("llmproxy_cache_bypasses_total", "Requests that skipped the response cache.", "group")
	m.CacheCoalesced = counter("llmproxy_cache_coalesced_total", "Requests answered with an identical request's answer in flight.", "group")
	m.CacheStores = counter("llmproxy_cache_stores_total", "Answers stored in the response cache.", "group")
	m.CacheEvictions = counter("llmproxy_cache_evictions_total", "Entries evicted from a memory cache to stay within max_bytes.", "group")
	m.CacheBackendErrors = counter("llmproxy_cache_backend_errors_total", "Cache lookups and stores that failed or timed out.", "group")
	m.CacheBytes = gauge("llmproxy_cache_bytes", "Bytes held by a group's memory cache.", "group")
	m.CacheBackendUp = gauge("llmproxy_cache_backend_up", "1 while a group's cache backend is usable, 0 when it is down or missing.", "group")
	m.CacheTokens = counter("llmproxy_cache_tokens_total", "Tokens of answers served from the response cache.", "group", "type")
	m.QueueDepth = gauge("llmproxy_queue_depth", "Requests waiting for a concurrency slot.", "group")
	m.RequestsDropped = counter("llmproxy_requests_dropped_total", "Requests refused by a group's concurrency limit.", "group", "reason")
	m.Retries = counter("llmproxy_retries_total", "Upstream retries by reason.", "group", "reason")
	m.Tokens = counter("llmproxy_tokens_total", "Tokens read from upstream answers.", "group", "upstream", "type")
	m.ConsumerRequests = counter("llmproxy_consumer_requests_total", "Requests of identified consumers by model and status.", "consumer", "model", "status")
	m.ConsumerTokens = counter("llmproxy_consumer_tokens_total", "Tokens of identified consumers, read from upstream answers.", "consumer", "model", "type")
	m.ConsumerSpend = counter("llmproxy_consumer_spend_usd_total", "Spend of identified consumers in US dollars, priced by the pricing list.", "consumer", "model")
	m.ConsumerRefusals = counter("llmproxy_consumer_refusals_total", "Requests refused by client auth or a consumer's limits, by reason.", "consumer", "reason")
	m.ConsumerLimitFallbacks = prometheus.NewCounter(prometheus.CounterOpts{Name: "llmproxy_consumer_limits_fallback_total",
		Help: "Consumer limit decisions and charges made in the process because Redis could not be asked."})
	reg.MustRegister(m.ConsumerLimitFallbacks)
	m.ConsumerInfo = NewInfoCollector("llmproxy_consumer_info", "Labels of each consumer (value 1); join on consumer.", "consumer")
	reg.MustRegister(m.ConsumerInfo)
	m.ConfigVersion = prometheus.NewGauge(prometheus.GaugeOpts{Name: "llmproxy_config_version", Help: "Revision of the applied configuration (when numeric)."})
	reg.MustRegister(m.ConfigVersion)
	m.AccessLogDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "llmproxy_access_log_dropped_total", Help: "Access-log lines dropped because the log's output could not keep up or failed."})
	reg.MustRegister(m.AccessLogDropped)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
