package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// The schema is built by ordered, numbered migrations. Each one runs once per database, in
// the transaction that records it in schema_migrations, under the lock that serializes
// Open across processes; a database is always at one version of this list. A database
// created before migrations were versioned (tables config_head and config_revisions, no
// schema_migrations) is adopted at version 1. A version newer than the last one here is
// refused: an older binary must not write a schema it does not know.
//
// After migrating, Open checks the result (checkSchema): every table and column of the
// latest version exists, config_head has its one row, the head revision is stored and no
// stored revision is newer than the head. Anything else is ErrInconsistent: serving such a
// store would report a wrong revision or fail every write.

// migration is one step of the schema, in the SQL of each backend.
type migration struct {
	version  int
	name     string
	sqlite   []string
	postgres []string
}

// migrations are the schema's steps, in order. Append only: never edit a released step.
var migrations = []migration{
	{
		version: 1,
		name:    "config head and revisions",
		sqlite: []string{
			`CREATE TABLE config_head (
				id INTEGER PRIMARY KEY CHECK (id = 1),
				revision INTEGER NOT NULL
			)`,
			`INSERT INTO config_head (id, revision) VALUES (1, 0)`,
			`CREATE TABLE config_revisions (
				revision INTEGER PRIMARY KEY,
				body TEXT NOT NULL,
				created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
			)`,
		},
		postgres: []string{
			`CREATE TABLE config_head (
				id smallint PRIMARY KEY CHECK (id = 1),
				revision bigint NOT NULL
			)`,
			`INSERT INTO config_head (id, revision) VALUES (1, 0)`,
			`CREATE TABLE config_revisions (
				revision bigint PRIMARY KEY,
				body text NOT NULL,
				created_at timestamptz NOT NULL DEFAULT now()
			)`,
		},
	},
	{
		version: 2,
		name:    "revision history: operation, resources, message, actor",
		sqlite: []string{
			`ALTER TABLE config_revisions ADD COLUMN operation TEXT NOT NULL DEFAULT ''`,
			`ALTER TABLE config_revisions ADD COLUMN resources TEXT NOT NULL DEFAULT '[]'`,
			`ALTER TABLE config_revisions ADD COLUMN message TEXT NOT NULL DEFAULT ''`,
			`ALTER TABLE config_revisions ADD COLUMN actor TEXT NOT NULL DEFAULT ''`,
		},
		postgres: []string{
			`ALTER TABLE config_revisions
				ADD COLUMN operation text NOT NULL DEFAULT '',
				ADD COLUMN resources text NOT NULL DEFAULT '[]',
				ADD COLUMN message text NOT NULL DEFAULT '',
				ADD COLUMN actor text NOT NULL DEFAULT ''`,
		},
	},
	{
		version: 3,
		name:    "usage rollups per minute",
		sqlite: []string{
			`CREATE TABLE usage_minutes (
				dimension TEXT NOT NULL,
				minute INTEGER NOT NULL,
				name TEXT NOT NULL,
				requests INTEGER NOT NULL DEFAULT 0,
				errors INTEGER NOT NULL DEFAULT 0,
				prompt_tokens INTEGER NOT NULL DEFAULT 0,
				completion_tokens INTEGER NOT NULL DEFAULT 0,
				PRIMARY KEY (dimension, minute, name)
			)`,
		},
		postgres: []string{
			`CREATE TABLE usage_minutes (
				dimension text NOT NULL,
				minute bigint NOT NULL,
				name text NOT NULL,
				requests bigint NOT NULL DEFAULT 0,
				errors bigint NOT NULL DEFAULT 0,
				prompt_tokens bigint NOT NULL DEFAULT 0,
				completion_tokens bigint NOT NULL DEFAULT 0,
				PRIMARY KEY (dimension, minute, name)
			)`,
		},
	},
}

// latestVersion is the schema version this binary migrates databases to.
func latestVersion() int { return migrations[len(migrations)-1].version }

// schemaTables are the tables of the latest version and their columns, for checkSchema.
var schemaTables = []struct {
	name    string
	columns []string
}{
	{"config_head", []string{"id", "revision"}},
	{"config_revisions", []string{"revision", "body", "created_at", "operation", "resources", "message", "actor"}},
	{"usage_minutes", []string{"dimension", "minute", "name", "requests", "errors", "prompt_tokens", "completion_tokens"}},
}

// migrationsTable is the DDL of schema_migrations per backend. It is not a migration
// itself: it records them.
var migrationsTable = map[string]string{
	"sqlite": `CREATE TABLE schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
	)`,
	"postgres": `CREATE TABLE schema_migrations (
		version integer PRIMARY KEY,
		name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`,
}

// schemaConn runs statements in the transaction that migrates a database. Queries are
// written with ? placeholders; the PostgreSQL implementation numbers them.
type schemaConn interface {
	backend() string // "sqlite" or "postgres"
	exec(ctx context.Context, query string, args ...any) error
	queryRow(ctx context.Context, query string, args ...any) rowScanner
	tableExists(ctx context.Context, name string) (bool, error)
}

// migrated reports what migrate did: the version found and the one reached, and the
// names of the steps applied.
type migrated struct {
	from, to int
	applied  []string
}

// migrate brings the database behind c to the latest version and checks it.
func migrate(ctx context.Context, c schemaConn) (migrated, error) {
	var m migrated
	has, err := c.tableExists(ctx, "schema_migrations")
	if err != nil {
		return m, fmt.Errorf("migrate schema: %w", err)
	}
	if !has {
		if m.from, err = adopt(ctx, c); err != nil {
			return m, err
		}
	} else if err := c.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&m.from); err != nil {
		return m, fmt.Errorf("migrate schema: read version: %w", err)
	}
	if m.from > latestVersion() {
		return m, fmt.Errorf("migrate schema: the database is at schema version %d, newer than this llmproxy-controlplane knows (%d): upgrade it", m.from, latestVersion())
	}
	m.to = m.from
	for _, step := range migrations {
		if step.version <= m.from {
			continue
		}
		stmts := step.sqlite
		if c.backend() == "postgres" {
			stmts = step.postgres
		}
		for _, q := range stmts {
			if err := c.exec(ctx, q); err != nil {
				return m, fmt.Errorf("migrate schema to version %d (%s): %w", step.version, step.name, err)
			}
		}
		if err := c.exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, step.version, step.name); err != nil {
			return m, fmt.Errorf("migrate schema to version %d: record it: %w", step.version, err)
		}
		m.to = step.version
		m.applied = append(m.applied, fmt.Sprintf("%d %s", step.version, step.name))
	}
	if err := checkSchema(ctx, c, m.to); err != nil {
		return m, err
	}
	return m, nil
}

// adopt creates schema_migrations in a database that has none and returns the version the
// database is at: 0 when it is empty, 1 when it holds the tables of version 1 (made before
// migrations were versioned). A database holding only some of them is inconsistent.
func adopt(ctx context.Context, c schemaConn) (int, error) {
	var present, missing []string
	for _, t := range []string{"config_head", "config_revisions"} {
		ok, err := c.tableExists(ctx, t)
		if err != nil {
			return 0, fmt.Errorf("migrate schema: %w", err)
		}
		if ok {
			present = append(present, t)
		} else {
			missing = append(missing, t)
		}
	}
	if len(present) > 0 && len(missing) > 0 {
		return 0, fmt.Errorf("%w: table %s exists but %s is missing; restore the database from a backup, or point --store at an empty database",
			ErrInconsistent, strings.Join(present, ", "), strings.Join(missing, ", "))
	}
	if err := c.exec(ctx, migrationsTable[c.backend()]); err != nil {
		return 0, fmt.Errorf("migrate schema: create schema_migrations: %w", err)
	}
	if len(present) == 0 {
		return 0, nil
	}
	const adopted = " (adopted: created before versioned migrations)"
	if err := c.exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, 1, migrations[0].name+adopted); err != nil {
		return 0, fmt.Errorf("migrate schema: record version 1: %w", err)
	}
	return 1, nil
}

// checkSchema verifies a database at the latest version: tables, columns, the head row and
// the head revision's presence.
func checkSchema(ctx context.Context, c schemaConn, version int) error {
	inconsistent := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s (schema version %d); restore the database from a backup, or point --store at an empty database",
			ErrInconsistent, fmt.Sprintf(format, args...), version)
	}
	for _, t := range schemaTables {
		ok, err := c.tableExists(ctx, t.name)
		if err != nil {
			return fmt.Errorf("check schema: %w", err)
		}
		if !ok {
			return inconsistent("table %s is missing", t.name)
		}
		for _, col := range t.columns {
			// A column that is not there fails the statement; nothing is read.
			var n int
			if err := c.queryRow(ctx, `SELECT COUNT(`+col+`) FROM `+t.name+` WHERE 1 = 0`).Scan(&n); err != nil {
				return inconsistent("table %s lacks column %s", t.name, col)
			}
		}
	}
	var rows, head int64
	if err := c.queryRow(ctx, `SELECT COUNT(*), COALESCE(MAX(revision), 0) FROM config_head WHERE id = 1`).Scan(&rows, &head); err != nil {
		return fmt.Errorf("check schema: read head: %w", err)
	}
	if rows != 1 {
		return inconsistent("config_head has no row")
	}
	var newest, atHead int64
	if err := c.queryRow(ctx, `SELECT COALESCE(MAX(revision), 0), COUNT(CASE WHEN revision = ? THEN 1 END) FROM config_revisions`, head).Scan(&newest, &atHead); err != nil {
		return fmt.Errorf("check schema: read revisions: %w", err)
	}
	switch {
	case newest > head:
		return inconsistent("config_revisions holds revision %d but the head (config_head) is at revision %d", newest, head)
	case head > 0 && atHead == 0:
		return inconsistent("the head revision %d is missing from config_revisions", head)
	}
	return nil
}

// logMigrated logs what migrate did: at info when it applied steps, at debug otherwise.
func logMigrated(log *slog.Logger, backend string, m migrated) {
	if len(m.applied) == 0 {
		log.Debug("store: schema up to date", "backend", backend, "schema_version", m.to)
		return
	}
	log.Info("store: schema migrated", "backend", backend, "from_version", m.from, "to_version", m.to, "steps", m.applied)
}
