package validate

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Validate checks the whole configuration c and returns nil when it is valid, or the
// errors.Join of one *FieldError per fault found (see Errors). It never stops at the first
// fault. It is meant to run after ApplyDefaults, but treats unset fields as their defaults,
// so it gives the same verdict before. Values that are `${env:NAME}` references are checked
// only for the syntax of NAME; their content is checked when a proxy resolves them (Parse).
// Fields whose feature the proxy does not implement yet are refused as ErrNotSupported (see
// Unsupported). Validate does not modify c. A nil c is valid (the empty configuration).
func Validate(c *configv1.Config) error {
	if c == nil {
		return nil
	}
	_, err := check(c)
	return err
}

// Parse is the proxy's half of validation: it validates c as Validate does, resolves its
// ${env:NAME} references with env, validates the resolved values (a URL or a header taken
// from the environment must be as valid as a written one, and the error names the field),
// and returns the Model. A nil env resolves nothing: every reference is an error. Every fault
// is reported at once, as Validate reports them. c is not modified; a nil c is the empty
// configuration.
//
// Parse is where a proxy refuses a configuration: compiling a Model into a runtime cannot
// fail for a configuration mistake.
func Parse(c *configv1.Config, env func(string) (string, bool)) (*Model, error) {
	src := defaulted(c)
	m, err := check(src)
	if err != nil {
		return nil, err
	}
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	res := proto.Clone(src).(*configv1.Config)
	n, err := resolveEnv(res, env)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		if m, err = check(res); err != nil {
			return nil, err
		}
	}
	m.Source = src
	return m, nil
}

// defaulted returns a copy of c with ApplyDefaults applied.
func defaulted(c *configv1.Config) *configv1.Config {
	if c == nil {
		return &configv1.Config{}
	}
	d := proto.Clone(c).(*configv1.Config)
	ApplyDefaults(d)
	return d
}

// check validates c and returns the Model built on the way. The Model is complete only when
// c has defaults applied, no error and no ${env:NAME} reference left; it refers to c's maps
// and lists.
func check(c *configv1.Config) (*Model, error) {
	v := &validator{m: &Model{}}
	v.checkEnvRefs(c)
	envErrs := v.errs.errs
	// Names are collected before the forwards that reference them are checked; errors are
	// reported in the order of the file: http_server, upstreams, upstream_groups, consumers,
	// pricing.
	v.errs.errs = nil
	upstreams := v.upstreams(c.GetUpstreams())
	upstreamErrs := v.errs.errs
	v.errs.errs = nil
	groups := v.groups(c.GetUpstreamGroups(), upstreams)
	groupErrs := v.errs.errs
	v.errs.errs = nil
	var forwards map[string]int
	if hs := c.GetHttpServer(); hs != nil {
		forwards = v.httpServer(hs, groups)
	}
	hsErrs := v.errs.errs
	v.errs.errs = nil
	v.consumers(c.GetConsumers(), forwards)
	v.pricing(c.GetPricing())
	all := append(envErrs, hsErrs...)
	all = append(all, upstreamErrs...)
	all = append(all, groupErrs...)
	all = append(all, v.errs.errs...)
	all = append(all, unsupported(c, Unsupported())...)
	if err := errors.Join(all...); err != nil {
		return nil, err
	}
	return v.m, nil
}

type validator struct {
	errs errorList
	m    *Model // filled as the checks go
}

func (v *validator) add(path string, kind error, format string, args ...any) {
	v.errs.add(path, kind, format, args...)
}

// checkEnvRefs checks the NAME of every `${env:NAME}` value.
func (v *validator) checkEnvRefs(c *configv1.Config) {
	walkStrings(c.ProtoReflect(), "", func(p, s string) (string, bool) {
		if name, ok := EnvRefName(s); IsEnvRef(s) && !ok {
			v.add(p, ErrInvalid, "%q is not a valid environment variable name (letters, digits and _, not starting with a digit)", name)
		}
		return "", false
	})
}

// name checks a resource name and reports whether it is usable as a key.
func (v *validator) name(p, kind, name string) bool {
	switch {
	case name == "":
		v.add(p, ErrInvalid, "%s name is required", kind)
	case IsEnvRef(name):
		v.add(p, ErrInvalid, "%s name cannot be an environment reference", kind)
	case strings.TrimSpace(name) != name:
		v.add(p, ErrInvalid, "%s name %q has leading or trailing spaces", kind, name)
	case strings.ContainsRune(name, '/'):
		v.add(p, ErrInvalid, "%s name %q must not contain \"/\"", kind, name)
	case hasControl(name) || !utf8.ValidString(name):
		v.add(p, ErrInvalid, "%s name %q contains control characters", kind, name)
	case len(name) > 253:
		v.add(p, ErrInvalid, "%s name is longer than 253 bytes", kind)
	default:
		return true
	}
	return false
}

// ref checks a reference to a resource of kind defined in names and returns the resource's
// index (-1 when the reference is bad).
func (v *validator) ref(p, kind, name string, names map[string]int) int {
	switch {
	case name == "":
		v.add(p, ErrInvalid, "%s name is required", kind)
	case IsEnvRef(name):
		v.add(p, ErrInvalid, "%s reference cannot be an environment reference", kind)
	default:
		i, ok := names[name]
		if ok {
			return i
		}
		v.add(p, ErrReference, "%s %q is not defined", kind, name)
	}
	return -1
}

// named is a config resource identified by its name.
type named interface {
	comparable
	GetName() string
}

// namedList checks the items of the list at path list, resources of kind: none may be nil
// ("<kind> is empty") and every name must be valid and unique. It calls check with the path
// and each non-nil item, and returns the index of every valid name.
func namedList[T named](v *validator, list, kind string, items []T, check func(i int, p string, it T)) map[string]int {
	names := make(map[string]int, len(items))
	var empty T
	for i, it := range items {
		p := fmt.Sprintf("%s[%d]", list, i)
		if it == empty {
			v.add(p, ErrInvalid, "%s is empty", kind)
			continue
		}
		name := it.GetName()
		if v.name(p+".name", kind, name) {
			if j, dup := names[name]; dup {
				v.add(p+".name", ErrDuplicate, "%s %q is already defined at %s[%d]", kind, name, list, j)
			} else {
				names[name] = i
			}
		}
		check(i, p, it)
	}
	return names
}

func (v *validator) upstreams(list []*configv1.Upstream) map[string]int {
	v.m.Upstreams = make([]*Upstream, len(list))
	return namedList(v, "upstreams", "upstream", list, func(i int, p string, u *configv1.Upstream) {
		up := &Upstream{Name: u.Name, RawURL: u.Url}
		up.URL = v.upstreamURL(p+".url", u.Url)
		up.Auth = v.auth(p+".auth", u.Auth)
		for j, h := range u.Headers {
			up.Headers = append(up.Headers, v.headerOp(fmt.Sprintf("%s.headers[%d]", p, j), h))
		}
		up.Breaker = v.breaker(p+".breaker", u.Breaker)
		v.m.Upstreams[i] = up
	})
}

// upstreamURL checks an upstream's base URL and returns it parsed (nil for a reference or
// on error).
func (v *validator) upstreamURL(p, raw string) *url.URL {
	if raw == "" {
		v.add(p, ErrInvalid, "url is required")
		return nil
	}
	if IsEnvRef(raw) {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		// The text may carry a password: do not echo it.
		v.add(p, ErrInvalid, "invalid url: %v", unwrapURLError(err))
		return nil
	}
	v.upstreamURLCredentials(p, u)
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(p, ErrInvalid, "url %q must be absolute with scheme http or https", safeURL(raw, u))
	case u.Host == "" || u.Hostname() == "":
		v.add(p, ErrInvalid, "url %q has no host", safeURL(raw, u))
	case u.Fragment != "":
		v.add(p, ErrInvalid, "url %q must not have a fragment", safeURL(raw, u))
	default:
		if v.port(p, u) {
			return u
		}
	}
	return nil
}

// port checks the port of a parsed URL, if any, and reports whether it is valid.
func (v *validator) port(p string, u *url.URL) bool {
	if ps := u.Port(); ps != "" {
		if n, err := strconv.Atoi(ps); err != nil || n < 1 || n > 65535 {
			v.add(p, ErrInvalid, "url %q has an invalid port", safeURL(u.String(), u))
			return false
		}
	}
	return true
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (v *validator) auth(p string, a *configv1.Auth) Auth {
	if a == nil {
		return Auth{}
	}
	out := Auth{Token: a.Token, Username: a.Username, Password: a.Password}
	typ := a.Type
	if typ == "" {
		typ = defaultAuthType.String()
	}
	ref := IsEnvRef(typ)
	if !ref {
		t, ok := parseEnum[AuthType](authNames, typ)
		if !ok {
			v.add(p+".type", ErrInvalid, "unknown auth type %q (want %s)", typ, choices(authNames))
			return out
		}
		out.Type = t
	}
	switch {
	case ref:
	case out.Type == AuthBearer:
		if a.Token == "" {
			v.add(p+".token", ErrInvalid, "token is required for bearer auth")
		}
	case out.Type == AuthBasic:
		if a.Username == "" {
			v.add(p+".username", ErrInvalid, "username is required for basic auth")
		} else if !IsEnvRef(a.Username) && strings.ContainsRune(a.Username, ':') {
			v.add(p+".username", ErrInvalid, "username must not contain \":\" (RFC 7617)")
		}
		if a.Password == "" {
			v.add(p+".password", ErrInvalid, "password is required for basic auth")
		}
	}
	if !ref && out.Type != AuthBearer && a.Token != "" {
		v.add(p+".token", ErrInvalid, "token is set but auth type is %q (want bearer)", typ)
	}
	if !ref && out.Type != AuthBasic && (a.Username != "" || a.Password != "") {
		v.add(p+".type", ErrInvalid, "username or password is set but auth type is %q (want basic)", typ)
	}
	for _, f := range []struct{ name, val string }{{"token", a.Token}, {"username", a.Username}, {"password", a.Password}} {
		if !IsEnvRef(f.val) && hasControl(f.val) {
			v.add(p+"."+f.name, ErrInvalid, "%s contains control characters", f.name)
		}
	}
	return out
}

func (v *validator) headerOp(p string, h *configv1.HeaderOp) HeaderOp {
	if h == nil {
		v.add(p, ErrInvalid, "header operation is empty")
		return HeaderOp{}
	}
	out := HeaderOp{Key: http.CanonicalHeaderKey(h.Key), Value: h.Value}
	switch op, ok := parseEnum[HeaderOpKind](headerOpNames, h.Op); {
	case h.Op == "":
		v.add(p+".op", ErrInvalid, "op is required (want %s)", choices(headerOpNames))
	case IsEnvRef(h.Op):
	case !ok:
		v.add(p+".op", ErrInvalid, "unknown header op %q (want %s)", h.Op, choices(headerOpNames))
	default:
		out.Op = op
	}
	switch {
	case h.Key == "":
		v.add(p+".key", ErrInvalid, "key is required")
	case IsEnvRef(h.Key):
	case !isToken(h.Key):
		v.add(p+".key", ErrInvalid, "%q is not a valid header name", h.Key)
	}
	if (h.Op == HeaderInsert.String() || h.Op == HeaderReplace.String()) && h.Value == "" {
		v.add(p+".value", ErrInvalid, "value is required for %s", h.Op)
	}
	if !IsEnvRef(h.Value) && hasControl(strings.ReplaceAll(h.Value, "\t", "")) {
		v.add(p+".value", ErrInvalid, "value contains control characters")
	}
	return out
}

func (v *validator) breaker(p string, b *configv1.Breaker) Breaker {
	if b == nil {
		return Breaker{}
	}
	out := Breaker{
		Threshold:      b.GetThreshold(),
		Cooldown:       time.Duration(b.GetCooldown()) * time.Second,
		MinRequests:    int(b.GetMinRequests()),
		HalfOpenProbes: int(b.GetHalfOpenProbes()),
	}
	if b.Threshold != nil {
		t := *b.Threshold
		if math.IsNaN(t) || t < 0.01 || t > 1.0 {
			v.add(p+".threshold", ErrInvalid, "threshold %v is out of range 0.01-1.0", t)
		}
	}
	v.rangeU32(p+".cooldown", b.Cooldown, 1, 3600)
	out.Window, _ = v.duration(p+".window", b.Window)
	v.rangeU32(p+".min_requests", b.MinRequests, 1, 10000)
	v.rangeU32(p+".half_open_probes", b.HalfOpenProbes, 1, 100)
	return out
}

func (v *validator) groups(list []*configv1.UpstreamGroup, upstreams map[string]int) map[string]int {
	v.m.Groups = make([]*Group, len(list))
	return namedList(v, "upstream_groups", "upstream group", list, func(i int, p string, g *configv1.UpstreamGroup) {
		grp := &Group{Name: g.Name}
		if len(g.Upstreams) == 0 {
			v.add(p+".upstreams", ErrInvalid, "at least one upstream is required")
		}
		seen := make(map[string]int, len(g.Upstreams))
		for j, m := range g.Upstreams {
			mp := fmt.Sprintf("%s.upstreams[%d]", p, j)
			if m == nil {
				v.add(mp, ErrInvalid, "member is empty")
				continue
			}
			idx := v.ref(mp+".name", "upstream", m.Name, upstreams)
			if m.Name != "" {
				if k, dup := seen[m.Name]; dup {
					v.add(mp+".name", ErrInvalid, "upstream %q is already a member at %s.upstreams[%d]", m.Name, p, k)
				} else {
					seen[m.Name] = j
				}
			}
			v.rangeU32(mp+".weight", m.Weight, 1, 65535)
			grp.Members = append(grp.Members, Member{Upstream: idx, Weight: int(m.GetWeight())})
		}
		if s := g.GetBalance().GetStrategy(); s != "" && !IsEnvRef(s) {
			st, ok := parseEnum[Strategy](strategyNames, s)
			if !ok {
				v.add(p+".balance.strategy", ErrInvalid, "unknown strategy %q (want %s)", s, choices(strategyNames))
			}
			grp.Strategy = st
		}
		grp.Client, grp.Retry = v.httpClient(p+".http_client", g.HttpClient)
		grp.Concurrency = v.concurrency(p+".concurrency", g.Concurrency)
		grp.Cache = v.cache(p+".cache", g.Cache)
		v.m.Groups[i] = grp
	})
}

func (v *validator) httpClient(p string, hc *configv1.HttpClient) (Client, *Retry) {
	if hc == nil {
		return Client{}, nil
	}
	to := hc.GetTimeout()
	client := Client{
		Agent:          hc.GetAgent(),
		Keepalive:      time.Duration(hc.GetKeepalive()) * time.Second,
		ConnectTimeout: time.Duration(to.GetConnect()) * time.Second,
		RequestTimeout: time.Duration(to.GetRequest()) * time.Second,
		IdleTimeout:    time.Duration(to.GetIdle()) * time.Second,
		Stream:         hc.GetStream(),
	}
	if hc.Agent != nil && !IsEnvRef(*hc.Agent) && hasControl(*hc.Agent) {
		v.add(p+".agent", ErrInvalid, "agent contains control characters")
	}
	v.rangeU32(p+".keepalive", hc.Keepalive, 5, 600)
	if t := hc.Timeout; t != nil {
		v.rangeU32(p+".timeout.connect", t.Connect, 1, 120)
		v.rangeU32(p+".timeout.request", t.Request, 1, 1200)
		v.rangeU32(p+".timeout.idle", t.Idle, 5, 1800)
	}
	var retry *Retry
	if r := hc.Retry; r != nil {
		rp := p + ".retry"
		retry = &Retry{Attempts: int(r.GetAttempts()), Initial: time.Duration(r.GetInitial()) * time.Millisecond}
		v.rangeU32(rp+".attempts", r.Attempts, 1, 100)
		v.rangeU32(rp+".initial", r.Initial, 100, 10000)
		if d, ok := v.duration(rp+".max_backoff", r.MaxBackoff); ok && d > 0 {
			retry.MaxBackoff = d
			initial := time.Duration(defaultRetryInitial) * time.Millisecond
			if r.Initial != nil {
				initial = time.Duration(*r.Initial) * time.Millisecond
			}
			if d < initial {
				v.add(rp+".max_backoff", ErrInvalid, "max_backoff %s is shorter than initial %s", d, initial)
			}
		}
		seen := make(map[string]int, len(r.RetryOn))
		for j, item := range r.RetryOn {
			ip := fmt.Sprintf("%s.retry_on[%d]", rp, j)
			if IsEnvRef(item) {
				continue
			}
			if !retry.On.add(item) {
				v.add(ip, ErrInvalid, "%q is neither an HTTP status 100-599 nor one of %s", item, choices(retryWords))
				continue
			}
			if k, dup := seen[item]; dup {
				v.add(ip, ErrInvalid, "%q is already listed at %s.retry_on[%d]", item, rp, k)
			} else {
				seen[item] = j
			}
		}
	}
	if px := hc.Proxy; px != nil {
		client.Proxy = v.proxyURL(p+".proxy.url", px.Url)
	}
	client.CA = v.clientTLS(p+".tls", hc.Tls)
	return client, retry
}

// add adds the retry_on condition s to the set and reports whether s is one: a word of
// retryWords or a three-digit HTTP status 100-599.
func (r *RetryOn) add(s string) bool {
	switch s {
	case retryConnectError:
		r.ConnectError = true
		return true
	case retryReset:
		r.Reset = true
		return true
	case retryTimeout:
		r.Timeout = true
		return true
	}
	if len(s) != 3 {
		return false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return false
	}
	r.addStatus(n)
	return true
}

// proxyURL checks an outbound proxy URL and returns it parsed (nil for a reference or on
// error).
func (v *validator) proxyURL(p, raw string) *url.URL {
	if raw == "" {
		v.add(p, ErrInvalid, "url is required")
		return nil
	}
	if IsEnvRef(raw) {
		return nil
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		// The text may carry a password: do not echo it.
		v.add(p, ErrInvalid, "invalid proxy url: %v", unwrapURLError(err))
	case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "socks5" && u.Scheme != "socks5h":
		v.add(p, ErrInvalid, "proxy url %q must be absolute with scheme http, https, socks5 or socks5h", u.Redacted())
	case u.Hostname() == "":
		v.add(p, ErrInvalid, "proxy url %q has no host", u.Redacted())
	default:
		if v.port(p, u) {
			return u
		}
	}
	return nil
}

func (v *validator) concurrency(p string, cc *configv1.Concurrency) *Concurrency {
	if cc == nil {
		return nil
	}
	out := &Concurrency{Max: int(cc.GetMax()), Queue: int(cc.GetQueue()), DropExcess: cc.GetDropExcess()}
	if cc.Max == nil {
		v.add(p+".max", ErrInvalid, "max is required when concurrency is set")
	} else {
		v.rangeU32(p+".max", cc.Max, 1, 100000)
	}
	v.rangeU32(p+".queue", cc.Queue, 0, 1000000)
	out.QueueTimeout, _ = v.duration(p+".queue_timeout", cc.QueueTimeout)
	return out
}

func (v *validator) cache(p string, ca *configv1.Cache) *Cache {
	if ca == nil {
		return nil
	}
	out := &Cache{
		Enabled:        ca.GetEnabled(),
		MaxObjectBytes: int64(ca.GetMaxObjectBytes()),
		MaxBytes:       int64(ca.GetMaxBytes()),
		Shared:         ca.GetShared(),
		Epoch:          ca.GetEpoch(),
	}
	if b := ca.Backend; b != "" && !IsEnvRef(b) {
		be, ok := parseEnum[CacheBackend](backendNames, b)
		if !ok {
			v.add(p+".backend", ErrInvalid, "unknown cache backend %q (want %s)", b, choices(backendNames))
		}
		out.Backend = be
	}
	out.TTL, _ = v.duration(p+".ttl", ca.Ttl)
	v.rangeU32(p+".max_object_bytes", ca.MaxObjectBytes, 1, math.MaxUint32)
	v.rangeU32(p+".max_bytes", ca.MaxBytes, 1, math.MaxUint32)
	if ca.MaxObjectBytes != nil && ca.MaxBytes != nil && *ca.MaxObjectBytes > *ca.MaxBytes {
		v.add(p+".max_object_bytes", ErrInvalid, "max_object_bytes %d is larger than max_bytes %d", *ca.MaxObjectBytes, *ca.MaxBytes)
	}
	return out
}

// listener is a bound address of a forward or the admin listener.
type listener struct {
	path, who, addr string
	port            uint32
}

// httpServer checks the listeners and returns the index of every forward name.
func (v *validator) httpServer(hs *configv1.HttpServer, groups map[string]int) map[string]int {
	var listeners []listener
	v.m.Forwards = make([]*Forward, len(hs.Forwards))
	forwards := namedList(v, "http_server.forwards", "forward", hs.Forwards, func(i int, p string, f *configv1.Forward) {
		v.rangeU32(p+".port", f.Port, 1, 65535)
		v.address(p+".address", f.Address)
		addr, port := strOr(f.Address, defaultForwardAddress), u32Or(f.Port, defaultForwardPort)
		fw := &Forward{
			Name:         f.Name,
			Listener:     Listener{Addr: joinHostPort(addr, port), HeaderTimeout: time.Duration(f.GetTimeout().GetConnect()) * time.Second},
			MaxBodyBytes: int64(f.GetMaxBodyBytes()),
		}
		fw.DefaultGroup = v.ref(p+".default_group", "upstream group", f.DefaultGroup, groups)
		fw.Routes = v.routes(p, f.Routing, groups)
		fw.RateLimit = v.rateLimit(p+".ratelimit", f.Ratelimit)
		if f.Timeout != nil {
			v.rangeU32(p+".timeout.connect", f.Timeout.Connect, 1, 3600)
			fw.BodyTimeout, _ = v.duration(p+".timeout.body", f.Timeout.Body)
		}
		v.rangeU32(p+".max_body_bytes", f.MaxBodyBytes, 1, math.MaxUint32)
		fw.TLS = v.serverTLS(p+".tls", f.Tls)
		fw.TrustedProxies = v.trustedProxies(p+".trusted_proxies", f.TrustedProxies)
		fw.ClientAuth = v.clientAuth(p+".client_auth", f.ClientAuth)
		listeners = append(listeners, listener{path: p + ".port", who: fmt.Sprintf("forward %q", f.Name), addr: addr, port: port})
		v.m.Forwards[i] = fw
	})
	if a := hs.Admin; a != nil {
		v.rangeU32("http_server.admin.port", a.Port, 1, 65535)
		v.address("http_server.admin.address", a.Address)
		if a.Timeout != nil {
			v.rangeU32("http_server.admin.timeout.connect", a.Timeout.Connect, 1, 3600)
			if a.Timeout.Body != "" {
				v.add("http_server.admin.timeout.body", ErrInvalid, "body applies to forwards only (the admin endpoints take no request body)")
			}
		}
		addr, port := strOr(a.Address, defaultAdminAddress), u32Or(a.Port, defaultAdminPort)
		listeners = append(listeners, listener{path: "http_server.admin.port", who: "the admin listener", addr: addr, port: port})
		v.m.Admin = &Listener{Addr: joinHostPort(addr, port), HeaderTimeout: time.Duration(a.GetTimeout().GetConnect()) * time.Second}
	}
	v.listenerConflicts(listeners)
	return forwards
}

func joinHostPort(host string, port uint32) string {
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
}

// listenerConflicts reports two listeners on one port whose addresses overlap (equal, or
// one of them a wildcard). With SO_REUSEPORT both would bind and split the traffic.
func (v *validator) listenerConflicts(ls []listener) {
	for i := 1; i < len(ls); i++ {
		for j := 0; j < i; j++ {
			a, b := ls[i], ls[j]
			if a.port != b.port || IsEnvRef(a.addr) || IsEnvRef(b.addr) {
				continue
			}
			if a.addr == b.addr || isWildcard(a.addr) || isWildcard(b.addr) {
				v.add(a.path, ErrDuplicate, "address %s conflicts with %s on %s",
					joinHostPort(a.addr, a.port), b.who, joinHostPort(b.addr, b.port))
				break
			}
		}
	}
}

func isWildcard(addr string) bool {
	if addr == "" {
		return true
	}
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsUnspecified()
}

func (v *validator) address(p string, addr *string) {
	if addr == nil || IsEnvRef(*addr) {
		return
	}
	a := *addr
	if a == "" {
		v.add(p, ErrInvalid, "address is empty")
		return
	}
	v.listenAddress(p, a)
}

func (v *validator) routes(fp string, routes []*configv1.Route, groups map[string]int) []Route {
	out := make([]Route, 0, len(routes))
	seen := make(map[string]int, len(routes))
	for j, r := range routes {
		p := fmt.Sprintf("%s.routing[%d]", fp, j)
		if r == nil {
			v.add(p, ErrInvalid, "route is empty")
			continue
		}
		rt := Route{Headers: r.Headers, Methods: r.Methods}
		switch {
		case r.Path == "":
			v.add(p+".path", ErrInvalid, "path is required")
		case IsEnvRef(r.Path):
			v.add(p+".path", ErrInvalid, "path cannot be an environment reference")
		default:
			pat, err := route.ParsePattern(r.Path)
			if err != nil {
				v.add(p+".path", ErrInvalid, "%v", err)
			}
			rt.Pattern = pat
			v.routePathChars(p+".path", r.Path)
			if k, dup := seen[r.Path]; dup {
				v.add(p+".path", ErrInvalid, "duplicate route path %q (first at %s.routing[%d])", r.Path, fp, k)
			} else {
				seen[r.Path] = j
			}
		}
		rt.Group = v.ref(p+".target_group", "upstream group", r.TargetGroup, groups)
		if r.Model != "" && !IsEnvRef(r.Model) {
			g, err := route.ParseGlob(r.Model)
			if err != nil {
				v.add(p+".model", ErrInvalid, "invalid model glob %q: %v", r.Model, err)
			}
			rt.Model = g
		}
		hseen := make(map[string]string, len(r.Headers))
		for _, k := range sortedKeys(r.Headers) {
			hp := fmt.Sprintf("%s.headers[%q]", p, k)
			canon := strings.ToLower(k)
			switch first, dup := hseen[canon]; {
			case !isToken(k):
				v.add(hp, ErrInvalid, "%q is not a valid header name", k)
			case dup:
				v.add(hp, ErrInvalid, "header %q is already matched as %q (header names ignore case)", k, first)
			default:
				hseen[canon] = k
			}
		}
		mseen := make(map[string]int, len(r.Methods))
		for k, m := range r.Methods {
			mp := fmt.Sprintf("%s.methods[%d]", p, k)
			switch {
			case IsEnvRef(m):
			case !isToken(m):
				v.add(mp, ErrInvalid, "%q is not a valid HTTP method", m)
			default:
				if first, dup := mseen[strings.ToUpper(m)]; dup {
					v.add(mp, ErrInvalid, "method %q is already listed at %s.methods[%d]", m, p, first)
				} else {
					mseen[strings.ToUpper(m)] = k
				}
			}
		}
		out = append(out, rt)
	}
	return out
}

// rateKeyIP and rateKeyHeader are the two forms of ratelimit.key: "ip" or "header:NAME".
const (
	rateKeyIP     = "ip"
	rateKeyHeader = "header:"
)

// rateLimit checks a forward's rate limit and returns it, or nil when it is not enabled.
func (v *validator) rateLimit(p string, rl *configv1.RateLimit) *RateLimit {
	if rl == nil {
		return nil
	}
	out := &RateLimit{PerSecond: int(rl.GetPerSecond()), Burst: int(rl.GetBurst())}
	v.rangeU32(p+".per_second", rl.PerSecond, 1, 10000)
	v.rangeU32(p+".burst", rl.Burst, 1, 20000)
	switch k := rl.Key; {
	case k == "", k == rateKeyIP, IsEnvRef(k):
	case strings.HasPrefix(k, rateKeyHeader):
		name := strings.TrimPrefix(k, rateKeyHeader)
		if !isToken(name) {
			v.add(p+".key", ErrInvalid, "%q is not a valid header name", name)
		}
		out.Header = http.CanonicalHeaderKey(name)
	default:
		v.add(p+".key", ErrInvalid, "unknown rate limit key %q (want %s or %sNAME)", k, rateKeyIP, rateKeyHeader)
	}
	if s := rl.Scope; s != "" && !IsEnvRef(s) {
		sc, ok := parseEnum[RateScope](scopeNames, s)
		if !ok {
			v.add(p+".scope", ErrInvalid, "unknown scope %q (want %s)", s, choices(scopeNames))
		}
		out.Scope = sc
	}
	if rl.Enabled != nil && !*rl.Enabled { // the block's presence enables it
		return nil
	}
	return out
}

func (v *validator) rangeU32(p string, val *uint32, lo, hi uint32) {
	if val != nil && (*val < lo || *val > hi) {
		v.add(p, ErrInvalid, "%d is out of range %d-%d", *val, lo, hi)
	}
}

// duration checks one of our duration strings: empty (default) or a positive Go duration.
func (v *validator) duration(p, s string) (time.Duration, bool) {
	if s == "" || IsEnvRef(s) {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		v.add(p, ErrInvalid, "invalid duration %q (want a number with a unit, e.g. \"500ms\", \"10s\")", s)
		return 0, false
	case d <= 0:
		v.add(p, ErrInvalid, "duration %q must be positive", s)
		return 0, false
	}
	return d, true
}
