// Package config turns a validated configuration (validate.Model) into the proxy's
// compiled, immutable runtime form, applies it, and keeps the state that must outlive one
// configuration.
//
// Validation, defaults and ${env:NAME} references are controlplane/validate's (Parse); Build
// checks nothing again and cannot fail. It builds everything a request needs (routers,
// pickers, precomputed auth headers, retry policies, metric label children), so the request
// path does no parsing and no label lookups. A *Runtime is never modified after Build
// returns: any number of goroutines may read it.
//
// Applier is the protocol that makes a configuration the running one: parse, build, install
// (listeners, then the Holder), commit the Registry; a refused configuration leaves
// everything as it was.
//
// Holder publishes the current Runtime through one atomic pointer; a request loads it once
// and finishes on it even when a newer one is stored meanwhile.
//
// Registry keeps per-upstream breakers and balancer statistics, HTTP transports (connection
// pools), concurrency limiters and rate limiters across runtimes, keyed by identity:
// an upstream whose name, URL and breaker settings are unchanged keeps its breaker state; a
// group whose client settings are unchanged keeps its connection pool.
package config

import (
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/balancer"
	"github.com/llmproxy-go/llmproxy/proxy/breaker"
	"github.com/llmproxy-go/llmproxy/proxy/cache"
	"github.com/llmproxy-go/llmproxy/proxy/concurrency"
	"github.com/llmproxy-go/llmproxy/proxy/ratelimit"
	"github.com/llmproxy-go/llmproxy/proxy/router"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
	"github.com/llmproxy-go/llmproxy/proxy/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Runtime is one compiled configuration. It is immutable and safe for concurrent use.
type Runtime struct {
	// Revision identifies the configuration (the control plane's version, or whatever the
	// caller of Compile chose, e.g. a file hash). May be empty.
	Revision string
	// Source is the configuration as received with defaults applied; ${env:NAME}
	// references are kept unresolved, so redacting it is enough to show it. Callers must
	// not modify it.
	Source *configv1.Config
	// EnvOverrides lists the values of Source that came from LLMPROXY_ environment
	// variables (static mode, see configfile.File.WithEnv), from Options.EnvOverrides.
	EnvOverrides []configfile.Override
	// Forwards are the listeners, in configuration order.
	Forwards []*Forward
	// Groups are the upstream groups, in configuration order; Group.Index is the position.
	Groups []*Group
	// Metrics and Logger are the ones the runtime was compiled with (never nil).
	Metrics *telemetry.Metrics
	Logger  *slog.Logger
	// Warnings are what the runtime serves differently from its configuration (see Warning).
	Warnings []Warning

	forwards  map[string]*Forward
	state     *state                    // the long-lived entries the runtime uses (see Registry)
	keys      map[[32]byte]*ConsumerKey // SHA-256 of a key → the key (consumers.go)
	consumers []*Consumer
	pricing   []validate.Price
}

// Forward returns the forward named name, or nil.
func (rt *Runtime) Forward(name string) *Forward {
	if rt == nil {
		return nil
	}
	return rt.forwards[name]
}

// Forward is one compiled listener.
type Forward struct {
	// Name is the forward's unique name.
	Name string
	// Addr is the listen address, "host:port".
	Addr string
	// Router maps a request to a group index (Runtime.Groups); no match gives DefaultGroup.
	Router *router.Router
	// NeedsModel reports whether some route matches on the body's model, so the body must
	// be read before routing.
	NeedsModel bool
	// DefaultGroup is the index of the group used when no route matches.
	DefaultGroup int
	// RateLimit is the per-client limit; nil means none.
	RateLimit *RateLimit
	// MaxBodyBytes is the largest accepted request body.
	MaxBodyBytes int64
	// HeaderTimeout bounds the reading of a request's headers (the server's
	// ReadHeaderTimeout).
	HeaderTimeout time.Duration
	// TLS is the certificate the listener serves (forwards[].tls), read again when its
	// files change; nil: plaintext.
	TLS *tlsconfig.Pair
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (forwards[].trusted_proxies); empty: the peer is the client.
	TrustedProxies []netip.Prefix
	// ClientAuth says whether clients show a consumer's key (consumers.go).
	ClientAuth validate.ClientAuth
	// BodyTimeout bounds the reading of a request's body, from the end of its headers
	// (timeout.body); 0 means no bound.
	BodyTimeout time.Duration

	routes       map[string]*RouteMetrics
	defaultRoute *RouteMetrics
	// Errors counts proxy-made errors of this forward, by kind and status; see ErrorCounter.
	errors *prometheus.CounterVec
}

// Route returns the pre-resolved metrics of the route whose pattern the router returned
// ("" for the default route).
func (f *Forward) Route(pattern string) *RouteMetrics {
	if pattern == "" {
		return f.defaultRoute
	}
	if r := f.routes[pattern]; r != nil {
		return r
	}
	return f.defaultRoute
}

// ErrorCounter returns the llmproxy_http_request_errors_total child for this forward.
// Called only on error paths.
func (f *Forward) ErrorCounter(kind, status string) prometheus.Counter {
	return f.errors.WithLabelValues(f.Name, kind, status)
}

// methods are the HTTP methods whose metric children are resolved at compile time.
var methods = [...]string{http.MethodPost, http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead, http.MethodOptions}

// RouteMetrics holds the request counter and duration histogram children of one route of
// one forward.
type RouteMetrics struct {
	forward, pattern string
	requests         [len(methods)]prometheus.Counter
	duration         [len(methods)]prometheus.Observer
	m                *telemetry.Metrics
}

func newRouteMetrics(m *telemetry.Metrics, forward, pattern string) *RouteMetrics {
	label := pattern
	if label == "" {
		label = telemetry.PathDefault
	}
	r := &RouteMetrics{forward: forward, pattern: label, m: m}
	for i, meth := range methods {
		r.requests[i] = m.HTTPRequests.WithLabelValues(forward, meth, label)
		r.duration[i] = m.HTTPDuration.WithLabelValues(forward, meth, label)
	}
	return r
}

// Pattern is the route's path label ("default" for the default route).
func (r *RouteMetrics) Pattern() string { return r.pattern }

// MethodOther is the method label of a request whose method is none of those the proxy
// forwards (it was refused): a client cannot create label values at will.
const MethodOther = "OTHER"

// Observe counts one request of method that took d.
func (r *RouteMetrics) Observe(method string, d time.Duration) {
	for i, meth := range methods {
		if meth == method {
			r.requests[i].Inc()
			r.duration[i].Observe(d.Seconds())
			return
		}
	}
	r.m.HTTPRequests.WithLabelValues(r.forward, MethodOther, r.pattern).Inc()
	r.m.HTTPDuration.WithLabelValues(r.forward, MethodOther, r.pattern).Observe(d.Seconds())
}

// RateLimit is a forward's compiled per-client limit.
type RateLimit struct {
	// Limiter decides; it is shared with other runtimes while the settings are unchanged.
	Limiter ratelimit.Limiter
	// Header is the canonical header whose value is the client key; "" keys by client IP.
	Header string
	// Rejected counts refused requests (llmproxy_ratelimit_total child).
	Rejected prometheus.Counter
}

// Group is one compiled upstream group.
type Group struct {
	// Name is the group's unique name; Index its position in Runtime.Groups.
	Name  string
	Index int
	// Members are the group's upstreams in configuration order; Picker indexes into them.
	Members []*Member
	Picker  balancer.Picker
	// Retry is the retry policy; nil means no retries.
	Retry *RetryPolicy
	// ConnectTimeout, RequestTimeout and IdleTimeout are the client timeouts. RequestTimeout
	// bounds the whole exchange only when Stream is false. IdleTimeout bounds the silence
	// between two reads of a response body.
	ConnectTimeout, RequestTimeout, IdleTimeout time.Duration
	// Stream is the http_client.stream flag.
	Stream bool
	// Agent is the User-Agent sent upstream.
	Agent string
	// Transport sends the group's upstream requests; shared by runtimes and groups with the
	// same client settings.
	Transport *upstream.Client
	// Limiter caps in-flight upstream requests; nil means no limit.
	Limiter *concurrency.Limiter
	// Cache is the group's response cache; nil means none (disabled, or its backend is
	// missing here: see Runtime.Warnings).
	Cache *cache.Cache

	// QueueDepth, DroppedFull and DroppedTimeout are metric children of the group.
	QueueDepth                  prometheus.Gauge
	DroppedFull, DroppedTimeout prometheus.Counter
	retries                     *prometheus.CounterVec
}

// RetryCounter returns the llmproxy_retries_total child for reason (a status code or
// connect_error / reset / timeout). Called only when retrying.
func (g *Group) RetryCounter(reason string) prometheus.Counter {
	return g.retries.WithLabelValues(g.Name, reason)
}

// HeaderOpKind is what a HeaderOp does; the configuration contract owns the kinds.
type HeaderOpKind = validate.HeaderOpKind

// Header operations.
const (
	// HeaderInsert sets the header only when the request does not have it.
	HeaderInsert = validate.HeaderInsert
	// HeaderReplace sets the header, replacing any value.
	HeaderReplace = validate.HeaderReplace
	// HeaderRemove deletes the header.
	HeaderRemove = validate.HeaderRemove
)

// HeaderOp is one compiled header operation; Key is in canonical form.
type HeaderOp struct {
	Op    HeaderOpKind
	Key   string
	Value string
}

// Member is one upstream inside one group.
type Member struct {
	// Name is the upstream's name.
	Name string
	// URL is the parsed base URL; RawURL the configured string (env resolved).
	URL    *url.URL
	RawURL string
	// Weight is the member's weight in the group.
	Weight int
	// Auth is the Authorization value sent upstream ("Bearer …", "Basic …"); "" means the
	// client's Authorization passes through (auth type none).
	Auth string
	// HeaderOps apply in order to every request sent to this upstream.
	HeaderOps []HeaderOp
	// Breaker and Stats belong to the upstream (shared by the groups it is in, and kept
	// across runtimes while its identity is unchanged).
	Breaker *breaker.Breaker
	Stats   *balancer.Stats

	// Metric children, resolved at compile time.
	Requests                          prometheus.Counter
	Duration                          prometheus.Observer
	BreakerSuccess, BreakerFailure    prometheus.Counter
	BreakerRejected                   prometheus.Counter
	PromptTokens, CompletionTokens    prometheus.Counter
	RateLimited                       prometheus.Counter // answers with status 429
	errConnect, errTimeout, errStatus prometheus.Counter
	errStream, errOther, errReset     prometheus.Counter
}

// Upstream error kinds, the error label of llmproxy_upstream_errors_total.
const (
	UpstreamErrConnect = "connect_error"
	// UpstreamErrReset: the connection was lost after the request was written.
	UpstreamErrReset   = "reset"
	UpstreamErrTimeout = "timeout"
	UpstreamErrStatus  = "status_5xx"
	UpstreamErrStream  = "stream_broken"
	UpstreamErrOther   = "other"
)

// ErrorCounter returns the upstream error counter child for kind (one of the
// UpstreamErr… constants; anything else counts as other).
func (m *Member) ErrorCounter(kind string) prometheus.Counter {
	switch kind {
	case UpstreamErrConnect:
		return m.errConnect
	case UpstreamErrReset:
		return m.errReset
	case UpstreamErrTimeout:
		return m.errTimeout
	case UpstreamErrStatus:
		return m.errStatus
	case UpstreamErrStream:
		return m.errStream
	}
	return m.errOther
}

// RetryPolicy is a group's compiled retry policy.
type RetryPolicy struct {
	// Attempts is the number of retries after the first try.
	Attempts int
	// Initial is the first backoff; MaxBackoff caps every backoff, Retry-After included.
	Initial, MaxBackoff time.Duration
	// ConnectError, Reset and Timeout report whether those failures are retried.
	ConnectError, Reset, Timeout bool
	on                           validate.RetryOn
}

// RetryStatus reports whether an upstream answer with status code is retried.
func (p *RetryPolicy) RetryStatus(code int) bool { return p.on.Status(code) }
