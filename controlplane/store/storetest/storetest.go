// Package storetest helps tests that need a store backend: a PostgreSQL schema of their
// own. It imports no package of the store, so the store's own tests may use it too.
package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgres is the PostgreSQL of the development machine and CI;
// LLMPROXY_TEST_POSTGRES overrides it.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresDSN creates a schema named prefix_<unique> for the test, dropped at cleanup, and
// returns a DSN whose search_path selects it. It skips the test when PostgreSQL is
// unreachable, unless CI is set.
func PostgresDSN(t testing.TB, prefix string) string {
	t.Helper()
	base := os.Getenv("LLMPROXY_TEST_POSTGRES")
	if base == "" {
		base = DefaultPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
			t.Fatalf("PostgreSQL unreachable and CI is set: %v", err)
		}
		t.Skipf("skipping: PostgreSQL unreachable (%v); set CI=true to make this a failure", err)
	}
	defer conn.Close(context.Background())
	schema := fmt.Sprintf("%s_%d_%d", prefix, time.Now().UnixNano(), rand.Uint32())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", base, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
