package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/llmproxy-go/llmproxy/controlplane/store/storetest"
	"github.com/llmproxy-go/llmproxy/e2e/harness"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// The control-plane API tests build only the two binaries they run (llmproxy-controlplane
// and llmproxyctl), so they do not depend on the proxy building.
var cpBuild struct {
	once     sync.Once
	cp, ctl  string
	buildErr error
}

// cpBinaries builds llmproxy-controlplane and llmproxyctl once per test process.
func cpBinaries(t *testing.T) (cp, ctl string) {
	t.Helper()
	cpBuild.once.Do(func() {
		root := harness.ModuleRoot(t)
		dir, err := os.MkdirTemp("", "llmproxy-e2e-cpapi-")
		if err != nil {
			cpBuild.buildErr = err
			return
		}
		for _, b := range []struct {
			dst *string
			pkg string
		}{
			{&cpBuild.cp, "./controlplane/cmd/llmproxy-controlplane"},
			{&cpBuild.ctl, "./controlplane/cmd/llmproxyctl"},
		} {
			out := filepath.Join(dir, filepath.Base(b.pkg))
			cmd := exec.Command("go", "build", "-o", out, b.pkg)
			cmd.Dir = root
			if msg, err := cmd.CombinedOutput(); err != nil {
				cpBuild.buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, msg)
				return
			}
			*b.dst = out
		}
	})
	if cpBuild.buildErr != nil {
		t.Fatal(cpBuild.buildErr)
	}
	return cpBuild.cp, cpBuild.ctl
}

// controlPlane is a running llmproxy-controlplane.
type controlPlane struct {
	grpcAddr, httpAddr string
	token              string
	proc               *harness.Process
	ctlBin             string
	conn               *grpc.ClientConn
}

// startControlPlane starts the real binary on free loopback ports with the given store and
// admin token ("" = auth off) and waits until /health answers 200.
func startControlPlane(t *testing.T, storeDSN, token string, extraArgs ...string) *controlPlane {
	t.Helper()
	cpBin, ctlBin := cpBinaries(t)
	c := &controlPlane{
		grpcAddr: harness.FreeAddr(t),
		httpAddr: harness.FreeAddr(t),
		token:    token,
		ctlBin:   ctlBin,
	}
	args := append([]string{
		"--store", storeDSN,
		"--grpc-addr", c.grpcAddr,
		"--http-addr", c.httpAddr,
		"--log-level", "debug",
		"--shutdown-timeout", "5s",
	}, extraArgs...)
	c.proc = harness.Start(t, cpBin, args, "LLMPROXY_ADMIN_AUTH_TOKEN="+token)
	harness.WaitHTTP(t, "http://"+c.httpAddr+"/health", http.StatusOK, 20*time.Second)
	conn, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c.conn = conn
	return c
}

// client returns an AdminService client and a context that carries the token.
func (c *controlPlane) client(t *testing.T) (adminv1.AdminServiceClient, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return adminv1.NewAdminServiceClient(c.conn), ctx
}

// restAnswer is one REST answer.
type restAnswer struct {
	code   int
	header http.Header
	body   string
}

var cpHTTP = &http.Client{Timeout: 15 * time.Second}

// rest calls the REST façade; withToken adds the admin token.
func (c *controlPlane) rest(t *testing.T, method, path, body string, withToken bool) restAnswer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+c.httpAddr+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if withToken && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := cpHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return restAnswer{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// ctl runs llmproxyctl against c with stdin and returns stdout, stderr and the exit code.
func (c *controlPlane) ctl(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runCtl(t, c.ctlBin, c.grpcAddr, c.token, stdin, args...)
}

// runCtl runs the llmproxyctl binary bin against the control plane's gRPC address with the
// admin token ("" = none) and stdin, and returns stdout, stderr and the exit code.
func runCtl(t *testing.T, bin, grpcAddr, token, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "LLMPROXY_SERVER="+grpcAddr, "LLMPROXY_ADMIN_AUTH_TOKEN="+token)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("llmproxyctl %v: %v", args, err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("llmproxyctl %v did not exit", args)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// cpPostgresDSN creates a schema of its own for the test (dropped at cleanup) and returns
// a DSN whose search_path selects it. It skips when PostgreSQL is unreachable, unless CI is
// set. LLMPROXY_TEST_POSTGRES overrides the server.
func cpPostgresDSN(t *testing.T) string { return storetest.PostgresDSN(t, "e2e_cpapi") }

// eachStore runs test as two subtests named by backend: on a fresh SQLite file, and on a
// fresh PostgreSQL schema (see cpPostgresDSN), with postgres set.
func eachStore(t *testing.T, test func(t *testing.T, store string, postgres bool)) {
	t.Helper()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			if backend == "postgres" {
				test(t, cpPostgresDSN(t), true)
				return
			}
			test(t, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), false)
		})
	}
}

// cpCallContext is a call context without the admin token.
func cpCallContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

// cpRev spells a revision as the API does.
func cpRev(v uint64) string { return strconv.FormatUint(v, 10) }
