// Package store persists the control plane's configuration as a sequence of
// numbered revisions, in a SQLite file or in PostgreSQL.
//
// The whole configuration is one document: every committed change stores the
// complete config (protojson, proto field names) under the next revision
// number. Revisions start at 1 for the first write; an empty store has
// revision 0 and an empty, non-nil config. The last [HistoryLimit] revisions
// are kept for debugging (table config_revisions); older ones are pruned. The
// current revision lives in a one-row table (config_head), which is also the
// lock that serializes writers, so the revision never goes backwards and never
// repeats even after pruning.
//
// Several processes may share one database (control-plane replicas on one
// PostgreSQL, or two processes on one SQLite file): writes serialize across
// them and [Store.Watch] reports revisions committed by any of them.
//
// Schema:
//
//	config_head(id = 1, revision bigint)              -- current revision, writer lock
//	config_revisions(revision bigint primary key,     -- last HistoryLimit revisions
//	                 body text,                       -- protojson of configv1.Config
//	                 created_at)
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// HistoryLimit is the number of most recent revisions kept in
// config_revisions. Older revisions are deleted by the write that makes them
// fall out of the window.
const HistoryLimit = 100

// ErrConflict is returned (wrapped, with both revisions in the message) by
// [Store.Update] when the caller's expected revision is not the current one.
var ErrConflict = errors.New("revision conflict")

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
	// commits what fn returns as revision rev+1, which it returns.
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
	Update(ctx context.Context, expected *uint64, fn UpdateFunc) (uint64, error)

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
}

// Open opens the store named by dsn and creates its schema if needed
// (idempotent, safe when several processes open the same database at once).
//
//   - "sqlite:PATH" (or "sqlite://PATH"): a SQLite file in WAL mode; missing
//     parent directories are created.
//   - "postgres://…" or "postgresql://…": PostgreSQL via pgx; a search_path
//     query parameter selects the schema the tables live in.
//
// A nil logger discards logs. Error messages never contain the DSN's
// password. The caller must Close the store.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (Store, error) {
	return open(ctx, dsn, logger, options{})
}

// options holds internal knobs, set by tests.
type options struct {
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

// revisionWrites are the statements that store a new revision, in a
// backend's placeholder syntax.
type revisionWrites struct{ insert, bump, prune string }

// execFunc runs one statement in the caller's transaction.
type execFunc func(ctx context.Context, query string, args ...any) error

// writeRevision stores body as revision n, makes it the head and prunes the
// history beyond HistoryLimit, all through exec in the caller's transaction.
// On failure it returns the step that failed (e.g. "bump revision") and the
// error.
func writeRevision(ctx context.Context, exec execFunc, st revisionWrites, n int64, body string) (step string, err error) {
	if err := exec(ctx, st.insert, n, body); err != nil {
		return fmt.Sprintf("insert revision %d", n), err
	}
	if err := exec(ctx, st.bump, n); err != nil {
		return "bump revision", err
	}
	if n > HistoryLimit {
		if err := exec(ctx, st.prune, n-HistoryLimit); err != nil {
			return "prune history", err
		}
	}
	return "", nil
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
// revision and body, it checks expected, runs fn on a copy and encodes the
// result. changed is false for a no-op write.
func prepare(rev uint64, body string, expected *uint64, fn UpdateFunc) (next string, changed bool, err error) {
	if expected != nil && *expected != rev {
		return "", false, fmt.Errorf("update config: expected revision %d, current is %d: %w", *expected, rev, ErrConflict)
	}
	cur, err := decodeConfig(rev, body)
	if err != nil {
		return "", false, fmt.Errorf("update config: %w", err)
	}
	out, err := fn(rev, proto.Clone(cur).(*configv1.Config))
	if err != nil {
		return "", false, err
	}
	if out == nil {
		return "", false, errors.New("update config: update function returned a nil config")
	}
	if proto.Equal(out, cur) {
		return "", false, nil
	}
	next, err = encodeConfig(out)
	if err != nil {
		return "", false, fmt.Errorf("update config: %w", err)
	}
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
