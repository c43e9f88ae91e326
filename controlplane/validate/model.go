package validate

import (
	"net/netip"
	"net/url"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Model is a configuration that passed validation, in the form a proxy uses: every default
// applied, every ${env:NAME} reference resolved, durations parsed, URLs parsed, enumerations
// resolved, retry_on as a set, references as indexes. Parse builds it; a proxy compiles it
// without checking anything again. A Model is never modified after Parse returns: any number
// of goroutines may read it.
type Model struct {
	// Source is the configuration the model was parsed from, with defaults applied and
	// ${env:NAME} references kept unresolved, so redacting it is enough to show it.
	Source *configv1.Config
	// Forwards are the listeners, in configuration order.
	Forwards []*Forward
	// Upstreams are the upstreams, in configuration order; Member.Upstream indexes them.
	Upstreams []*Upstream
	// Groups are the upstream groups, in configuration order; Forward.DefaultGroup and
	// Route.Group index them.
	Groups []*Group
	// Admin is the admin listener of a configuration file (http_server.admin); nil when the
	// block is absent.
	Admin *Listener
	// Consumers are the consumers, in configuration order.
	Consumers []*Consumer
	// Pricing is the price list, in configuration order: the first entry whose glob matches
	// a model prices it.
	Pricing []Price
}

// Listener is a bound address.
type Listener struct {
	// Addr is "host:port".
	Addr string
	// HeaderTimeout bounds the reading of a request's headers (timeout.connect).
	HeaderTimeout time.Duration
}

// Forward is one listener of the proxy (http_server.forwards[]).
type Forward struct {
	// Name is the forward's unique name.
	Name string
	Listener
	// DefaultGroup is the index in Model.Groups of the group used when no route matches.
	DefaultGroup int
	// Routes are the routing rules in configuration order.
	Routes []Route
	// RateLimit is the per-client limit; nil when the block is absent or not enabled.
	RateLimit *RateLimit
	// MaxBodyBytes is the largest accepted request body.
	MaxBodyBytes int64
	// BodyTimeout bounds the reading of a request's body, from the end of its headers
	// (timeout.body).
	BodyTimeout time.Duration
	// TLS names the certificate the forward serves; nil: plaintext.
	TLS *ServerTLS
	// TrustedProxies are the peers whose X-Forwarded-For names the client; empty: the peer
	// is the client.
	TrustedProxies []netip.Prefix
	// ClientAuth says whether clients show a consumer's key.
	ClientAuth ClientAuth
}

// ServerTLS names a listener's certificate files (forwards[].tls), read by the proxy.
type ServerTLS struct {
	// Cert is the PEM file of the certificate (intermediates after it); Key its private key.
	Cert, Key string
}

// Route is one routing rule of a forward.
type Route struct {
	// Pattern is the parsed path pattern.
	Pattern *route.Pattern
	// Model is the parsed model glob; nil means any model.
	Model *route.Glob
	// Headers are exact header matches, name to value, as configured. Empty: any.
	Headers map[string]string
	// Methods are the HTTP methods the rule takes, as configured. Empty: any.
	Methods []string
	// Group is the index in Model.Groups of the target group.
	Group int
}

// RateLimit is a forward's enabled per-client rate limit.
type RateLimit struct {
	// PerSecond is the sustained rate, requests per second per client; Burst the most at
	// once.
	PerSecond, Burst int
	// Header is the canonical name of the header whose value identifies a client; "" keys
	// clients by IP address.
	Header string
	// Scope says whether proxies share the counters (through Redis) or keep their own.
	Scope RateScope
}

// Upstream is one upstream server (upstreams[]).
type Upstream struct {
	// Name is the upstream's unique name.
	Name string
	// URL is the parsed base URL; RawURL is the configured string.
	URL    *url.URL
	RawURL string
	// Auth is the credential sent upstream.
	Auth Auth
	// Headers are the header operations, in order.
	Headers []HeaderOp
	// Breaker is the upstream's circuit breaker.
	Breaker Breaker
}

// Auth is an upstream's credential. Token is set for AuthBearer, Username and Password for
// AuthBasic.
type Auth struct {
	Type                      AuthType
	Token, Username, Password string
}

// HeaderOp is one header operation on requests sent to an upstream.
type HeaderOp struct {
	Op HeaderOpKind
	// Key is the header name in canonical form.
	Key string
	// Value is the value for HeaderInsert and HeaderReplace.
	Value string
}

// Breaker is an upstream's circuit breaker settings.
type Breaker struct {
	// Threshold is the failure rate (0.01-1) over Window that opens the breaker once
	// MinRequests calls were seen.
	Threshold float64
	// Cooldown is how long the breaker stays open before letting probes through.
	Cooldown time.Duration
	// Window is the sliding window of the failure rate.
	Window time.Duration
	// MinRequests is the fewest calls in the window before the rate is judged.
	MinRequests int
	// HalfOpenProbes is how many probes run at once while half-open.
	HalfOpenProbes int
}

// Group is one upstream group (upstream_groups[]).
type Group struct {
	// Name is the group's unique name.
	Name string
	// Members are the group's upstreams, in configuration order.
	Members []Member
	// Strategy picks a member for each attempt.
	Strategy Strategy
	// Client is the group's HTTP client settings.
	Client Client
	// Retry is the retry policy; nil means no retries.
	Retry *Retry
	// Concurrency caps in-flight upstream requests; nil means no cap.
	Concurrency *Concurrency
	// Cache is the response cache block; nil when absent.
	Cache *Cache
}

// Member is one upstream of a group.
type Member struct {
	// Upstream is the index in Model.Upstreams.
	Upstream int
	// Weight is the member's weight (1-65535).
	Weight int
}

// Client is a group's HTTP client settings.
type Client struct {
	// Agent is the User-Agent sent upstream.
	Agent string
	// Keepalive is the TCP keep-alive period of upstream connections.
	Keepalive time.Duration
	// ConnectTimeout bounds a connection's setup; RequestTimeout a whole exchange (unless
	// Stream); IdleTimeout the silence between two reads, and an idle pooled connection.
	ConnectTimeout, RequestTimeout, IdleTimeout time.Duration
	// Stream is http_client.stream: no total timeout on an exchange.
	Stream bool
	// Proxy is the outbound proxy; nil means direct connections.
	Proxy *url.URL
	// CA is the PEM file of the CAs upstream certificates must chain to
	// (http_client.tls.ca); "" means the system's.
	CA string
}

// Retry is a group's retry policy.
type Retry struct {
	// Attempts is the number of retries after the first try (at least 1).
	Attempts int
	// Initial is the first backoff; MaxBackoff caps every backoff.
	Initial, MaxBackoff time.Duration
	// On is what is retried.
	On RetryOn
}

// RetryOn is the set of conditions a retry_on list names: connect errors, connections
// lost after the request was written (reset), timeouts and HTTP status codes. The zero
// value retries nothing.
type RetryOn struct {
	// ConnectError, Reset and Timeout report whether those failures are retried.
	ConnectError, Reset, Timeout bool
	statuses                     [10]uint64 // a bit per status code 0-639
}

// Status reports whether an answer with status code is retried.
func (r *RetryOn) Status(code int) bool {
	if code < 0 || code >= 640 {
		return false
	}
	return r.statuses[code>>6]&(1<<(uint(code)&63)) != 0
}

func (r *RetryOn) addStatus(code int) {
	r.statuses[code>>6] |= 1 << (uint(code) & 63)
}

// Concurrency caps a group's in-flight upstream requests.
type Concurrency struct {
	// Max is the most in-flight requests; Queue the most waiting ones.
	Max, Queue int
	// DropExcess refuses at once when the queue is full.
	DropExcess bool
	// QueueTimeout bounds a request's wait in the queue.
	QueueTimeout time.Duration
}

// Cache is a group's response cache settings.
type Cache struct {
	Enabled bool
	Backend CacheBackend
	// TTL is how long an answer is kept.
	TTL time.Duration
	// MaxObjectBytes is the largest answer stored; MaxBytes the size of the whole store.
	MaxObjectBytes, MaxBytes int64
	// Shared shares entries across client credentials.
	Shared bool
	// Epoch is the cache epoch: part of every key, raised by a purge.
	Epoch uint64
}

// Consumer is one consumer (consumers[]).
type Consumer struct {
	// Name is the consumer's unique name.
	Name string
	// Keys are the consumer's API keys, in configuration order.
	Keys []ConsumerKey
	// Models are the model globs the consumer may ask for; empty: any model.
	Models []*route.Glob
	// Forwards are the indexes in Model.Forwards of the forwards the consumer may use;
	// empty: every forward.
	Forwards []int
	// Limits are the consumer's limits; every zero field is no limit.
	Limits Limits
	// Labels are the consumer's labels, as configured.
	Labels map[string]string
}

// ConsumerKey is one API key of a consumer, known by its SHA-256 digest.
type ConsumerKey struct {
	// ID identifies the key within its consumer.
	ID string
	// Hash is the SHA-256 of the key's bytes.
	Hash [32]byte
	// ExpiresAt is when the key stops being valid; zero: never.
	ExpiresAt time.Time
	// Disabled keys are refused.
	Disabled bool
}

// Limits are a consumer's limits; a zero field is no limit.
type Limits struct {
	RequestsPerMinute int64
	TokensPerMinute   int64
	TokensPerDay      int64
	MaxParallel       int64
	// Budget is the spend cap; nil: none.
	Budget *Budget
}

// Budget is a consumer's spend cap per calendar period (UTC).
type Budget struct {
	USD    float64
	Period BudgetPeriod
}

// Price is one entry of the price list, in US dollars per million tokens.
type Price struct {
	// Model is the parsed model glob.
	Model                             *route.Glob
	InputPerMillion, OutputPerMillion float64
}

// The enumerations the configuration spells as strings. Each has one table of names, in
// documentation order, indexed by its values; String returns the name.
type (
	// Strategy is a group's balancing strategy (balance.strategy).
	Strategy uint8
	// AuthType is an upstream's credential kind (auth.type).
	AuthType uint8
	// HeaderOpKind is what a header operation does (headers[].op).
	HeaderOpKind uint8
	// RateScope says where rate-limit counters live (ratelimit.scope).
	RateScope uint8
	// CacheBackend is where cached answers live (cache.backend).
	CacheBackend uint8
	// ClientAuth says whether a forward's clients show a consumer's key (client_auth).
	ClientAuth uint8
	// BudgetPeriod is the calendar period of a consumer's budget (budget.period).
	BudgetPeriod uint8
)

// Balancing strategies.
const (
	StrategyRoundRobin Strategy = iota
	StrategyWeightedRoundRobin
	StrategyRandom
	StrategyResponseAware
	StrategyFailover
	StrategyLeastBusy
)

// Credential kinds.
const (
	AuthNone AuthType = iota
	AuthBearer
	AuthBasic
)

// Header operations.
const (
	// HeaderInsert sets the header only when the request does not have it.
	HeaderInsert HeaderOpKind = iota
	// HeaderReplace sets the header, replacing any value.
	HeaderReplace
	// HeaderRemove deletes the header.
	HeaderRemove
)

// Rate-limit scopes.
const (
	// ScopeLocal keeps counters per proxy.
	ScopeLocal RateScope = iota
	// ScopeGlobal shares counters between proxies through Redis.
	ScopeGlobal
)

// Cache backends.
const (
	CacheMemory CacheBackend = iota
	CacheRedis
)

// Client authentication modes.
const (
	// ClientAuthOff reads no key: client headers pass through.
	ClientAuthOff ClientAuth = iota
	// ClientAuthOptional identifies the consumer of a request that shows a key.
	ClientAuthOptional
	// ClientAuthRequired refuses a request without a valid key.
	ClientAuthRequired
)

// Budget periods.
const (
	BudgetDay BudgetPeriod = iota
	BudgetWeek
	BudgetMonth
)

var (
	clientAuthNames   = []string{"off", "optional", "required"}
	budgetPeriodNames = []string{"day", "week", "month"}
	strategyNames     = []string{"roundrobin", "weighted_roundrobin", "random", "response_aware", "failover", "least_busy"}
	authNames         = []string{"none", "bearer", "basic"}
	headerOpNames     = []string{"insert", "replace", "remove"}
	scopeNames        = []string{"local", "global"}
	backendNames      = []string{"memory", "redis"}
	// retryWords are the retry_on conditions that are not status codes.
	retryWords = []string{retryConnectError, retryReset, retryTimeout}
)

// The retry_on words.
const (
	// retryConnectError: the upstream cannot have received the request (no connection, or
	// it failed before the request was written).
	retryConnectError = "connect_error"
	// retryReset: the connection was lost after the request was written; the upstream may
	// have processed it.
	retryReset = "reset"
	// retryTimeout: the group's connect, request or idle timeout.
	retryTimeout = "timeout"
)

// String returns the strategy's name as the configuration writes it.
func (s Strategy) String() string { return enumName(strategyNames, s) }

// String returns the auth type's name as the configuration writes it.
func (a AuthType) String() string { return enumName(authNames, a) }

// String returns the operation's name as the configuration writes it.
func (h HeaderOpKind) String() string { return enumName(headerOpNames, h) }

// String returns the scope's name as the configuration writes it.
func (s RateScope) String() string { return enumName(scopeNames, s) }

// String returns the backend's name as the configuration writes it.
func (b CacheBackend) String() string { return enumName(backendNames, b) }

// String returns the mode's name as the configuration writes it.
func (c ClientAuth) String() string { return enumName(clientAuthNames, c) }

// String returns the period's name as the configuration writes it.
func (b BudgetPeriod) String() string { return enumName(budgetPeriodNames, b) }

// Strategies returns every balancing strategy, in documentation order.
func Strategies() []Strategy {
	out := make([]Strategy, len(strategyNames))
	for i := range out {
		out[i] = Strategy(i)
	}
	return out
}

func enumName[T ~uint8](names []string, v T) string {
	if int(v) < len(names) {
		return names[v]
	}
	return "unknown"
}

// parseEnum returns the value whose name is s.
func parseEnum[T ~uint8](names []string, s string) (T, bool) {
	for i, n := range names {
		if n == s {
			return T(i), true
		}
	}
	return 0, false
}
