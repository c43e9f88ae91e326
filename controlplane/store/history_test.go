package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// execSQL runs statements on the database behind dsn, outside any Store: what an operator
// (or an accident) does by hand.
func execSQL(t *testing.T, dsn string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, q := range stmts {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		return
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestHistoryRecordsChanges(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{})
		start := time.Now().Add(-time.Minute)
		changes := []Change{
			{Operation: "CreateUpstream", Message: "first", Actor: "admin"},
			{Operation: "CreateUpstream", Message: "second", Actor: "admin"},
			{Operation: "ApplyConfig", Actor: "anonymous"},
		}
		edits := []UpdateFunc{
			addUpstream("a"),
			addUpstream("b"),
			func(_ uint64, c *configv1.Config) (*configv1.Config, error) {
				c.Upstreams[0].Url = "http://127.0.0.1:2/a"
				c.Upstreams = c.Upstreams[:1]
				return c, nil
			},
		}
		var configs []*configv1.Config
		for i := range changes {
			if _, err := s.Update(t.Context(), nil, changes[i], edits[i]); err != nil {
				t.Fatal(err)
			}
			_, cfg := mustLoad(t, s)
			configs = append(configs, cfg)
		}
		// A no-op write leaves no entry.
		if rev, err := s.Update(t.Context(), nil, Change{Operation: "Noop"}, func(_ uint64, c *configv1.Config) (*configv1.Config, error) { return c, nil }); err != nil || rev != 3 {
			t.Fatalf("no-op write: %d, %v", rev, err)
		}

		got, err := s.History(t.Context(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := []RevisionInfo{
			{Revision: 3, Operation: "ApplyConfig", Resources: []string{"upstream/a", "upstream/b"}, Actor: "anonymous"},
			{Revision: 2, Operation: "CreateUpstream", Resources: []string{"upstream/b"}, Message: "second", Actor: "admin"},
			{Revision: 1, Operation: "CreateUpstream", Resources: []string{"upstream/a"}, Message: "first", Actor: "admin"},
		}
		if len(got) != len(want) {
			t.Fatalf("History: %+v; want %d entries", got, len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.Revision != w.Revision || g.Operation != w.Operation || !slices.Equal(g.Resources, w.Resources) || g.Message != w.Message || g.Actor != w.Actor {
				t.Errorf("History[%d] = %+v; want %+v", i, g, w)
			}
			if g.Time.Before(start) || g.Time.After(time.Now().Add(time.Minute)) {
				t.Errorf("History[%d].Time = %v; want about now", i, g.Time)
			}
		}
		page, err := s.History(t.Context(), 3, 1)
		if err != nil || len(page) != 1 || page[0].Revision != 2 {
			t.Errorf("History(before 3, limit 1) = %+v, %v; want revision 2", page, err)
		}
		if page, err := s.History(t.Context(), 1, 10); err != nil || len(page) != 0 {
			t.Errorf("History(before 1) = %+v, %v; want nothing", page, err)
		}
		for i, cfg := range configs {
			info, got, err := s.Revision(t.Context(), uint64(i+1))
			if err != nil || info.Revision != uint64(i+1) || info.Message != changes[i].Message || !proto.Equal(got, cfg) {
				t.Errorf("Revision(%d) = %+v, %v, %v; want its config %v", i+1, info, got, err, cfg)
			}
		}
		for _, rev := range []uint64{0, 4} {
			if _, _, err := s.Revision(t.Context(), rev); !errors.Is(err, ErrNotFound) {
				t.Errorf("Revision(%d): %v; want ErrNotFound", rev, err)
			}
		}
	})
}

func TestHistoryIsPruned(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const keep, total = 5, 12
		s := openStore(t, b.newDSN(t), options{history: keep})
		for i := range total {
			mustUpdate(t, s, nil, addUpstream(fmt.Sprint(i)))
		}
		got, err := s.History(t.Context(), 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var revs []uint64
		for _, r := range got {
			revs = append(revs, r.Revision)
		}
		if want := []uint64{12, 11, 10, 9, 8}; !slices.Equal(revs, want) {
			t.Errorf("kept revisions %v; want %v", revs, want)
		}
		if _, _, err := s.Revision(t.Context(), total-keep); !errors.Is(err, ErrNotFound) {
			t.Errorf("pruned revision %d: %v; want ErrNotFound", total-keep, err)
		}
		if rev, cfg := mustLoad(t, s); rev != total || len(cfg.GetUpstreams()) != total {
			t.Errorf("Load: revision %d with %d upstreams; want %d", rev, len(cfg.GetUpstreams()), total)
		}
	})
}

func TestHistorySurvivesReopenAndIsShared(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn := b.newDSN(t)
		s1 := openStore(t, dsn, options{})
		s2 := openStore(t, dsn, options{})
		if _, err := s1.Update(t.Context(), nil, Change{Operation: "CreateUpstream", Message: "from one"}, addUpstream("a")); err != nil {
			t.Fatal(err)
		}
		if _, err := s2.Update(t.Context(), nil, Change{Operation: "CreateUpstream", Message: "from two"}, addUpstream("b")); err != nil {
			t.Fatal(err)
		}
		if err := s1.Close(); err != nil {
			t.Fatal(err)
		}
		s3 := openStore(t, dsn, options{})
		for _, s := range []Store{s2, s3} {
			got, err := s.History(t.Context(), 0, 10)
			if err != nil || len(got) != 2 || got[0].Message != "from two" || got[1].Message != "from one" {
				t.Errorf("History: %+v, %v; want both writes, newest first", got, err)
			}
		}
	})
}

// legacySchema is the schema written before migrations were versioned.
var legacySchema = map[string][]string{
	"sqlite": {
		`CREATE TABLE config_head (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL)`,
		`CREATE TABLE config_revisions (revision INTEGER PRIMARY KEY, body TEXT NOT NULL,
			created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))`,
	},
	"postgres": {
		`CREATE TABLE config_head (id smallint PRIMARY KEY CHECK (id = 1), revision bigint NOT NULL)`,
		`CREATE TABLE config_revisions (revision bigint PRIMARY KEY, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
	},
}

func TestMigrations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		t.Run("fresh database reaches the latest version", func(t *testing.T) {
			dsn := b.newDSN(t)
			s := openStore(t, dsn, options{})
			if got := schemaVersions(t, s); !slices.Equal(got, allVersions()) {
				t.Errorf("schema_migrations versions %v; want %v", got, allVersions())
			}
			mustUpdate(t, s, nil, addUpstream("a"))
			// Reopening migrates nothing more.
			s2 := openStore(t, dsn, options{})
			if got := schemaVersions(t, s2); !slices.Equal(got, allVersions()) {
				t.Errorf("after reopen: versions %v; want %v", got, allVersions())
			}
		})
		t.Run("database made before versioned migrations is adopted", func(t *testing.T) {
			dsn := b.newDSN(t)
			stmts := append(slices.Clone(legacySchema[b.name]),
				`INSERT INTO config_head (id, revision) VALUES (1, 1)`,
				`INSERT INTO config_revisions (revision, body) VALUES (1, '{"upstreams":[{"name":"old","url":"http://127.0.0.1:1"}]}')`)
			execSQL(t, dsn, stmts...)
			s := openStore(t, dsn, options{})
			rev, cfg := mustLoad(t, s)
			if rev != 1 || !slices.Equal(upstreamNames(cfg), []string{"old"}) {
				t.Fatalf("legacy store: revision %d, upstreams %v", rev, upstreamNames(cfg))
			}
			if got := schemaVersions(t, s); !slices.Equal(got, allVersions()) {
				t.Errorf("versions %v; want %v", got, allVersions())
			}
			if _, err := s.Update(t.Context(), nil, Change{Operation: "CreateUpstream", Message: "after"}, addUpstream("new")); err != nil {
				t.Fatal(err)
			}
			got, err := s.History(t.Context(), 0, 10)
			if err != nil || len(got) != 2 || got[0].Message != "after" || got[1].Revision != 1 || got[1].Operation != "" {
				t.Errorf("history across the migration: %+v, %v", got, err)
			}
		})
	})
}

// allVersions lists the version of every migration, in order.
func allVersions() []int {
	var out []int
	for _, m := range migrations {
		out = append(out, m.version)
	}
	return out
}

// schemaVersions lists the versions recorded in schema_migrations.
func schemaVersions(t *testing.T, s Store) []int {
	t.Helper()
	const q = `SELECT version FROM schema_migrations ORDER BY version`
	var out []int
	switch s := s.(type) {
	case *sqliteStore:
		rows, err := s.ro.QueryContext(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
	case *postgresStore:
		rows, err := s.pool.Query(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
	default:
		t.Fatalf("unexpected store type %T", s)
	}
	return out
}

// TestInconsistentStoreRefused: a store whose tables or head contradict each other is not
// opened, and the error says what is wrong. Before versioned migrations, a lost config_head
// was silently recreated at revision 0 and every later write failed on a duplicate key.
func TestInconsistentStoreRefused(t *testing.T) {
	tests := []struct {
		name    string
		breakIt []string
		want    string
	}{
		{"config_head dropped", []string{`DROP TABLE config_head`}, "table config_head is missing"},
		{"config_revisions dropped", []string{`DROP TABLE config_revisions`}, "table config_revisions is missing"},
		{"head row deleted", []string{`DELETE FROM config_head`}, "config_head has no row"},
		{"head revision deleted", []string{`DELETE FROM config_revisions WHERE revision = 2`}, "head revision 2 is missing"},
		{"revision beyond the head", []string{`UPDATE config_head SET revision = 1`}, "holds revision 2 but the head (config_head) is at revision 1"},
		{"column dropped", []string{`ALTER TABLE config_revisions DROP COLUMN message`}, "lacks column message"},
		{"migrations lost with config_head", []string{`DROP TABLE schema_migrations`, `DROP TABLE config_head`}, "config_revisions exists but config_head is missing"},
		{"newer schema", []string{`INSERT INTO schema_migrations (version, name) VALUES (99, 'future')`}, "schema version 99, newer"},
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				dsn := b.newDSN(t)
				s, err := Open(t.Context(), dsn, nil)
				if err != nil {
					t.Fatal(err)
				}
				mustUpdate(t, s, nil, addUpstream("a"))
				mustUpdate(t, s, nil, addUpstream("b"))
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				execSQL(t, dsn, tt.breakIt...)
				s, err = Open(t.Context(), dsn, nil)
				if err == nil {
					rev, _, lerr := s.Load(t.Context())
					_ = s.Close()
					t.Fatalf("Open succeeded (Load: revision %d, %v); want an error containing %q", rev, lerr, tt.want)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Open: %v; want it to contain %q", err, tt.want)
				}
				if !strings.Contains(tt.name, "newer") && !errors.Is(err, ErrInconsistent) {
					t.Errorf("Open: %v; want ErrInconsistent", err)
				}
			})
		}
	})
}
