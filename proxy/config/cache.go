package config

import (
	"fmt"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	"github.com/llmproxy-go/llmproxy/proxy/cache"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// Warning is something a runtime serves differently from what its configuration asks,
// without refusing it: today a cache whose backend this proxy lacks. Static mode's --test
// reports warnings as errors; /config lists them.
type Warning struct {
	// Path is the configuration field, e.g. "upstream_groups[0].cache.backend".
	Path string `json:"path"`
	// Msg says what is wrong and what the proxy does instead.
	Msg string `json:"message"`
}

func (w Warning) String() string { return w.Path + ": " + w.Msg }

// cacheKey identifies a group's cache state. A memory cache's budget and epoch are part of
// it: a resize or a purge starts an empty memory (the old one's entries are unreachable
// after a purge anyway, and dropping it returns their memory at once). A Redis cache is one
// per group: its entries live in Redis.
type cacheKey struct {
	group    string
	backend  validate.CacheBackend
	maxBytes int64
	epoch    uint64
}

// cacheState is what a group's cache keeps across runtimes: its flights (so a swap does not
// split identical requests in flight), its backend, and its log limiter.
type cacheState struct {
	flights *cache.Flights
	logs    *cache.LogLimiter
	memory  *cache.Memory
	redis   *cache.Redis
}

// release frees what the state holds (the memory's entries and clean-up goroutine).
func (s *cacheState) release() {
	if s.memory != nil {
		s.memory.Close()
	}
}

// cache builds group i's cache: nil when it is off, or when its backend is missing here
// (then a Warning; the registry logs it once and sets llmproxy_cache_backend_up to 0).
func (b *builder) cache(i int, g *validate.Group) *cache.Cache {
	ca := g.Cache
	if ca == nil || !ca.Enabled {
		return nil
	}
	if ca.Backend == validate.CacheRedis && b.opts.Redis == nil {
		b.warnings = append(b.warnings, Warning{
			Path: fmt.Sprintf("upstream_groups[%d].cache.backend", i),
			Msg:  "backend redis needs --redis (LLMPROXY_REDIS_URL); the group is served uncached",
		})
		return nil
	}
	maxObject := int(ca.MaxObjectBytes)
	if maxObject <= 0 {
		maxObject = 1 << 20
	}
	k := cacheKey{group: g.Name, backend: ca.Backend}
	if ca.Backend == validate.CacheMemory {
		k.maxBytes, k.epoch = ca.MaxBytes, ca.Epoch
		if k.maxBytes <= 0 {
			k.maxBytes = 64 << 20
		}
	}
	m := b.m
	name := g.Name
	st := entry(b, k, func(s *state) map[cacheKey]*cacheState { return s.caches }, func() *cacheState {
		s := &cacheState{flights: cache.NewFlights(), logs: &cache.LogLimiter{}}
		if k.backend == validate.CacheMemory {
			// NewMemory fails only without a budget, which k always has.
			s.memory, _ = cache.NewMemory(cache.MemoryOptions{
				MaxBytes:  k.maxBytes,
				Evictions: m.CacheEvictions.WithLabelValues(name),
				Bytes:     m.CacheBytes.WithLabelValues(name),
			})
			return s
		}
		up := m.CacheBackendUp.WithLabelValues(name)
		logger := b.opts.Logger
		s.redis = cache.NewRedis(b.opts.Redis, cache.RedisOptions{
			Prefix:        "llmproxy:cache:" + name + ":",
			MaxBody:       maxObject,
			LookupTimeout: b.opts.CacheLookupTimeout,
			OnHealth: func(ok bool) {
				if ok {
					up.Set(1)
					logger.Info("response cache backend is back", "group", name, "backend", "redis")
					return
				}
				up.Set(0)
			},
		})
		return s
	})
	o := cache.Options{
		Flights:    st.flights,
		Logger:     b.opts.Logger,
		LogLimiter: st.logs,
		Metrics: cache.Metrics{
			Hits:             m.CacheHits.WithLabelValues(name),
			Misses:           m.CacheMisses.WithLabelValues(name),
			Bypasses:         m.CacheBypasses.WithLabelValues(name),
			Stores:           m.CacheStores.WithLabelValues(name),
			Coalesced:        m.CacheCoalesced.WithLabelValues(name),
			BackendErrors:    m.CacheBackendErrors.WithLabelValues(name),
			PromptTokens:     m.CacheTokens.WithLabelValues(name, telemetry.TokenPrompt),
			CompletionTokens: m.CacheTokens.WithLabelValues(name, telemetry.TokenCompletion),
		},
	}
	if st.memory != nil {
		o.Backend = st.memory
	} else {
		o.Backend, o.Async = st.redis, true
	}
	return cache.New(cache.Policy{Group: name, Epoch: ca.Epoch, TTL: ca.TTL, MaxObjectBytes: maxObject, Shared: ca.Shared}, o)
}

// commitCaches is Commit's part for caches, with r.mu held: it logs each group served
// uncached for a missing backend once, and sets llmproxy_cache_backend_up for rt's groups.
func (r *Registry) commitCaches(rt *Runtime) {
	if rt == nil {
		return
	}
	missing := map[string]bool{}
	for _, w := range rt.Warnings {
		missing[w.Path] = true
	}
	for i, g := range rt.Groups {
		up := rt.Metrics.CacheBackendUp
		switch {
		case g.Cache != nil:
			if be, ok := g.Cache.Backend().(*cache.Redis); ok && !be.Up() {
				up.WithLabelValues(g.Name).Set(0)
			} else {
				up.WithLabelValues(g.Name).Set(1)
			}
		case missing[fmt.Sprintf("upstream_groups[%d].cache.backend", i)]:
			up.WithLabelValues(g.Name).Set(0)
			if !r.warnedCache[g.Name] {
				r.warnedCache[g.Name] = true
				r.logger.Warn("response cache backend redis without --redis: the group is served uncached", "group", g.Name)
			}
		default:
			up.DeleteLabelValues(g.Name)
		}
	}
}
