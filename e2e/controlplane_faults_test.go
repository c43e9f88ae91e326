package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// Faults of the control plane's admin API and store that once did more, or less, than
// asked. Each test failed before its fix.

// TestAdminWritesDoOnlyWhatIsAsked: a dry run of a resource write stores nothing, an
// unknown query parameter is refused instead of ignored, an empty PUT /api/v1/config does
// not wipe the config, and an oversized body answers 413.
func TestAdminWritesDoOnlyWhatIsAsked(t *testing.T) {
	t.Parallel()
	const token = "e2e-faults-token"
	bootstrap := harness.WriteFile(t, "bootstrap.yaml", cpBootstrap)
	cp := startControlPlane(t, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), token, "--bootstrap", bootstrap)
	revision := func() string {
		t.Helper()
		a := cp.rest(t, "GET", "/api/v1/config", "", true)
		if a.code != 200 {
			t.Fatalf("GET /api/v1/config: %d %s", a.code, a.body)
		}
		return a.header.Get("X-Llmproxy-Revision")
	}
	if rev := revision(); rev != "1" {
		t.Fatalf("bootstrap revision %s; want 1", rev)
	}

	t.Run("dry run of a resource write stores nothing", func(t *testing.T) {
		a := cp.rest(t, "POST", "/api/v1/upstreams?dry_run=true", `{"name":"dry","url":"https://dry.example.com"}`, true)
		if a.code != 200 || !strings.Contains(a.body, `"dry_run":true`) || !strings.Contains(a.body, `"action":"added"`) {
			t.Fatalf("POST ?dry_run=true: %d %s; want 200 with dry_run and the diff", a.code, a.body)
		}
		if a := cp.rest(t, "GET", "/api/v1/upstreams/dry", "", true); a.code != 404 {
			t.Errorf("the dry run created the upstream: GET answers %d %s", a.code, a.body)
		}
		if rev := revision(); rev != "1" {
			t.Errorf("revision %s after a dry run; want 1", rev)
		}
	})

	t.Run("unknown query parameter refused", func(t *testing.T) {
		a := cp.rest(t, "POST", "/api/v1/upstreams?dryrun=1", `{"name":"typo","url":"https://typo.example.com"}`, true)
		if a.code != 400 || !strings.Contains(a.body, `unknown query parameter \"dryrun\"`) {
			t.Fatalf("POST ?dryrun=1: %d %s; want 400 naming the parameter", a.code, a.body)
		}
		if rev := revision(); rev != "1" {
			t.Errorf("revision %s after a refused write; want 1", rev)
		}
	})

	t.Run("empty config document refused", func(t *testing.T) {
		a := cp.rest(t, "PUT", "/api/v1/config", "", true)
		if a.code != 400 || !strings.Contains(a.body, "empty request body") {
			t.Fatalf("PUT /api/v1/config with no body: %d %s; want 400", a.code, a.body)
		}
		a = cp.rest(t, "PUT", "/api/v1/config", "{}", true)
		if a.code != 409 || !strings.Contains(a.body, "force=true") {
			t.Fatalf("PUT /api/v1/config with {}: %d %s; want 409 asking for force", a.code, a.body)
		}
		if rev := revision(); rev != "1" {
			t.Errorf("revision %s; want the config untouched at 1", rev)
		}
	})

	t.Run("50 MB body answers 413", func(t *testing.T) {
		const size = 50 << 20
		req, err := http.NewRequest("PUT", "http://"+cp.httpAddr+"/api/v1/config", io.LimitReader(zeroReader{}, size))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = size
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := cpHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("50 MB PUT: %d %s; want 413", resp.StatusCode, body)
		}
	})

	t.Run("history names the admin", func(t *testing.T) {
		a := cp.rest(t, "POST", "/api/v1/upstreams?message=real", `{"name":"real","url":"https://real.example.com"}`, true)
		if a.code != 201 {
			t.Fatalf("create: %d %s", a.code, a.body)
		}
		a = cp.rest(t, "GET", "/api/v1/revisions?page_size=1", "", true)
		if a.code != 200 || !strings.Contains(a.body, `"actor":"admin"`) || !strings.Contains(a.body, `"message":"real"`) {
			t.Errorf("history: %d %s", a.code, a.body)
		}
	})
}

// zeroReader is an endless reader of '0'.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}

// TestStoreLostTableRefused: with PostgreSQL's config_head gone, a restarted control plane
// used to report healthy at revision 0 and fail every write on a duplicate key. It now
// refuses to start, saying which table is missing.
func TestStoreLostTableRefused(t *testing.T) {
	t.Parallel()
	dsn := cpPostgresDSN(t)
	cp := startControlPlane(t, dsn, "")
	if a := cp.rest(t, "POST", "/api/v1/upstreams", `{"name":"a","url":"https://a.example.com"}`, false); a.code != 201 {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	if code := cp.proc.Stop(10 * time.Second); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DROP TABLE config_head"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	cpBin, _ := cpBinaries(t)
	httpAddr := harness.FreeAddr(t)
	p := harness.Start(t, cpBin, []string{"--store", dsn, "--grpc-addr", harness.FreeAddr(t), "--http-addr", httpAddr})
	code := p.Wait(20 * time.Second)
	if code == -1 {
		resp, err := http.Get("http://" + httpAddr + "/health")
		health := fmt.Sprint(err)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			health = fmt.Sprintf("%d %s", resp.StatusCode, b)
		}
		t.Fatalf("the control plane serves a store without config_head (/health: %s)", health)
	}
	if code == 0 || !strings.Contains(p.Output(), "table config_head is missing") {
		t.Fatalf("exit %d; want a failure naming the missing table:\n%s", code, p.Output())
	}
}
