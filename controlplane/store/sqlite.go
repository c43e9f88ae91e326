package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// sqliteStore keeps the config in a SQLite file in WAL mode. Writes go
// through one connection that opens its transactions with BEGIN IMMEDIATE,
// so writers in this process queue on the connection and writers in other
// processes wait on the file lock (busy_timeout); reads use a separate pool
// and never block on a writer. Other processes' writes are seen by polling.
type sqliteStore struct {
	changes
	rw      *sql.DB // one connection, BEGIN IMMEDIATE
	ro      *sql.DB // readers
	logger  *slog.Logger
	history int // revisions kept

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*sqliteStore)(nil)

// sqliteBusyTimeoutMS is how long a statement waits for another process's
// lock on the file before failing with SQLITE_BUSY.
const sqliteBusyTimeoutMS = 10000

var sqliteQueries = queries{
	insert: `INSERT INTO config_revisions (revision, body, operation, resources, message, actor) VALUES (?, ?, ?, ?, ?, ?)`,
	bump:   `UPDATE config_head SET revision = ? WHERE id = 1`,
	prune:  `DELETE FROM config_revisions WHERE revision <= ?`,
	history: `SELECT ` + historyColumns + ` FROM config_revisions
		WHERE revision < ? ORDER BY revision DESC LIMIT ?`,
	revision: `SELECT ` + historyColumns + `, body FROM config_revisions WHERE revision = ?`,
}

func openSQLite(ctx context.Context, path string, logger *slog.Logger, opts options) (Store, error) {
	switch {
	case path == "":
		return nil, errors.New("open store: empty sqlite path (want sqlite:PATH)")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return nil, fmt.Errorf("open store: unsupported sqlite path %q: use a plain file path", path)
	case strings.ContainsAny(path, "?#"):
		return nil, fmt.Errorf("open store: sqlite path %q must not contain '?' or '#'", path)
	}
	if err := privateSQLiteFiles(path, logger); err != nil {
		return nil, fmt.Errorf("open store: sqlite %q: %w", path, err)
	}
	params := fmt.Sprintf("?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)", sqliteBusyTimeoutMS)
	rw, err := sql.Open("sqlite", path+params+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open store: open sqlite %q: %w", path, err)
	}
	rw.SetMaxOpenConns(1)
	rw.SetMaxIdleConns(1)
	rw.SetConnMaxLifetime(0)
	rw.SetConnMaxIdleTime(0)
	ro, err := sql.Open("sqlite", path+params)
	if err != nil {
		_ = rw.Close()
		return nil, fmt.Errorf("open store: open sqlite %q: %w", path, err)
	}
	ro.SetMaxOpenConns(4)
	ro.SetMaxIdleConns(4)

	s := &sqliteStore{rw: rw, ro: ro, logger: logger, history: opts.history}
	if err := s.initSchema(ctx); err != nil {
		_ = ro.Close()
		_ = rw.Close()
		return nil, fmt.Errorf("open store: sqlite %q: %w", path, err)
	}
	rev, err := s.head(ctx)
	if err != nil {
		_ = ro.Close()
		_ = rw.Close()
		return nil, fmt.Errorf("open store: sqlite %q: %w", path, err)
	}
	s.start(rev, opts.pollInterval, s.head, logger)
	logger.Info("store: opened", "backend", "sqlite", "path", path, "revision", rev)
	return s, nil
}

// initSchema migrates and checks the schema in one IMMEDIATE transaction, so
// processes opening the same file at once serialize on it.
func (s *sqliteStore) initSchema(ctx context.Context) error {
	tx, err := s.rw.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	m, err := migrate(ctx, sqliteSchemaConn{tx})
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate schema: commit: %w", err)
	}
	logMigrated(s.logger, "sqlite", m)
	return nil
}

// sqliteSchemaConn is a schemaConn over a SQLite transaction.
type sqliteSchemaConn struct{ tx *sql.Tx }

func (sqliteSchemaConn) backend() string { return "sqlite" }

func (c sqliteSchemaConn) exec(ctx context.Context, q string, args ...any) error {
	_, err := c.tx.ExecContext(ctx, q, args...)
	return err
}

func (c sqliteSchemaConn) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	return c.tx.QueryRowContext(ctx, q, args...)
}

func (c sqliteSchemaConn) tableExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := c.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up table %s: %w", name, err)
	}
	return n > 0, nil
}

func (s *sqliteStore) head(ctx context.Context) (uint64, error) {
	var rev int64
	if err := s.ro.QueryRowContext(ctx, headQuery).Scan(&rev); err != nil {
		return 0, fmt.Errorf("read head revision: %w", err)
	}
	return uint64(rev), nil
}

// Load implements [Store.Load].
func (s *sqliteStore) Load(ctx context.Context) (uint64, *configv1.Config, error) {
	var (
		rev  int64
		body string
	)
	if err := s.ro.QueryRowContext(ctx, loadQuery).Scan(&rev, &body); err != nil {
		return 0, nil, fmt.Errorf("load config: %w", err)
	}
	return loaded(rev, body)
}

// History implements [Store.History].
func (s *sqliteStore) History(ctx context.Context, before uint64, limit int) ([]RevisionInfo, error) {
	rows, err := s.ro.QueryContext(ctx, sqliteQueries.history, historyBound(before), limit)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	defer rows.Close()
	var out []RevisionInfo
	for rows.Next() {
		info, err := scanRevision(rows, nil)
		if err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		out = append(out, info)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}

// Revision implements [Store.Revision].
func (s *sqliteStore) Revision(ctx context.Context, rev uint64) (RevisionInfo, *configv1.Config, error) {
	var body string
	info, err := scanRevision(s.ro.QueryRowContext(ctx, sqliteQueries.revision, int64(rev)), &body)
	if errors.Is(err, sql.ErrNoRows) {
		return RevisionInfo{}, nil, fmt.Errorf("read revision %d: %w", rev, ErrNotFound)
	}
	if err != nil {
		return RevisionInfo{}, nil, fmt.Errorf("read revision %d: %w", rev, err)
	}
	cfg, err := decodeConfig(rev, body)
	if err != nil {
		return RevisionInfo{}, nil, fmt.Errorf("read revision %d: %w", rev, err)
	}
	return info, cfg, nil
}

// Update implements [Store.Update].
func (s *sqliteStore) Update(ctx context.Context, expected *uint64, change Change, fn UpdateFunc) (uint64, error) {
	tx, err := s.rw.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("update config: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var (
		cur  int64
		body string
	)
	if err := tx.QueryRowContext(ctx, loadQuery).Scan(&cur, &body); err != nil {
		return 0, fmt.Errorf("update config: read head: %w", err)
	}
	if cur > 0 && body == "" {
		return 0, fmt.Errorf("update config: revision %d is missing", cur)
	}
	rev := uint64(cur)
	next, changed, err := prepare(rev, body, expected, change, fn)
	if err != nil {
		return 0, err
	}
	if !changed {
		return rev, nil
	}
	newRev := next.n
	exec := func(ctx context.Context, q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	}
	if step, err := writeRevision(ctx, exec, sqliteQueries, next, s.history); err != nil {
		return 0, fmt.Errorf("update config: %s: %w", step, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("update config: commit: %w", err)
	}
	s.hub.publish(uint64(newRev))
	s.logger.Debug("store: committed", "revision", newRev)
	return uint64(newRev), nil
}

// Close implements [Store.Close].
func (s *sqliteStore) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.closeErr = errors.Join(s.ro.Close(), s.rw.Close())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("close store: %w", s.closeErr)
		}
	})
	return s.closeErr
}
