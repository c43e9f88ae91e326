package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/store/storetest"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// backend makes a fresh, empty database for one test and returns its DSN.
// Calling it once and opening the DSN twice gives two Stores (two
// "processes") on one database.
type backend struct {
	name   string
	newDSN func(t *testing.T) string
}

func backends() []backend {
	return []backend{
		{name: "sqlite", newDSN: sqliteDSN},
		{name: "postgres", newDSN: postgresDSN},
	}
}

// forEachBackend runs f as a parallel subtest per backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

func sqliteDSN(t *testing.T) string {
	// Nested directories check that Open creates missing parents.
	return "sqlite:" + filepath.Join(t.TempDir(), "nested", "dir", "controlplane.db")
}

// postgresDSN creates a schema of its own for the test, dropped at cleanup,
// and returns a DSN whose search_path selects it. It skips the test when
// PostgreSQL is unreachable, unless CI is set.
func postgresDSN(t *testing.T) string { return storetest.PostgresDSN(t, "store_test") }

// openStore opens dsn with opts and closes it at cleanup.
func openStore(t *testing.T, dsn string, opts options) Store {
	t.Helper()
	s, err := open(t.Context(), dsn, nil, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// addUpstream returns an UpdateFunc appending an upstream called name.
func addUpstream(name string) UpdateFunc {
	return func(_ uint64, c *configv1.Config) (*configv1.Config, error) {
		c.Upstreams = append(c.Upstreams, &configv1.Upstream{Name: name, Url: "http://127.0.0.1:1/" + name})
		return c, nil
	}
}

func mustUpdate(t *testing.T, s Store, expected *uint64, fn UpdateFunc) uint64 {
	t.Helper()
	rev, err := s.Update(t.Context(), expected, Change{}, fn)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	return rev
}

func mustLoad(t *testing.T, s Store) (uint64, *configv1.Config) {
	t.Helper()
	rev, cfg, err := s.Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return rev, cfg
}

func upstreamNames(c *configv1.Config) []string {
	var names []string
	for _, u := range c.GetUpstreams() {
		names = append(names, u.GetName())
	}
	return names
}

// waitRevision receives from ch until a value >= want arrives, failing the
// test at the deadline or if ch closes first.
func waitRevision(t *testing.T, ch <-chan uint64, want uint64, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	var last uint64
	for {
		select {
		case rev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed; last revision %d, want %d", last, want)
			}
			if rev < last {
				t.Fatalf("watch went backwards: got %d after %d", rev, last)
			}
			last = rev
			if rev >= want {
				return
			}
		case <-deadline:
			t.Fatalf("watch: no revision >= %d within %v (last %d)", want, within, last)
		}
	}
}

func TestEmptyStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{})
		rev, cfg := mustLoad(t, s)
		if rev != 0 {
			t.Errorf("revision = %d; want 0", rev)
		}
		if cfg == nil {
			t.Fatal("config is nil; want empty config")
		}
		if !proto.Equal(cfg, &configv1.Config{}) {
			t.Errorf("config = %v; want empty", cfg)
		}
	})
}

func TestUpdateBumpsRevision(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{})
		var want []string
		for i := 1; i <= 5; i++ {
			name := fmt.Sprintf("u%d", i)
			want = append(want, name)
			var gotRev uint64
			rev := mustUpdate(t, s, nil, func(r uint64, c *configv1.Config) (*configv1.Config, error) {
				gotRev = r
				return addUpstream(name)(r, c)
			})
			if rev != uint64(i) {
				t.Errorf("write %d: revision = %d; want %d", i, rev, i)
			}
			if gotRev != uint64(i-1) {
				t.Errorf("write %d: fn saw revision %d; want %d", i, gotRev, i-1)
			}
			lrev, cfg := mustLoad(t, s)
			if lrev != rev {
				t.Errorf("write %d: Load revision = %d; want %d", i, lrev, rev)
			}
			if got := upstreamNames(cfg); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("write %d: upstreams = %v; want %v", i, got, want)
			}
		}
	})
}

func TestNoOpWriteKeepsRevision(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{})
		identity := func(_ uint64, c *configv1.Config) (*configv1.Config, error) { return c, nil }
		if rev := mustUpdate(t, s, nil, identity); rev != 0 {
			t.Errorf("no-op on empty store: revision = %d; want 0", rev)
		}
		mustUpdate(t, s, nil, addUpstream("a"))
		// A fresh but equal config is a no-op too.
		equal := func(_ uint64, c *configv1.Config) (*configv1.Config, error) {
			return proto.Clone(c).(*configv1.Config), nil
		}
		for _, fn := range []UpdateFunc{identity, equal} {
			if rev := mustUpdate(t, s, nil, fn); rev != 1 {
				t.Errorf("no-op: revision = %d; want 1", rev)
			}
		}
		if rev, _ := mustLoad(t, s); rev != 1 {
			t.Errorf("Load revision = %d; want 1", rev)
		}
	})
}

type vetoError struct{ reason string }

func (e *vetoError) Error() string { return "veto: " + e.reason }

func TestUpdateFuncErrorAborts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{})
		mustUpdate(t, s, nil, addUpstream("a"))
		veto := &vetoError{reason: "no"}
		_, err := s.Update(t.Context(), nil, Change{}, func(_ uint64, c *configv1.Config) (*configv1.Config, error) {
			// Mutating the copy must not leak into the store.
			c.Upstreams[0].Name = "mutated"
			c.Upstreams = append(c.Upstreams, &configv1.Upstream{Name: "b"})
			return nil, veto
		})
		if err != veto {
			t.Fatalf("Update error = %v; want the fn's error unchanged", err)
		}
		var ve *vetoError
		if !errors.As(err, &ve) {
			t.Errorf("errors.As(%v, *vetoError) = false", err)
		}
		rev, cfg := mustLoad(t, s)
		if rev != 1 {
			t.Errorf("revision = %d; want 1", rev)
		}
		if got := upstreamNames(cfg); len(got) != 1 || got[0] != "a" {
			t.Errorf("upstreams = %v; want [a]", got)
		}
		// Mutating what Load returned must not leak either.
		cfg.Upstreams[0].Name = "mutated"
		if _, cfg2 := mustLoad(t, s); cfg2.Upstreams[0].GetName() != "a" {
			t.Errorf("Load result aliases store state")
		}

		_, err = s.Update(t.Context(), nil, Change{}, func(uint64, *configv1.Config) (*configv1.Config, error) { return nil, nil })
		if err == nil || !strings.Contains(err.Error(), "nil config") {
			t.Errorf("nil config: error = %v; want a nil config error", err)
		}
		if rev, _ := mustLoad(t, s); rev != 1 {
			t.Errorf("revision after nil config = %d; want 1", rev)
		}
	})
}

func TestExpectedRevision(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{})
		zero := uint64(0)
		if rev := mustUpdate(t, s, &zero, addUpstream("a")); rev != 1 {
			t.Fatalf("expected 0 on empty store: revision = %d; want 1", rev)
		}
		one := uint64(1)
		if rev := mustUpdate(t, s, &one, addUpstream("b")); rev != 2 {
			t.Fatalf("expected 1: revision = %d; want 2", rev)
		}
		for _, stale := range []uint64{0, 1, 3} {
			called := false
			rev, err := s.Update(t.Context(), &stale, Change{}, func(r uint64, c *configv1.Config) (*configv1.Config, error) {
				called = true
				return addUpstream("c")(r, c)
			})
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("expected %d: error = %v; want ErrConflict", stale, err)
			}
			if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(stale)) || !strings.Contains(msg, "2") {
				t.Errorf("conflict message %q does not name both revisions", msg)
			}
			if called {
				t.Errorf("expected %d: fn called despite conflict", stale)
			}
			if rev != 0 {
				t.Errorf("expected %d: revision = %d; want 0 with an error", stale, rev)
			}
		}
		if rev, _ := mustLoad(t, s); rev != 2 {
			t.Errorf("revision = %d; want 2", rev)
		}
	})
}

// TestConcurrentWriters runs N writers × M writes spread over two Store
// instances on one database (two "processes"); every write appends a unique
// upstream, so a lost update would show as a missing name.
func TestConcurrentWriters(t *testing.T) {
	const writers, writes = 6, 8
	for _, optimistic := range []bool{false, true} {
		name := "blind"
		if optimistic {
			name = "expected_revision"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			forEachBackend(t, func(t *testing.T, b backend) {
				dsn := b.newDSN(t)
				stores := []Store{openStore(t, dsn, options{}), openStore(t, dsn, options{})}
				var wg sync.WaitGroup
				errs := make(chan error, writers*writes)
				for g := range writers {
					s := stores[g%len(stores)]
					wg.Go(func() {
						for i := range writes {
							fn := addUpstream(fmt.Sprintf("w%d-%d", g, i))
							if !optimistic {
								if _, err := s.Update(t.Context(), nil, Change{}, fn); err != nil {
									errs <- err
								}
								continue
							}
							for {
								rev, _, err := s.Load(t.Context())
								if err != nil {
									errs <- err
									break
								}
								_, err = s.Update(t.Context(), &rev, Change{}, fn)
								if errors.Is(err, ErrConflict) {
									continue
								}
								if err != nil {
									errs <- err
								}
								break
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Errorf("Update: %v", err)
				}
				rev, cfg := mustLoad(t, stores[1])
				if rev != writers*writes {
					t.Errorf("revision = %d; want %d", rev, writers*writes)
				}
				seen := map[string]bool{}
				for _, n := range upstreamNames(cfg) {
					if seen[n] {
						t.Errorf("upstream %q written twice", n)
					}
					seen[n] = true
				}
				for g := range writers {
					for i := range writes {
						if n := fmt.Sprintf("w%d-%d", g, i); !seen[n] {
							t.Errorf("lost update: upstream %q missing", n)
						}
					}
				}
			})
		})
	}
}

// TestWatchSeesOtherInstance checks that a write through one Store reaches a
// watcher on another Store on the same database within a second or so. The
// watching PostgreSQL store has polling disabled, so only LISTEN/NOTIFY can
// deliver; SQLite relies on polling.
func TestWatchSeesOtherInstance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn := b.newDSN(t)
		opts := options{}
		if b.name == "postgres" {
			opts.pollInterval = -1
		}
		watcher := openStore(t, dsn, opts)
		writer := openStore(t, dsn, options{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		remote := watcher.Watch(ctx)
		local := writer.Watch(ctx)
		for want := uint64(1); want <= 3; want++ {
			// The first write may race the listener's LISTEN; the
			// reconnect hint covers it.
			if rev := mustUpdate(t, writer, nil, addUpstream(fmt.Sprint(want))); rev != want {
				t.Fatalf("revision = %d; want %d", rev, want)
			}
			waitRevision(t, local, want, time.Second)
			waitRevision(t, remote, want, 2*time.Second)
		}
		// And the other way round.
		back := writer.Watch(ctx)
		mustUpdate(t, watcher, nil, addUpstream("back"))
		waitRevision(t, back, 4, 2*time.Second)
	})
}

func TestWatchCoalesces(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{pollInterval: -1})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch1, ch2 := s.Watch(ctx), s.Watch(ctx)
		for i := range 5 {
			mustUpdate(t, s, nil, addUpstream(fmt.Sprint(i)))
		}
		for _, ch := range []<-chan uint64{ch1, ch2} {
			select {
			case rev := <-ch:
				if rev != 5 {
					t.Errorf("first value = %d; want 5 (latest wins)", rev)
				}
			case <-time.After(time.Second):
				t.Fatal("no value from watch")
			}
			select {
			case rev := <-ch:
				t.Errorf("unexpected second value %d; want the burst coalesced", rev)
			default:
			}
		}
	})
}

func TestWatchCloses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, err := Open(t.Context(), b.newDSN(t), nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		byCtx := s.Watch(ctx)
		byClose := s.Watch(t.Context())
		cancel()
		waitClosed(t, byCtx)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		waitClosed(t, byClose)
		waitClosed(t, s.Watch(t.Context()))
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func waitClosed(t *testing.T, ch <-chan uint64) {
	t.Helper()
	deadline := time.After(2 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed")
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn := b.newDSN(t)
		s, err := Open(t.Context(), dsn, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		mustUpdate(t, s, nil, addUpstream("a"))
		mustUpdate(t, s, nil, addUpstream("b"))
		_, want := mustLoad(t, s)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		s2 := openStore(t, dsn, options{})
		rev, got := mustLoad(t, s2)
		if rev != 2 || !proto.Equal(got, want) {
			t.Errorf("after reopen: revision %d, config %v; want 2, %v", rev, got, want)
		}
		if rev := mustUpdate(t, s2, nil, addUpstream("c")); rev != 3 {
			t.Errorf("write after reopen: revision = %d; want 3", rev)
		}
	})
}

func TestConcurrentOpen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn := b.newDSN(t)
		const n = 4
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				s, err := Open(t.Context(), dsn, nil)
				if err != nil {
					errs <- err
					return
				}
				errs <- s.Close()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent Open: %v", err)
			}
		}
	})
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name    string
		dsn     string
		want    string // substring of the error
		notWant string // must not appear (a password)
	}{
		{name: "unknown scheme", dsn: "mysql://root:hunter2@127.0.0.1/db", want: `"mysql"`, notWant: "hunter2"},
		{name: "no scheme", dsn: "/var/lib/cp.db", want: "missing scheme"},
		{name: "empty sqlite path", dsn: "sqlite:", want: "empty sqlite path"},
		{name: "sqlite memory", dsn: "sqlite::memory:", want: "plain file path"},
		{name: "sqlite query", dsn: "sqlite:/tmp/x.db?mode=ro", want: "must not contain"},
		{
			name:    "postgres unreachable",
			dsn:     "postgres://admin:s3cretPW@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
			want:    "connect to postgres",
			notWant: "s3cretPW",
		},
		{
			name:    "postgres bad DSN",
			dsn:     "postgresql://admin:s3cretPW@127.0.0.1:notaport/db",
			want:    "open store",
			notWant: "s3cretPW",
		},
		{
			name:    "postgres password in query",
			dsn:     "postgres://admin@127.0.0.1:1/db?password=qu3ryPW&connect_timeout=2",
			want:    "connect to postgres",
			notWant: "qu3ryPW",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(t.Context(), tt.dsn, nil)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) succeeded; want error", tt.dsn)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q; want it to contain %q", err, tt.want)
			}
			if tt.notWant != "" && strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("error %q leaks %q", err, tt.notWant)
			}
		})
	}
}
