package cache

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// brokenBackend fails every call.
type brokenBackend struct{}

func (brokenBackend) Get(context.Context, Key) (*Entry, error) { return nil, errors.New("boom") }
func (brokenBackend) Set(context.Context, Key, *Entry) error   { return errors.New("boom") }

func TestCacheFaultsAreMisses(t *testing.T) {
	var logs bytes.Buffer
	errs := &countingCounter{}
	stores := &countingCounter{}
	c := New(Policy{Group: "g", TTL: time.Minute}, Options{
		Backend: brokenBackend{}, Metrics: Metrics{BackendErrors: errs, Stores: stores},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), LogLimiter: &LogLimiter{},
	})
	for range 3 {
		if e, r := c.Lookup(context.Background(), Key{1}); e != nil || r != Unavailable {
			t.Fatalf("Lookup on a failing backend = %v, %v; want nil, Unavailable", e, r)
		}
	}
	done := false
	c.Store(Key{1}, &Entry{Status: 200}, func() { done = true })
	if !done || errs.n.Load() != 4 || stores.n.Load() != 0 {
		t.Errorf("done %v, backend errors %d, stores %d; want true, 4, 0", done, errs.n.Load(), stores.n.Load())
	}
	if n := strings.Count(logs.String(), "response cache backend failed"); n != 1 {
		t.Errorf("%d log records for 4 failures within %v; want 1:\n%s", n, LogInterval, logs.String())
	}
	// A caller that left is not a backend fault.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, r := c.Lookup(ctx, Key{1}); r != Miss || errs.n.Load() != 4 {
		t.Errorf("cancelled lookup: %v, %d errors; want Miss, 4", r, errs.n.Load())
	}
}

func TestCacheStoreAndEpoch(t *testing.T) {
	m, err := NewMemory(MemoryOptions{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	hits, coalesced := &countingCounter{}, &countingCounter{}
	c := New(Policy{Group: "g", Epoch: 1, TTL: time.Minute}, Options{Backend: m, Async: true, Metrics: Metrics{Hits: hits, Coalesced: coalesced}})
	r := &Request{Method: "POST", Path: "/x", Body: []byte(`{"a":1}`)}
	k := c.KeyOf(r)
	stored := make(chan struct{})
	c.Store(k, &Entry{Status: 200, Epoch: 1, StoredAt: time.Now(), TTL: time.Minute, CompletionTokens: 3}, func() { close(stored) })
	<-stored
	e, res := c.Lookup(context.Background(), k)
	if res != Hit || e == nil {
		t.Fatalf("Lookup after Store = %v, %v", e, res)
	}
	c.CountHit(e, false)
	c.CountHit(e, true)
	if hits.n.Load() != 1 || coalesced.n.Load() != 1 {
		t.Errorf("hits %d coalesced %d; want 1 and 1", hits.n.Load(), coalesced.n.Load())
	}
	// After a purge (a new epoch) the same request has another key and finds nothing.
	purged := New(Policy{Group: "g", Epoch: 2, TTL: time.Minute}, Options{Backend: m})
	if k2 := purged.KeyOf(r); k2 == k {
		t.Fatal("a new epoch gives the same key")
	} else if e, res := purged.Lookup(context.Background(), k2); e != nil || res != Miss {
		t.Errorf("after a purge: %v, %v; want a miss", e, res)
	}
	// An entry of another epoch under the key (a stale write racing a purge) is ignored.
	c2 := New(Policy{Group: "g", Epoch: 2, TTL: time.Minute}, Options{Backend: m})
	m.Set(context.Background(), k, &Entry{Status: 200, Epoch: 1, StoredAt: time.Now(), TTL: time.Minute})
	if e, _ := c2.Lookup(context.Background(), k); e != nil {
		t.Error("an entry of an older epoch was served")
	}
}
