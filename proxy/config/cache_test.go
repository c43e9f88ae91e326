package config

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/llmproxy-go/llmproxy/proxy/cache"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

func cacheYAML(cacheBlock string) string {
	return baseYAML + "    cache: " + cacheBlock + "\n"
}

func TestCompileCache(t *testing.T) {
	reg := NewRegistry(nil, nil)
	defer reg.Close()
	m := telemetry.NewMetrics()
	build := func(y string, o Options) *Runtime {
		t.Helper()
		o.Env, o.Metrics = env, m
		rt, err := Compile(decode(t, y), reg, o)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		reg.Commit(rt)
		return rt
	}
	rt := build(cacheYAML("{enabled: true}"), Options{})
	if rt.Groups[0].Cache != nil {
		t.Error("group g has no cache block but got a cache")
	}
	c := rt.Groups[1].Cache
	if c == nil {
		t.Fatal("cache enabled: Group.Cache is nil")
	}
	if c.TTL != 5*time.Minute || c.MaxObjectBytes != 1<<20 || c.Shared || c.Epoch != 0 || c.Group != "h" {
		t.Errorf("defaults: %+v; want ttl 5m, 1 MiB objects, not shared, epoch 0", c.Policy)
	}
	if len(rt.Warnings) != 0 {
		t.Errorf("warnings %v; want none", rt.Warnings)
	}
	if v := testutil.ToFloat64(m.CacheBackendUp.WithLabelValues("h")); v != 1 {
		t.Errorf("llmproxy_cache_backend_up{group=h} %v; want 1", v)
	}

	// Entries survive a recompile with the same policy.
	ctx := context.Background()
	r := &cache.Request{Method: "POST", Path: "/v1/messages", Body: []byte(`{"x":1}`)}
	k := c.KeyOf(r)
	c.Store(k, &cache.Entry{Status: 200, StoredAt: time.Now(), TTL: time.Minute}, nil)
	rt2 := build(cacheYAML("{enabled: true, ttl: 1m, shared: true}"), Options{})
	c2 := rt2.Groups[1].Cache
	if c2.TTL != time.Minute || !c2.Shared {
		t.Errorf("policy not updated: %+v", c2.Policy)
	}
	if e, res := c2.Lookup(ctx, k); e == nil || res != cache.Hit {
		t.Error("an entry stored before a recompile is gone")
	}
	if c2.Flights() != c.Flights() {
		t.Error("a recompile split the flights in progress")
	}

	// A purge (a higher epoch) changes every key and drops the memory's entries.
	rt3 := build(cacheYAML("{enabled: true, epoch: 4}"), Options{})
	c3 := rt3.Groups[1].Cache
	if c3.Epoch != 4 || c3.KeyOf(r) == k {
		t.Errorf("epoch %d; key unchanged: %v", c3.Epoch, c3.KeyOf(r) == k)
	}
	if e, _ := c3.Lookup(ctx, k); e != nil {
		t.Error("after a purge the old entry is still held")
	}

	// Disabling it drops the memory.
	rt4 := build(baseYAML, Options{})
	if rt4.Groups[1].Cache != nil {
		t.Error("cache disabled: Group.Cache not nil")
	}
	if len(reg.st.caches) != 0 {
		t.Errorf("registry keeps %d caches after they were disabled", len(reg.st.caches))
	}
}

// A group with backend redis on a proxy without Redis is served uncached: no refusal, a
// warning naming the field, and the backend gauge at 0.
func TestCompileCacheRedisWithoutRedis(t *testing.T) {
	reg := NewRegistry(nil, nil)
	defer reg.Close()
	m := telemetry.NewMetrics()
	rt, err := Compile(decode(t, cacheYAML("{enabled: true, backend: redis}")), reg, Options{Env: env, Metrics: m})
	if err != nil {
		t.Fatalf("Compile refused a redis cache without Redis: %v", err)
	}
	reg.Commit(rt)
	if rt.Groups[1].Cache != nil {
		t.Error("the group got a cache without a backend")
	}
	if len(rt.Warnings) != 1 || rt.Warnings[0].Path != "upstream_groups[1].cache.backend" || !strings.Contains(rt.Warnings[0].Msg, "--redis") {
		t.Errorf("warnings %v; want one on upstream_groups[1].cache.backend naming --redis", rt.Warnings)
	}
	if v := testutil.ToFloat64(m.CacheBackendUp.WithLabelValues("h")); v != 0 {
		t.Errorf("llmproxy_cache_backend_up{group=h} %v; want 0", v)
	}

	// With a client, the same config compiles a Redis cache (no connection is made here).
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	rt, err = Compile(decode(t, cacheYAML("{enabled: true, backend: redis}")), reg, Options{Env: env, Metrics: m, Redis: client})
	if err != nil || rt.Groups[1].Cache == nil || len(rt.Warnings) != 0 {
		t.Errorf("with Redis: err %v, cache %v, warnings %v", err, rt.Groups[1].Cache, rt.Warnings)
	}
	reg.Discard(rt)
}
