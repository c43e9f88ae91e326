package store

// Usage rollups: per-minute sums of proxy traffic by consumer, model and upstream, written by
// every control-plane replica from the reports of its own proxies and read by all of them.
// The table is made by migration 3 (migrate.go):
//
//	usage_minutes(dimension text,      -- "consumer", "model" or "upstream"
//	              minute bigint,       -- Unix seconds of the minute's start (UTC)
//	              name text,
//	              requests, errors, prompt_tokens, completion_tokens bigint,
//	              PRIMARY KEY (dimension, minute, name))

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Usage dimensions.
const (
	UsageByConsumer = "consumer"
	UsageByModel    = "model"
	UsageByUpstream = "upstream"
)

// UsageRow is the traffic of one name in one dimension over one minute.
type UsageRow struct {
	Dimension string
	// Minute is the start of the minute (UTC, whole minute).
	Minute time.Time
	Name   string
	UsageCounts
}

// UsageCounts are summed traffic counts.
type UsageCounts struct {
	Requests, Errors, PromptTokens, CompletionTokens uint64
}

// Add adds o to c.
func (c *UsageCounts) Add(o UsageCounts) {
	c.Requests += o.Requests
	c.Errors += o.Errors
	c.PromptTokens += o.PromptTokens
	c.CompletionTokens += o.CompletionTokens
}

// UsageStore keeps the per-minute usage rollups. Its methods are safe for concurrent use,
// also by several processes sharing the database.
type UsageStore interface {
	// AddUsage adds every row to the stored sums of its (dimension, minute, name), in one
	// transaction. Adding is commutative, so replicas may add the same keys concurrently.
	AddUsage(ctx context.Context, rows []UsageRow) error
	// QueryUsage returns the stored rows of dimension with from ≤ minute < to, ordered by
	// minute, then name.
	QueryUsage(ctx context.Context, dimension string, from, to time.Time) ([]UsageRow, error)
	// PruneUsage deletes the rows of minutes before before.
	PruneUsage(ctx context.Context, before time.Time) error
}

// usageStatements are the usage queries in a backend's placeholder syntax.
type usageStatements struct {
	upsert, query, prune string
}

const usageColumns = `dimension, minute, name, requests, errors, prompt_tokens, completion_tokens`

const usageOnConflict = ` ON CONFLICT (dimension, minute, name) DO UPDATE SET
	requests = usage_minutes.requests + excluded.requests,
	errors = usage_minutes.errors + excluded.errors,
	prompt_tokens = usage_minutes.prompt_tokens + excluded.prompt_tokens,
	completion_tokens = usage_minutes.completion_tokens + excluded.completion_tokens`

var sqliteUsage = usageStatements{
	upsert: `INSERT INTO usage_minutes (` + usageColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?)` + usageOnConflict,
	query: `SELECT ` + usageColumns + ` FROM usage_minutes
		WHERE dimension = ? AND minute >= ? AND minute < ? ORDER BY minute, name`,
	prune: `DELETE FROM usage_minutes WHERE minute < ?`,
}

var postgresUsage = usageStatements{
	upsert: `INSERT INTO usage_minutes (` + usageColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7)` + usageOnConflict,
	query: `SELECT ` + usageColumns + ` FROM usage_minutes
		WHERE dimension = $1 AND minute >= $2 AND minute < $3 ORDER BY minute, name`,
	prune: `DELETE FROM usage_minutes WHERE minute < $1`,
}

// sortedUsage returns rows merged by key and sorted by it, so that concurrent writers lock
// rows in one order and cannot deadlock.
func sortedUsage(rows []UsageRow) []UsageRow {
	type key struct {
		dim    string
		minute int64
		name   string
	}
	at := map[key]int{}
	out := make([]UsageRow, 0, len(rows))
	for _, r := range rows {
		k := key{r.Dimension, minuteOf(r.Minute), r.Name}
		if i, ok := at[k]; ok {
			out[i].Add(r.UsageCounts)
			continue
		}
		r.Minute = time.Unix(k.minute, 0).UTC()
		at[k] = len(out)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b UsageRow) int {
		return cmp.Or(cmp.Compare(a.Dimension, b.Dimension), a.Minute.Compare(b.Minute), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// minuteOf returns the Unix seconds of the start of t's minute.
func minuteOf(t time.Time) int64 {
	s := t.Unix()
	return s - s%60
}

func usageArgs(r UsageRow) []any {
	return []any{r.Dimension, minuteOf(r.Minute), r.Name,
		int64(r.Requests), int64(r.Errors), int64(r.PromptTokens), int64(r.CompletionTokens)}
}

// scanUsage reads one row of the query statement.
func scanUsage(scan func(dest ...any) error) (UsageRow, error) {
	var (
		r                 UsageRow
		minute            int64
		req, errs, pr, co int64
	)
	if err := scan(&r.Dimension, &minute, &r.Name, &req, &errs, &pr, &co); err != nil {
		return UsageRow{}, err
	}
	r.Minute = time.Unix(minute, 0).UTC()
	r.UsageCounts = UsageCounts{uint64(req), uint64(errs), uint64(pr), uint64(co)}
	return r, nil
}

// AddUsage implements [UsageStore.AddUsage].
func (s *sqliteStore) AddUsage(ctx context.Context, rows []UsageRow) error {
	if len(rows) == 0 {
		return nil
	}
	tx, err := s.rw.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("add usage: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, sqliteUsage.upsert)
	if err != nil {
		return fmt.Errorf("add usage: %w", err)
	}
	defer stmt.Close()
	for _, r := range sortedUsage(rows) {
		if _, err := stmt.ExecContext(ctx, usageArgs(r)...); err != nil {
			return fmt.Errorf("add usage: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("add usage: commit: %w", err)
	}
	return nil
}

// QueryUsage implements [UsageStore.QueryUsage].
func (s *sqliteStore) QueryUsage(ctx context.Context, dimension string, from, to time.Time) ([]UsageRow, error) {
	rows, err := s.ro.QueryContext(ctx, sqliteUsage.query, dimension, minuteOf(from), minuteOf(to))
	if err != nil {
		return nil, fmt.Errorf("query usage: %w", err)
	}
	return collectUsage(rows)
}

func collectUsage(rows *sql.Rows) ([]UsageRow, error) {
	defer rows.Close()
	var out []UsageRow
	for rows.Next() {
		r, err := scanUsage(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("query usage: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query usage: %w", err)
	}
	return out, nil
}

// PruneUsage implements [UsageStore.PruneUsage].
func (s *sqliteStore) PruneUsage(ctx context.Context, before time.Time) error {
	if _, err := s.rw.ExecContext(ctx, sqliteUsage.prune, minuteOf(before)); err != nil {
		return fmt.Errorf("prune usage: %w", err)
	}
	return nil
}

// AddUsage implements [UsageStore.AddUsage]. The rows go in one batch, one round trip.
func (s *postgresStore) AddUsage(ctx context.Context, rows []UsageRow) error {
	if len(rows) == 0 {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var b pgx.Batch
			for _, r := range sortedUsage(rows) {
				b.Queue(postgresUsage.upsert, usageArgs(r)...)
			}
			return tx.SendBatch(ctx, &b).Close()
		})
		if err == nil {
			return nil
		}
		if !retryable(err) || attempt == maxUpdateAttempts {
			return redact(fmt.Errorf("add usage: %w", err), s.dsn)
		}
	}
}

// QueryUsage implements [UsageStore.QueryUsage].
func (s *postgresStore) QueryUsage(ctx context.Context, dimension string, from, to time.Time) ([]UsageRow, error) {
	rows, err := s.pool.Query(ctx, postgresUsage.query, dimension, minuteOf(from), minuteOf(to))
	if err != nil {
		return nil, redact(fmt.Errorf("query usage: %w", err), s.dsn)
	}
	defer rows.Close()
	var out []UsageRow
	for rows.Next() {
		r, err := scanUsage(rows.Scan)
		if err != nil {
			return nil, redact(fmt.Errorf("query usage: %w", err), s.dsn)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, redact(fmt.Errorf("query usage: %w", err), s.dsn)
	}
	return out, nil
}

// PruneUsage implements [UsageStore.PruneUsage].
func (s *postgresStore) PruneUsage(ctx context.Context, before time.Time) error {
	if _, err := s.pool.Exec(ctx, postgresUsage.prune, minuteOf(before)); err != nil {
		return redact(fmt.Errorf("prune usage: %w", err), s.dsn)
	}
	return nil
}
