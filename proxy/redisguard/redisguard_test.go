package redisguard

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// clock is a manually advanced clock, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type fixture struct {
	g     *Guard
	clock *clock
	m     *Metrics
	log   *bytes.Buffer
	calls atomic.Int32
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), m: NewMetrics(prometheus.NewRegistry()), log: &bytes.Buffer{}}
	f.g = New(Options{
		Timeout: 20 * time.Millisecond, Cooldown: time.Second, LogEvery: 10 * time.Second,
		Logger:  slog.New(slog.NewJSONHandler(f.log, nil)),
		Metrics: f.m, Now: f.clock.Now,
	})
	return f
}

// do runs one guarded call that answers err.
func (f *fixture) do(err error) error {
	return f.g.Do(context.Background(), func(context.Context) error {
		f.calls.Add(1)
		return err
	})
}

func (f *fixture) fallbacks(reason string) float64 {
	return testutil.ToFloat64(f.m.Fallbacks.WithLabelValues(reason))
}

var errDown = errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")

func TestGuardSkipsRedisAfterAFailureUntilTheProbeSucceeds(t *testing.T) {
	f := newFixture(t)
	if err := f.do(nil); err != nil || !f.g.Up() {
		t.Fatalf("healthy call: %v, up %v", err, f.g.Up())
	}
	if err := f.do(redis.Nil); !errors.Is(err, redis.Nil) || !f.g.Up() {
		t.Fatalf("a missing key is an answer: %v, up %v", err, f.g.Up())
	}
	if err := f.do(errDown); !errors.Is(err, errDown) || f.g.Up() {
		t.Fatalf("failed call: %v, up %v; want the error and the breaker open", err, f.g.Up())
	}
	if got := testutil.ToFloat64(f.m.Up); got != 0 {
		t.Errorf("llmproxy_redis_up %v; want 0", got)
	}
	for range 5 {
		if err := f.do(nil); !errors.Is(err, ErrSkipped) {
			t.Fatalf("call within the cooldown: %v; want ErrSkipped", err)
		}
	}
	if got := f.calls.Load(); got != 3 {
		t.Errorf("Redis called %d times; want 3 (none while open)", got)
	}
	f.clock.Advance(time.Second)
	// The first caller after the cooldown probes; the others keep skipping meanwhile.
	probed := f.g.Do(context.Background(), func(context.Context) error {
		if err := f.do(nil); !errors.Is(err, ErrSkipped) {
			t.Errorf("call during the probe: %v; want ErrSkipped", err)
		}
		return errDown
	})
	if !errors.Is(probed, errDown) || f.g.Up() {
		t.Fatalf("failed probe: %v, up %v", probed, f.g.Up())
	}
	f.clock.Advance(time.Second)
	if err := f.do(nil); err != nil || !f.g.Up() {
		t.Fatalf("successful probe: %v, up %v; want the breaker closed", err, f.g.Up())
	}
	if got := testutil.ToFloat64(f.m.Up); got != 1 {
		t.Errorf("llmproxy_redis_up %v; want 1", got)
	}
	if s, e := f.fallbacks(ReasonSkipped), f.fallbacks(ReasonError); s != 6 || e != 2 {
		t.Errorf("fallbacks skipped %v, error %v; want 6 and 2", s, e)
	}
}

func TestGuardDeadline(t *testing.T) {
	f := newFixture(t)
	start := time.Now()
	err := f.g.Do(context.Background(), func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("stalled call ended with %v after %v; want its deadline", err, time.Since(start))
	}
	if got := f.fallbacks(ReasonTimeout); got != 1 {
		t.Errorf("timeout fallbacks %v; want 1", got)
	}
	if f.g.Up() {
		t.Error("breaker closed after a timeout")
	}
}

func TestGuardCallerLeavingSaysNothingAboutRedis(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.g.Do(ctx, func(ctx context.Context) error { return ctx.Err() })
	if !errors.Is(err, context.Canceled) || !f.g.Up() {
		t.Fatalf("cancelled caller: %v, up %v; want the breaker left closed", err, f.g.Up())
	}
	// A probe whose caller leaves hands the probe to the next caller at once.
	f.do(errDown)
	f.clock.Advance(time.Second)
	f.g.Do(ctx, func(ctx context.Context) error { return ctx.Err() })
	before := f.calls.Load()
	if err := f.do(nil); err != nil || f.calls.Load() != before+1 {
		t.Fatalf("call after an abandoned probe: %v; want it to probe Redis", err)
	}
}

func TestGuardLogsAreRateLimited(t *testing.T) {
	f := newFixture(t)
	f.do(errDown)
	for range 50 {
		f.clock.Advance(time.Second)
		f.do(errDown) // a failed probe a second for 50 s
	}
	f.clock.Advance(time.Second)
	f.do(nil)
	lines := strings.Split(strings.TrimSpace(f.log.String()), "\n")
	var down, still, back int
	for _, l := range lines {
		switch {
		case strings.Contains(l, `"msg":"redis unavailable: falling back`):
			down++
		case strings.Contains(l, `"msg":"redis unavailable still`):
			still++
		case strings.Contains(l, `"msg":"redis available again"`):
			back++
		}
	}
	// 51 failures over 50 s: one record when it went down, one per 10 s after, one back.
	if down != 1 || still != 5 || back != 1 || len(lines) != 7 {
		t.Errorf("records: %d down, %d still, %d back, %d in all; want 1, 5, 1, 7:\n%s", down, still, back, len(lines), f.log)
	}
	if strings.Contains(f.log.String(), "password") {
		t.Error("a record shows a password")
	}
}

// TestGuardWithRealClient checks the guard over a go-redis client from ParseURL against a
// server that accepts connections and never answers (a frozen Redis).
func TestGuardWithRealClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	opts, err := ParseURL("redis://" + ln.Addr().String() + "/0")
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	g := New(Options{Timeout: 50 * time.Millisecond})
	start := time.Now()
	for range 20 {
		err := g.Do(context.Background(), func(ctx context.Context) error { return c.Get(ctx, "k").Err() })
		if err == nil {
			t.Fatal("a frozen server answered")
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("20 calls to a frozen server took %v; want one deadline (50ms) and then skips", took)
	}
	if g.Up() {
		t.Error("breaker closed after calls to a frozen server")
	}
}

func TestParseURL(t *testing.T) {
	o, err := ParseURL("redis://:pw@127.0.0.1:6380/2")
	if err != nil || !o.ContextTimeoutEnabled || o.Addr != "127.0.0.1:6380" || o.DB != 2 {
		t.Fatalf("ParseURL: %+v, %v", o, err)
	}
	if _, err := ParseURL("http://x"); err == nil {
		t.Error("ParseURL accepted an http URL")
	}
}

func TestNilGuardRunsTheCall(t *testing.T) {
	var g *Guard
	called := false
	if err := g.Do(context.Background(), func(context.Context) error { called = true; return nil }); err != nil || !called || !g.Up() {
		t.Fatalf("nil guard: err %v, called %v", err, called)
	}
}
