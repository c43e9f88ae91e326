package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// postgresStore keeps the config in PostgreSQL. Writers serialize on a row
// lock (SELECT … FOR UPDATE) on the one-row config_head table, in READ
// COMMITTED transactions, so a writer that waited reads the winner's
// revision and config. Each commit sends pg_notify in the same transaction;
// every process LISTENs on a dedicated connection and, on a notification,
// reads the head revision. Polling backs that up, so a lost notification or a
// reconnect delays a Watch by at most the poll interval.
type postgresStore struct {
	changes
	pool    *pgxpool.Pool
	dsn     string // only for redacting errors
	logger  *slog.Logger
	history int // revisions kept

	closeOnce sync.Once
}

var _ Store = (*postgresStore)(nil)

// notifyChannel is the LISTEN/NOTIFY channel. It is database-wide, so a
// notification is only a hint to read the head revision of our own schema.
const notifyChannel = "llmproxy_config"

// schemaLockKey is the pg_advisory_xact_lock key that serializes schema
// creation across processes ("llmproxy" in ASCII).
const schemaLockKey int64 = 0x6c6c6d70726f7879

// maxUpdateAttempts bounds retries of serialization failures and deadlocks.
const maxUpdateAttempts = 8

const (
	postgresLockHead = `SELECT revision FROM config_head WHERE id = 1 FOR UPDATE`
	postgresBody     = `SELECT body FROM config_revisions WHERE revision = $1`
	postgresNotify   = `SELECT pg_notify($1, $2)`
)

var postgresQueries = queries{
	insert: `INSERT INTO config_revisions (revision, body, operation, resources, message, actor) VALUES ($1, $2, $3, $4, $5, $6)`,
	bump:   `UPDATE config_head SET revision = $1 WHERE id = 1`,
	prune:  `DELETE FROM config_revisions WHERE revision <= $1`,
	history: `SELECT ` + historyColumns + ` FROM config_revisions
		WHERE revision < $1 ORDER BY revision DESC LIMIT $2`,
	revision: `SELECT ` + historyColumns + `, body FROM config_revisions WHERE revision = $1`,
}

func openPostgres(ctx context.Context, dsn string, logger *slog.Logger, opts options) (Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, redact(fmt.Errorf("open store: parse postgres DSN: %w", err), dsn)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("open store: connect to postgres: %w", err), dsn)
	}
	s := &postgresStore{pool: pool, dsn: dsn, logger: logger, history: opts.history}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, redact(fmt.Errorf("open store: connect to postgres: %w", err), dsn)
	}
	if err := s.initSchema(ctx); err != nil {
		pool.Close()
		return nil, redact(fmt.Errorf("open store: %w", err), dsn)
	}
	rev, err := s.head(ctx)
	if err != nil {
		pool.Close()
		return nil, redact(fmt.Errorf("open store: %w", err), dsn)
	}
	bg := s.start(rev, opts.pollInterval, s.head, logger)
	s.wg.Go(func() { s.listen(bg) })
	logger.Info("store: opened", "backend", "postgres",
		"host", cfg.ConnConfig.Host, "database", cfg.ConnConfig.Database, "revision", rev)
	return s, nil
}

// initSchema migrates and checks the schema under a transaction-scoped
// advisory lock, so processes opening the same database at once serialize
// (concurrent DDL could otherwise fail on the catalog).
func (s *postgresStore) initSchema(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, schemaLockKey); err != nil {
		return fmt.Errorf("migrate schema: lock: %w", err)
	}
	m, err := migrate(ctx, postgresSchemaConn{tx})
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate schema: commit: %w", err)
	}
	logMigrated(s.logger, "postgres", m)
	return nil
}

// postgresSchemaConn is a schemaConn over a PostgreSQL transaction; it
// numbers the ? placeholders of the shared queries.
type postgresSchemaConn struct{ tx pgx.Tx }

func (postgresSchemaConn) backend() string { return "postgres" }

func (c postgresSchemaConn) exec(ctx context.Context, q string, args ...any) error {
	_, err := c.tx.Exec(ctx, numberPlaceholders(q), args...)
	return err
}

func (c postgresSchemaConn) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	return c.tx.QueryRow(ctx, numberPlaceholders(q), args...)
}

// tableExists looks name up along the connection's search_path.
func (c postgresSchemaConn) tableExists(ctx context.Context, name string) (bool, error) {
	var ok bool
	if err := c.tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up table %s: %w", name, err)
	}
	return ok, nil
}

// numberPlaceholders turns the ? placeholders of q into $1, $2, … (the
// shared queries hold no ? in literals).
func numberPlaceholders(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *postgresStore) head(ctx context.Context) (uint64, error) {
	var rev int64
	if err := s.pool.QueryRow(ctx, headQuery).Scan(&rev); err != nil {
		return 0, redact(fmt.Errorf("read head revision: %w", err), s.dsn)
	}
	return uint64(rev), nil
}

// Load implements [Store.Load].
func (s *postgresStore) Load(ctx context.Context) (uint64, *configv1.Config, error) {
	var (
		rev  int64
		body string
	)
	if err := s.pool.QueryRow(ctx, loadQuery).Scan(&rev, &body); err != nil {
		return 0, nil, redact(fmt.Errorf("load config: %w", err), s.dsn)
	}
	return loaded(rev, body)
}

// History implements [Store.History].
func (s *postgresStore) History(ctx context.Context, before uint64, limit int) ([]RevisionInfo, error) {
	rows, err := s.pool.Query(ctx, postgresQueries.history, historyBound(before), limit)
	if err != nil {
		return nil, redact(fmt.Errorf("read history: %w", err), s.dsn)
	}
	defer rows.Close()
	var out []RevisionInfo
	for rows.Next() {
		info, err := scanRevision(rows, nil)
		if err != nil {
			return nil, redact(fmt.Errorf("read history: %w", err), s.dsn)
		}
		out = append(out, info)
	}
	if err := rows.Err(); err != nil {
		return nil, redact(fmt.Errorf("read history: %w", err), s.dsn)
	}
	return out, nil
}

// Revision implements [Store.Revision].
func (s *postgresStore) Revision(ctx context.Context, rev uint64) (RevisionInfo, *configv1.Config, error) {
	var body string
	info, err := scanRevision(s.pool.QueryRow(ctx, postgresQueries.revision, int64(rev)), &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return RevisionInfo{}, nil, fmt.Errorf("read revision %d: %w", rev, ErrNotFound)
	}
	if err != nil {
		return RevisionInfo{}, nil, redact(fmt.Errorf("read revision %d: %w", rev, err), s.dsn)
	}
	cfg, err := decodeConfig(rev, body)
	if err != nil {
		return RevisionInfo{}, nil, fmt.Errorf("read revision %d: %w", rev, err)
	}
	return info, cfg, nil
}

// Update implements [Store.Update]. Serialization failures and deadlocks
// (possible only if the server forces a stricter isolation level) are
// retried with a fresh read, which re-checks expected.
func (s *postgresStore) Update(ctx context.Context, expected *uint64, change Change, fn UpdateFunc) (uint64, error) {
	for attempt := 1; ; attempt++ {
		rev, retry, err := s.updateOnce(ctx, expected, change, fn)
		if err == nil || !retry || attempt == maxUpdateAttempts {
			return rev, err
		}
		s.logger.Debug("store: retrying update", "attempt", attempt, "error", err)
		wait := time.Duration(rand.Int64N(int64(attempt) * int64(10*time.Millisecond)))
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("update config: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// updateOnce runs one write transaction. retry reports a transient database
// error worth retrying; errors from fn are never retried.
func (s *postgresStore) updateOnce(ctx context.Context, expected *uint64, change Change, fn UpdateFunc) (newRev uint64, retry bool, err error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, false, redact(fmt.Errorf("update config: begin: %w", err), s.dsn)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	dbErr := func(what string, err error) (uint64, bool, error) {
		return 0, retryable(err), redact(fmt.Errorf("update config: %s: %w", what, err), s.dsn)
	}

	var cur int64
	if err := tx.QueryRow(ctx, postgresLockHead).Scan(&cur); err != nil {
		return dbErr("lock head", err)
	}
	var body string
	if cur > 0 {
		if err := tx.QueryRow(ctx, postgresBody, cur).Scan(&body); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return 0, false, fmt.Errorf("update config: revision %d is missing", cur)
			}
			return dbErr("read config", err)
		}
	}
	next, changed, err := prepare(uint64(cur), body, expected, change, fn)
	if err != nil {
		return 0, false, err
	}
	if !changed {
		return uint64(cur), false, nil
	}
	n := next.n
	exec := func(ctx context.Context, q string, args ...any) error {
		_, err := tx.Exec(ctx, q, args...)
		return err
	}
	if step, err := writeRevision(ctx, exec, postgresQueries, next, s.history); err != nil {
		return dbErr(step, err)
	}
	if _, err := tx.Exec(ctx, postgresNotify, notifyChannel, strconv.FormatInt(n, 10)); err != nil {
		return dbErr("notify", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return dbErr("commit", err)
	}
	s.hub.publish(uint64(n))
	s.logger.Debug("store: committed", "revision", n)
	return uint64(n), false, nil
}

// retryable reports serialization failures and deadlocks.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	return false
}

// listen keeps a LISTEN connection open until ctx is done, reconnecting with
// jittered exponential backoff. Every notification, and every (re)connect,
// makes the poll loop read the head revision.
func (s *postgresStore) listen(ctx context.Context) {
	const (
		minBackoff = 100 * time.Millisecond
		maxBackoff = 5 * time.Second
	)
	backoff := minBackoff
	for {
		listened, err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if listened {
			backoff = minBackoff
		}
		s.logger.Warn("store: listen for config changes failed; polling meanwhile",
			"error", redact(err, s.dsn), "retry_in", backoff)
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// listenOnce connects, LISTENs and relays notifications as hints until the
// connection fails or ctx is done. listened reports whether LISTEN succeeded.
func (s *postgresStore) listenOnce(ctx context.Context) (listened bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	// Anything committed while we were not listening is caught here.
	s.hub.hint()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return true, fmt.Errorf("wait for notification: %w", err)
		}
		s.hub.hint()
	}
}

// Close implements [Store.Close].
func (s *postgresStore) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.pool.Close()
	})
	return nil
}
