package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// End-to-end tests of llmproxyctl's change-safety commands: history, diff, rollback,
// apply --diff, and writes that wait for the fleet.

// ctl runs llmproxyctl against c with stdin and returns stdout, stderr and the exit code.
func (c *xdsCP) ctl(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runCtl(t, harness.Binaries(t).Ctl, c.grpcAddr, "", stdin, args...)
}

var ctlCellGap = regexp.MustCompile(`\s{2,}`)

// ctlTable splits a table llmproxyctl printed into rows of cells, header first.
func ctlTable(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, ctlCellGap.Split(strings.TrimSpace(l), -1))
	}
	return rows
}

// ctlHistoryConfig is the first config of TestCtlHistoryDiffRollback; up-a's token is a
// literal secret, so only the store can give it back.
const ctlHistoryConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: 3000
      default_group: ga
      routing:
        - path: /v1/chat/completions
          target_group: ga
upstreams:
  - name: up-a
    url: http://127.0.0.1:9001
    auth: {type: bearer, token: sk-e2e-ctl-first-token}
  - name: up-b
    url: http://127.0.0.1:9002
  - name: up-c
    url: http://127.0.0.1:9003
upstream_groups:
  - name: ga
    upstreams: [{name: up-a}]
  - name: gb
    upstreams: [{name: up-b}]
`

// TestCtlHistoryDiffRollback, on SQLite and PostgreSQL: three writes made with
// llmproxyctl -m are listed by llmproxyctl history newest first with their operation,
// resources and message; llmproxyctl diff 3 1 names exactly the fields that changed, the
// secret only as changed; apply --diff prints the diff and commits nothing; rollback 1
// makes a new revision whose export is byte for byte revision 1's and whose stored config,
// secret included, equals revision 1's.
func TestCtlHistoryDiffRollback(t *testing.T) {
	eachStore(t, testCtlHistoryDiffRollback)
}

func testCtlHistoryDiffRollback(t *testing.T, store string, _ bool) {
	cp := startControlPlane(t, store, "e2e-ctl-history-token")
	mustCtl := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := cp.ctl(t, stdin, args...)
		if code != 0 {
			t.Fatalf("llmproxyctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}

	if out := mustCtl(ctlHistoryConfig, "apply", "-f", "-", "-m", "first: the initial config"); out != "revision 1\n" {
		t.Fatalf("first apply printed %q", out)
	}
	export1 := mustCtl("", "export")
	mustCtl("", "route", "set", "main", "/v1/chat/completions", "gb", "-m", "second: chat to gb")
	third := strings.NewReplacer(
		"target_group: ga", "target_group: gb",
		"sk-e2e-ctl-first-token", "sk-e2e-ctl-second-token",
		"  - name: up-c\n    url: http://127.0.0.1:9003\n", "",
	).Replace(ctlHistoryConfig)
	if out := mustCtl(third, "apply", "-f", "-", "-m", "third: new key, up-c retired"); out != "revision 3\n" {
		t.Fatalf("third apply printed %q", out)
	}

	rows := ctlTable(mustCtl("", "history"))
	want := [][]string{
		{"REVISION", "ACTOR", "OPERATION", "RESOURCES", "MESSAGE"},
		{"3", "admin", "ApplyConfig", "upstream/up-a,upstream/up-c", "third: new key, up-c retired"},
		{"2", "admin", "UpdateRoute", "forward/main", "second: chat to gb"},
		{"1", "admin", "ApplyConfig", "forward/main,upstream/up-a,upstream/up-b,upstream/up-c and 2 more", "first: the initial config"},
	}
	if len(rows) != len(want) {
		t.Fatalf("history has %d rows; want %d:\n%q", len(rows), len(want), rows)
	}
	for i, row := range rows {
		if len(row) != 6 {
			t.Fatalf("history row %d: %q; want 6 cells", i, row)
		}
		if got := append([]string{row[0]}, row[2:]...); strings.Join(got, "|") != strings.Join(want[i], "|") {
			t.Errorf("history row %d (time %s):\n got %q\nwant %q", i, row[1], got, want[i])
		}
	}

	wantDiff := `revision 1 → revision 3:
changed forward/main
    routing["/v1/chat/completions"].target_group: "ga" → "gb"
changed upstream/up-a
    auth.token: changed (secret)
removed upstream/up-c
    name: "up-c"
    url: "http://127.0.0.1:9003"
`
	if got := mustCtl("", "diff", "3", "1"); got != wantDiff {
		t.Errorf("diff 3 1:\n%s\nwant exactly:\n%s", got, wantDiff)
	}

	// apply --diff shows what would change and stores nothing.
	fifth := strings.Replace(third, "http://127.0.0.1:9002", "http://127.0.0.1:9005", 1)
	out := mustCtl(fifth, "apply", "-f", "-", "--diff")
	if !strings.HasSuffix(out, "revision 3 → the proposed config:\nchanged upstream/up-b\n    url: \"http://127.0.0.1:9002\" → \"http://127.0.0.1:9005\"\n") {
		t.Errorf("apply --diff printed:\n%s", out)
	}
	if rows := ctlTable(mustCtl("", "history")); len(rows) != 4 || rows[1][0] != "3" {
		t.Errorf("apply --diff committed something; history:\n%q", rows)
	}
	if strings.Contains(mustCtl("", "export"), "9005") {
		t.Error("apply --diff changed the config")
	}

	if out := mustCtl("", "rollback", "1", "--expected-revision", "3", "-m", "back to the first"); out != "revision 4: the config of revision 1\n" {
		t.Errorf("rollback printed %q", out)
	}
	if export4 := mustCtl("", "export"); export4 != export1 {
		t.Errorf("export after the rollback differs from revision 1's:\n--- 1\n%s--- 4\n%s", export1, export4)
	}
	// The diff compares the stored configs, secrets in clear: no change means the literal
	// token of revision 1 came back.
	if got := mustCtl("", "diff", "4", "1"); got != "revision 1 → revision 4: no changes\n" {
		t.Errorf("diff 4 1: %q; want no changes", got)
	}
	if rows := ctlTable(mustCtl("", "history", "--page-size", "1")); len(rows) != 3 || rows[1][0] != "4" ||
		rows[1][3] != "RollbackRevision" || rows[1][5] != "back to the first" || rows[2][0] != "older revisions: llmproxyctl history --page-token 4 --page-size 1" {
		t.Errorf("history after the rollback:\n%q", rows)
	}
	if _, errOut, code := cp.ctl(t, "", "rollback", "2", "--expected-revision", "3"); code != 5 {
		t.Errorf("rollback at a stale revision: exit %d; want 5\n%s", code, errOut)
	}
}

// TestCtlApplyWaitsForFleet: apply --wait with two proxies prints "applied on 2 of 2
// proxies" and exits 0; with a third proxy that lacks the environment variable the new
// config references, it exits 6 naming that proxy and its reason.
func TestCtlApplyWaitsForFleet(t *testing.T) {
	port := harness.FreePort(t)
	boot := renderConfig(t, xdsBootstrap, map[string]any{"Port": port, "A": "http://127.0.0.1:9001", "B": "http://127.0.0.1:9002"})
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cp := xdsStartCP(t, "sqlite:"+t.TempDir()+"/cp.db", grpcAddr, httpAddr, "--bootstrap", harness.WriteFile(t, "bootstrap.yaml", boot))
	const key = "E2E_CTL_WAIT_KEY"
	xdsStartProxy(t, grpcAddr, "p1", t.TempDir(), key+"=sk-from-env")
	xdsStartProxy(t, grpcAddr, "p2", t.TempDir(), key+"=sk-from-env")
	cp.waitFleet(t, 1, "p1", "p2")

	second := strings.Replace(boot, "target_group: ga", "target_group: gb", 1)
	out, errOut, code := cp.ctl(t, second, "apply", "-f", "-", "--wait=15s", "-m", "chat to gb")
	if code != 0 || out != "revision 2\napplied on 2 of 2 proxies\n" {
		t.Fatalf("apply --wait: exit %d\n%s%s\nwant revision 2, applied on 2 of 2 proxies", code, out, errOut)
	}

	// p3 lacks the variable: it applies revision 2, then refuses the one that needs it.
	xdsStartProxy(t, grpcAddr, "p3", t.TempDir())
	cp.waitFleet(t, 2, "p3")
	third := strings.Replace(second, "    url: http://127.0.0.1:9002\n",
		fmt.Sprintf("    url: http://127.0.0.1:9002\n    auth: {type: bearer, token: \"${env:%s}\"}\n", key), 1)
	out, errOut, code = cp.ctl(t, third, "apply", "-f", "-", "--wait")
	if code != 6 || !strings.HasPrefix(out, "revision 3\napplied on 2 of 3 proxies\nrefused by p3 (revision 3): ") || !strings.Contains(out, key) {
		t.Errorf("apply --wait refused by p3: exit %d; want 6, naming p3 and %s\n%s", code, key, out)
	}
	if want := "llmproxyctl: revision 3 was refused by p3; it is stored (llmproxyctl rollback 2 undoes it)\n"; errOut != want {
		t.Errorf("stderr %q; want %q", errOut, want)
	}
}
