package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmproxy-go/llmproxy/proxy/internal/redistest"
)

// testRedis connects to the Redis at 127.0.0.1:6379 (see redistest.Client) and returns a
// client with a switch that makes every command fail, and the test's key prefix.
func testRedis(t *testing.T) (*redis.Client, *atomic.Bool, string) {
	t.Helper()
	c, prefix := redistest.Client(t)
	failing := &atomic.Bool{}
	c.AddHook(failHook{failing})
	return c, failing, prefix
}

// failHook fails every command while its switch is on, as a Redis that went away would.
type failHook struct{ on *atomic.Bool }

func (h failHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h failHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() {
			err := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (h failHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestRedisRoundTrip(t *testing.T) {
	c, _, prefix := testRedis(t)
	r := NewRedis(c, RedisOptions{Prefix: prefix, LookupTimeout: 2 * time.Second, MaxBody: 1 << 20})
	ctx := context.Background()
	body := strings.Repeat("data: {\"choices\":[{\"delta\":{\"content\":\"word\"}}]}\n\n", 200)
	e := sampleEntry(body)
	e.StoredAt = time.Now()
	k := Key{7}
	if got, err := r.Get(ctx, k); got != nil || err != nil {
		t.Fatalf("Get before Set = %v, %v; want nil, nil", got, err)
	}
	if err := r.Set(ctx, k, e); err != nil {
		t.Fatalf("Set: %v", err)
	}
	got, err := r.Get(ctx, k)
	if err != nil || got == nil {
		t.Fatalf("Get after Set = %v, %v", got, err)
	}
	if string(got.Body) != body || got.Status != 200 || !got.Stream || got.CompletionTokens != 7 || got.Header.Get("X-Upstream-Request-Id") != "req_1" {
		t.Errorf("stored entry came back different: %+v", got)
	}
	ttl, err := c.PTTL(ctx, r.RedisKey(k)).Result()
	if err != nil || ttl <= 4*time.Minute || ttl > 5*time.Minute {
		t.Errorf("Redis TTL %v (%v); want the entry's 5m", ttl, err)
	}
	n, _ := c.StrLen(ctx, r.RedisKey(k)).Result()
	if n == 0 || n >= int64(len(body))/4 {
		t.Errorf("a %d-byte repetitive body takes %d bytes in Redis; want it compressed", len(body), n)
	}
	if !strings.HasPrefix(r.RedisKey(k), prefix) {
		t.Errorf("key %q lacks the prefix %q", r.RedisKey(k), prefix)
	}
	// An expired entry (a skewed clock) is a miss.
	old := sampleEntry("x")
	old.StoredAt, old.TTL = time.Now().Add(-time.Hour), 2*time.Hour
	r.Set(ctx, Key{8}, old)
	r2 := NewRedis(c, RedisOptions{Prefix: prefix, LookupTimeout: 2 * time.Second, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	if got, _ := r2.Get(ctx, Key{8}); got != nil {
		t.Error("an entry past its TTL by the reader's clock was returned")
	}
}

func TestRedisOutage(t *testing.T) {
	c, failing, prefix := testRedis(t)
	now := time.Unix(5000, 0)
	var health []bool
	r := NewRedis(c, RedisOptions{Prefix: prefix, LookupTimeout: 2 * time.Second, RetryInterval: time.Second,
		Now: func() time.Time { return now }, OnHealth: func(up bool) { health = append(health, up) }})
	ctx := context.Background()
	failing.Store(true)
	for i := range FailuresDown {
		if _, err := r.Get(ctx, Key{1}); err == nil || errors.Is(err, ErrBackendDown) {
			t.Fatalf("Get %d while Redis fails: err %v; want the Redis error", i, err)
		}
		if up := r.Up(); up != (i < FailuresDown-1) {
			t.Errorf("after %d failures in a row: Up %v", i+1, up)
		}
	}
	if _, err := r.Get(ctx, Key{1}); !errors.Is(err, ErrBackendDown) {
		t.Errorf("Get within the retry interval: err %v; want ErrBackendDown without asking Redis", err)
	}
	if err := r.Set(ctx, Key{1}, sampleEntry("x")); !errors.Is(err, ErrBackendDown) {
		t.Errorf("Set within the retry interval: err %v; want ErrBackendDown", err)
	}
	failing.Store(false)
	now = now.Add(1100 * time.Millisecond)
	if _, err := r.Get(ctx, Key{1}); err != nil {
		t.Errorf("probe after the interval with Redis back: %v", err)
	}
	if !r.Up() || fmt.Sprint(health) != "[false true]" {
		t.Errorf("Up %v, health changes %v; want true, [false true]", r.Up(), health)
	}
	// A caller that leaves does not count against Redis; a success resets the count.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for range FailuresDown {
		r.Get(cctx, Key{1})
	}
	if !r.Up() {
		t.Error("cancelled callers marked Redis down")
	}
	failing.Store(true)
	r.Get(ctx, Key{1})
	failing.Store(false)
	r.Get(ctx, Key{1})
	failing.Store(true)
	r.Get(ctx, Key{1})
	failing.Store(false)
	if !r.Up() {
		t.Error("two failures apart, with a success between, marked Redis down")
	}
}
