package ratelimit

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy-go/llmproxy/proxy/internal/redistest"
)

// testRedis connects to the Redis at 127.0.0.1:6379 (see redistest.Client).
func testRedis(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	return redistest.Client(t)
}

// never is a fallback that must not be asked.
type never struct{ t *testing.T }

func (n never) Allow(context.Context, string) (bool, time.Duration) {
	n.t.Error("fallback asked while Redis is up")
	return false, 0
}

func TestRedisBurst(t *testing.T) {
	c, prefix := testRedis(t)
	// A slow refill (one token per 100s) keeps the count exact however slow the machine is.
	l := NewRedis(c, prefix, 0.01, 2, never{t}, WithGuard(timeoutGuard(2*time.Second)))
	ctx := context.Background()
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := l.Allow(ctx, "10.0.0.1"); ok {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 2 {
		t.Fatalf("burst of 10: %d allowed; want 2", got)
	}
	ok, retry := l.Allow(ctx, "10.0.0.1")
	if ok || retry < 90*time.Second || retry > 100*time.Second {
		t.Errorf("empty bucket: ok=%v retryAfter=%v; want false, about 100s", ok, retry)
	}
	ttl, err := c.PTTL(ctx, bucketKey(prefix, "10.0.0.1")).Result()
	if err != nil || ttl <= 0 || ttl > 202*time.Second {
		t.Errorf("bucket TTL %v (%v); want the refill time plus a second", ttl, err)
	}
	if l.Fallbacks() != 0 {
		t.Errorf("Fallbacks %d; want 0", l.Fallbacks())
	}
}

func TestRedisRefill(t *testing.T) {
	c, prefix := testRedis(t)
	l := NewRedis(c, prefix, 50, 1, never{t}, WithGuard(timeoutGuard(2*time.Second)))
	ctx := context.Background()
	if ok, _ := l.Allow(ctx, "k"); !ok {
		t.Fatal("first request refused")
	}
	ok, retry := l.Allow(ctx, "k")
	if ok {
		// The machine took 20ms between two calls; nothing to check.
		t.Skip("refilled between two calls")
	}
	if retry <= 0 || retry > 20*time.Millisecond {
		t.Fatalf("retryAfter %v; want (0, 20ms]", retry)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(retry) // waiting retryAfter is the behaviour under test
		if ok, r := l.Allow(ctx, "k"); ok {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("no token after waiting retryAfter")
		} else {
			retry = r
		}
	}
}

func TestRedisSharedBudget(t *testing.T) {
	c, prefix := testRedis(t)
	c2 := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer c2.Close()
	a := NewRedis(c, prefix, 0.01, 4, never{t}, WithGuard(timeoutGuard(2*time.Second)))
	b := NewRedis(c2, prefix, 0.01, 4, never{t}, WithGuard(timeoutGuard(2*time.Second)))
	ctx := context.Background()
	n := 0
	for i := 0; i < 10; i++ {
		l := a
		if i%2 == 1 {
			l = b
		}
		if ok, _ := l.Allow(ctx, "tenant"); ok {
			n++
		}
	}
	if n != 4 {
		t.Errorf("two limiters, one budget of 4: %d allowed; want 4", n)
	}
	// Another prefix is another budget.
	other := NewRedis(c, prefix+"other:", 0.01, 4, never{t}, WithGuard(timeoutGuard(2*time.Second)))
	if ok, _ := other.Allow(ctx, "tenant"); !ok {
		t.Error("a different prefix shared the budget")
	}
}

func TestRedisFallback(t *testing.T) {
	// A closed port: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	// A port that accepts and never answers: the timeout must cut in.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var conns sync.WaitGroup
	var held []net.Conn
	var mu sync.Mutex
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
		}
	}()
	defer func() {
		silent.Close()
		conns.Wait()
		for _, c := range held {
			c.Close()
		}
	}()

	for _, tc := range []struct{ name, addr string }{{"refused", closedAddr}, {"silent", silent.Addr().String()}} {
		t.Run(tc.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: tc.addr, MaxRetries: -1, ContextTimeoutEnabled: true})
			defer c.Close()
			fb := NewLocal(0.01, 1, WithSweepInterval(0))
			l := NewRedis(c, "x:", 5, 2, fb)
			ctx := context.Background()
			start := time.Now()
			ok1, _ := l.Allow(ctx, "k")
			ok2, retry := l.Allow(ctx, "k")
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("two calls took %v; want the 50ms timeout to cut in", took)
			}
			if !ok1 || ok2 || retry <= 0 {
				t.Errorf("fallback answers %v, %v (%v); want the fallback's true, false", ok1, ok2, retry)
			}
			if got := l.Fallbacks(); got != 2 {
				t.Errorf("Fallbacks %d; want 2", got)
			}
			// No fallback: fail open.
			open := NewRedis(c, "x:", 5, 2, nil)
			if ok, _ := open.Allow(ctx, "k"); !ok {
				t.Error("nil fallback refused while Redis is down")
			}
		})
	}
}

// TestRedisKeyIsHashed checks that a bucket's Redis key does not carry the key it counts,
// and that equal keys meet in one bucket.
func TestRedisKeyIsHashed(t *testing.T) {
	c, prefix := testRedis(t)
	l := NewRedis(c, prefix, 0.01, 1, never{t}, WithGuard(timeoutGuard(2*time.Second)))
	ctx := context.Background()
	const secret = "Bearer sk-very-secret"
	if ok, _ := l.Allow(ctx, secret); !ok {
		t.Fatal("first request refused")
	}
	if ok, _ := l.Allow(ctx, secret); ok {
		t.Fatal("second request of a burst of 1 allowed: the two did not meet in one bucket")
	}
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != bucketKey(prefix, secret) {
		t.Fatalf("keys %q; want the one bucket %q", keys, bucketKey(prefix, secret))
	}
	if strings.Contains(keys[0], "secret") || len(keys[0]) != len(prefix)+32 {
		t.Errorf("bucket key %q: want the prefix and 32 hex digits", keys[0])
	}
}

func BenchmarkRedisAllow(b *testing.B) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		b.Skipf("redis unreachable: %v", err)
	}
	prefix := fmt.Sprintf("llmproxy-bench:%d:", time.Now().UnixNano())
	l := NewRedis(c, prefix, 1e9, 1000, nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow(ctx, "k")
		}
	})
	b.StopTimer()
	c.Del(ctx, prefix+"k")
	if l.Fallbacks() > 0 {
		b.Logf("%d fallbacks", l.Fallbacks())
	}
}
