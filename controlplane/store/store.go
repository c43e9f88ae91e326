// Package store persists the control plane's configuration as a sequence of
// numbered revisions, in a SQLite file or in PostgreSQL, with the history of
// who changed what.
//
// The whole configuration is one document: every committed change stores the
// complete config (protojson, proto field names) under the next revision
// number, with the operation that made it, the resources it touched, the
// change message and the actor. Revisions start at 1 for the first write; an
// empty store has revision 0 and an empty, non-nil config. The last N
// revisions are kept (N is [WithHistory], default [DefaultHistory]); older
// ones are pruned. The current revision lives in a one-row table
// (config_head), which is also the lock that serializes writers, so the
// revision never goes backwards and never repeats even after pruning.
//
// Several processes may share one database (control-plane replicas on one
// PostgreSQL, or two processes on one SQLite file): writes serialize across
// them and [Store.Watch] reports revisions committed by any of them.
//
// Schema (version 3; see migrate.go for the ordered migrations, recorded in
// schema_migrations, and the consistency checks run at every Open):
//
//	schema_migrations(version primary key, name, applied_at)
//	config_head(id = 1, revision bigint)              -- current revision, writer lock
//	config_revisions(revision bigint primary key,     -- the kept history
//	                 body text,                       -- protojson of configv1.Config
//	                 created_at,
//	                 operation text,                  -- e.g. "ApplyConfig"
//	                 resources text,                  -- JSON array of "kind/name"
//	                 message text, actor text)
//	usage_minutes(dimension, minute, name,            -- per-minute traffic rollups
//	              requests, errors, prompt_tokens,    -- (see UsageStore)
//	              completion_tokens)
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/diff"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// DefaultHistory is the number of most recent revisions kept when Open is
// given no [WithHistory].
const DefaultHistory = 1000

var (
	// ErrConflict is returned (wrapped, with both revisions in the message)
	// by [Store.Update] when the caller's expected revision is not the
	// current one.
	ErrConflict = errors.New("revision conflict")
	// ErrNotFound is returned (wrapped) by [Store.Revision] for a revision
	// that was pruned from the history or never committed.
	ErrNotFound = errors.New("revision not found")
	// ErrInconsistent is returned (wrapped, naming what is wrong) by Open
	// when the database's schema or contents contradict each other, e.g. a
	// table is missing; such a store is never served.
	ErrInconsistent = errors.New("store is inconsistent")
)

// Change describes a write for the history. Its zero value records nothing
// but the resources touched, which the store works out itself.
type Change struct {
	// Operation is what made the revision, e.g. "ApplyConfig" or
	// "UpdateRoute".
	Operation string
	// Message is the change message given by the caller.
	Message string
	// Actor is who made the change, e.g. "admin".
	Actor string
}

// RevisionInfo is one entry of the history.
type RevisionInfo struct {
	Revision uint64
	// Time is when the revision was committed, by the database's clock.
	Time      time.Time
	Operation string
	// Resources are the resources the revision touched, compared with the
	// revision before it, as "kind/name" or "kind" (see package diff).
	Resources []string
	Message   string
	Actor     string
}

// UpdateFunc computes the next config from the current one. It receives the
// current revision and a deep copy of the current config, which it may modify
// and return. Returning an error aborts the update; that error is returned by
// [Store.Update] unchanged. UpdateFunc runs inside the store's write
// transaction, so it must be quick and must not call the Store; it may be
// called more than once for one Update when the store retries a transaction
// (PostgreSQL serialization failures), so it must not have side effects
// beyond its return values.
type UpdateFunc = func(rev uint64, cfg *configv1.Config) (*configv1.Config, error)

// Store is the persistent, revisioned configuration. All methods are safe for
// concurrent use by multiple goroutines, and the store stays consistent when
// several processes open the same database.
type Store interface {
	// Load returns the latest committed revision and a fresh copy of its
	// config, owned by the caller. An empty store returns revision 0 and an
	// empty, non-nil config.
	Load(ctx context.Context) (rev uint64, cfg *configv1.Config, err error)

	// Update runs fn on the latest config inside one write transaction and
	// commits what fn returns as revision rev+1, which it returns, recording
	// change and the resources that differ in the history.
	//
	// If expected is non-nil and differs from the current revision, fn is not
	// called and the error wraps ErrConflict. If fn returns an error, nothing
	// is written and that error is returned as is. If fn returns a config
	// equal (proto.Equal) to the current one, nothing is written and the
	// current revision is returned: a no-op write does not bump the revision.
	// fn returning a nil config is an error.
	//
	// Concurrent writers, in this process or in others sharing the database,
	// are serialized: each one sees the config committed by the previous one,
	// so no update is lost and no revision is used twice.
	Update(ctx context.Context, expected *uint64, change Change, fn UpdateFunc) (uint64, error)

	// History returns up to limit kept revisions older than before, newest
	// first; before 0 means from the newest. limit must be positive.
	History(ctx context.Context, before uint64, limit int) ([]RevisionInfo, error)

	// Revision returns a kept revision and a fresh copy of its config. A
	// revision that was pruned or never committed (0 included) is an error
	// wrapping ErrNotFound.
	Revision(ctx context.Context, rev uint64) (RevisionInfo, *configv1.Config, error)

	// Watch returns a channel that receives a revision number whenever a
	// revision newer than the last one reported is committed, by this
	// process or by any other sharing the database, normally within a second.
	// The channel has a buffer of one and coalesces: when the receiver is
	// slow, older pending values are replaced by the newest one, so values
	// received are strictly increasing but not every revision is seen. A
	// receiver should Load after each value and ignore revisions it already
	// has: a value may name a revision committed shortly before Watch was
	// called. The channel is closed when ctx is done or the Store is closed.
	// Any number of watchers may exist; Watch never blocks.
	Watch(ctx context.Context) <-chan uint64

	// Close stops background work, closes every Watch channel and releases
	// the database. Calls after the first return nil.
	Close() error

	// UsageStore keeps the per-minute traffic rollups (see usage.go).
	UsageStore
}

// Open opens the store named by dsn, creates or migrates its schema (safe
// when several processes open the same database at once) and checks that the
// schema and the head revision are consistent: an inconsistent store is an
// error wrapping ErrInconsistent, never served.
//
//   - "sqlite:PATH" (or "sqlite://PATH"): a SQLite file in WAL mode; missing
//     parent directories are created.
//   - "postgres://…" or "postgresql://…": PostgreSQL via pgx; a search_path
//     query parameter selects the schema the tables live in.
//
// A nil logger discards logs. Error messages never contain the DSN's
// password. The caller must Close the store.
func Open(ctx context.Context, dsn string, logger *slog.Logger, opts ...Option) (Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return open(ctx, dsn, logger, o)
}

// Option changes how Open opens a store.
type Option func(*options)

// WithHistory keeps the last n revisions (at least 1: the head is always
// kept). Writers prune what falls out of the window; replicas on one
// database should agree on n. Zero or less selects DefaultHistory.
func WithHistory(n int) Option {
	return func(o *options) { o.history = n }
}

// options holds the knobs of Open; tests set the internal ones.
type options struct {
	// history is the number of revisions kept; zero selects DefaultHistory.
	history int
	// pollInterval is how often the latest revision is polled while there
	// are watchers. Zero selects the backend default; negative disables
	// polling.
	pollInterval time.Duration
}

const (
	sqlitePollInterval   = 250 * time.Millisecond
	postgresPollInterval = time.Second
)

func open(ctx context.Context, dsn string, logger *slog.Logger, opts options) (Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.history <= 0 {
		opts.history = DefaultHistory
	}
	scheme, rest, ok := strings.Cut(dsn, ":")
	if !ok || scheme == "" {
		return nil, errors.New("open store: missing scheme in store DSN (want sqlite:PATH or postgres://...)")
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3":
		if opts.pollInterval == 0 {
			opts.pollInterval = sqlitePollInterval
		}
		return openSQLite(ctx, strings.TrimPrefix(rest, "//"), logger, opts)
	case "postgres", "postgresql":
		if opts.pollInterval == 0 {
			opts.pollInterval = postgresPollInterval
		}
		return openPostgres(ctx, dsn, logger, opts)
	default:
		return nil, fmt.Errorf("open store: unsupported store scheme %q (want sqlite:PATH or postgres://...)", scheme)
	}
}

var (
	marshalOptions   = protojson.MarshalOptions{UseProtoNames: true}
	unmarshalOptions = protojson.UnmarshalOptions{}
)

func encodeConfig(c *configv1.Config) (string, error) {
	b, err := marshalOptions.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	return string(b), nil
}

// Queries both backends run as written.
const (
	loadQuery = `SELECT h.revision, COALESCE(r.body, '')
		FROM config_head h LEFT JOIN config_revisions r ON r.revision = h.revision
		WHERE h.id = 1`
	headQuery = `SELECT revision FROM config_head WHERE id = 1`
)

// loaded turns the head row read by loadQuery into the results of Load.
func loaded(rev int64, body string) (uint64, *configv1.Config, error) {
	if rev > 0 && body == "" {
		return 0, nil, fmt.Errorf("load config: revision %d is missing", rev)
	}
	cfg, err := decodeConfig(uint64(rev), body)
	if err != nil {
		return 0, nil, fmt.Errorf("load config: %w", err)
	}
	return uint64(rev), cfg, nil
}

// queries are the statements both backends run, in a backend's placeholder
// syntax.
type queries struct {
	insert, bump, prune string
	// history lists revisions below $1, newest first, at most $2.
	history string
	// revision reads one revision with its body.
	revision string
}

// Columns of a history entry, in the order historyColumns lists them.
const historyColumns = `revision, created_at, operation, resources, message, actor`

// execFunc runs one statement in the caller's transaction.
type execFunc func(ctx context.Context, query string, args ...any) error

// newRevision is a revision about to be written.
type newRevision struct {
	n         int64
	body      string
	change    Change
	resources string // JSON array
}

// writeRevision stores r, makes it the head and prunes the history to the
// last keep revisions, all through exec in the caller's transaction. On
// failure it returns the step that failed (e.g. "bump revision") and the
// error.
func writeRevision(ctx context.Context, exec execFunc, q queries, r newRevision, keep int) (step string, err error) {
	c := r.change
	if err := exec(ctx, q.insert, r.n, r.body, c.Operation, r.resources, c.Message, c.Actor); err != nil {
		return fmt.Sprintf("insert revision %d", r.n), err
	}
	if err := exec(ctx, q.bump, r.n); err != nil {
		return "bump revision", err
	}
	if r.n > int64(keep) {
		if err := exec(ctx, q.prune, r.n-int64(keep)); err != nil {
			return "prune history", err
		}
	}
	return "", nil
}

// rowScanner is a row of either backend.
type rowScanner interface{ Scan(dest ...any) error }

// scanRevision reads the historyColumns of one row, then, when body is not
// nil, the body.
func scanRevision(row rowScanner, body *string) (RevisionInfo, error) {
	var (
		info      RevisionInfo
		rev       int64
		created   any
		resources string
	)
	dest := []any{&rev, &created, &info.Operation, &resources, &info.Message, &info.Actor}
	if body != nil {
		dest = append(dest, body)
	}
	if err := row.Scan(dest...); err != nil {
		return RevisionInfo{}, err
	}
	info.Revision = uint64(rev)
	t, err := timeOf(created)
	if err != nil {
		return RevisionInfo{}, fmt.Errorf("revision %d: %w", rev, err)
	}
	info.Time = t
	if resources != "" {
		if err := json.Unmarshal([]byte(resources), &info.Resources); err != nil {
			return RevisionInfo{}, fmt.Errorf("revision %d: decode resources: %w", rev, err)
		}
	}
	return info, nil
}

// timeOf converts a created_at value: a time (PostgreSQL) or RFC 3339 text
// (SQLite).
func timeOf(v any) (time.Time, error) {
	switch t := v.(type) {
	case time.Time:
		return t.UTC(), nil
	case string:
		p, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return time.Time{}, fmt.Errorf("parse created_at %q: %w", t, err)
		}
		return p.UTC(), nil
	case []byte:
		return timeOf(string(t))
	}
	return time.Time{}, fmt.Errorf("created_at has unexpected type %T", v)
}

// historyBound turns History's before into the bound of the history query.
func historyBound(before uint64) int64 {
	if before == 0 || before > 1<<62 {
		return 1 << 62
	}
	return int64(before)
}

// decodeConfig parses a stored body. Unknown fields are an error: they mean
// a newer writer, and silently dropping them would lose them at the next
// write.
func decodeConfig(rev uint64, body string) (*configv1.Config, error) {
	c := &configv1.Config{}
	if body == "" {
		return c, nil
	}
	if err := unmarshalOptions.Unmarshal([]byte(body), c); err != nil {
		return nil, fmt.Errorf("decode config revision %d: %w", rev, err)
	}
	return c, nil
}

// prepare is the backend-independent part of an update: given the current
// revision and body, it checks expected, runs fn on a copy and returns the
// revision to write as rev+1. changed is false for a no-op write.
func prepare(rev uint64, body string, expected *uint64, change Change, fn UpdateFunc) (next newRevision, changed bool, err error) {
	if expected != nil && *expected != rev {
		return newRevision{}, false, fmt.Errorf("update config: expected revision %d, current is %d: %w", *expected, rev, ErrConflict)
	}
	cur, err := decodeConfig(rev, body)
	if err != nil {
		return newRevision{}, false, fmt.Errorf("update config: %w", err)
	}
	out, err := fn(rev, proto.Clone(cur).(*configv1.Config))
	if err != nil {
		return newRevision{}, false, err
	}
	if out == nil {
		return newRevision{}, false, errors.New("update config: update function returned a nil config")
	}
	if proto.Equal(out, cur) {
		return newRevision{}, false, nil
	}
	next = newRevision{n: int64(rev) + 1, change: change}
	if next.body, err = encodeConfig(out); err != nil {
		return newRevision{}, false, fmt.Errorf("update config: %w", err)
	}
	touched := diff.Resources(cur, out)
	if touched == nil {
		touched = []string{}
	}
	res, err := json.Marshal(touched)
	if err != nil {
		return newRevision{}, false, fmt.Errorf("update config: encode resources: %w", err)
	}
	next.resources = string(res)
	return next, true, nil
}

// redactedError hides secrets (a DSN password) in an error's text while
// keeping the error chain for errors.Is/As.
type redactedError struct {
	err     error
	secrets []string
}

func (e *redactedError) Error() string {
	msg := e.err.Error()
	for _, s := range e.secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}

func (e *redactedError) Unwrap() error { return e.err }

// redact wraps err so that the password of dsn, if any, never shows in its
// message, whether it appears raw, escaped or decoded.
func redact(err error, dsn string) error {
	if err == nil {
		return nil
	}
	var secrets []string
	add := func(s string) {
		if s != "" {
			secrets = append(secrets, s, url.QueryEscape(s), url.PathEscape(s))
		}
	}
	if _, after, ok := strings.Cut(dsn, "://"); ok {
		if userinfo, _, ok := strings.Cut(after, "@"); ok {
			if _, pw, ok := strings.Cut(userinfo, ":"); ok {
				add(pw)
			}
		}
	}
	if u, perr := url.Parse(dsn); perr == nil {
		if u.User != nil {
			if pw, ok := u.User.Password(); ok {
				add(pw)
			}
		}
		add(u.Query().Get("password"))
	}
	if len(secrets) == 0 {
		return err
	}
	return &redactedError{err: err, secrets: secrets}
}
