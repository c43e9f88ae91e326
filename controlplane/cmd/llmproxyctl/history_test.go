package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

var cellGap = regexp.MustCompile(`\s{2,}`)

// tableRows splits a table printed by tabwriter into its cells, header included.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, cellGap.Split(strings.TrimSpace(l), -1))
	}
	return rows
}

// TestHistoryPages checks the history table, its paging flags and -o json.
func TestHistoryPages(t *testing.T) {
	addr := startServer(t, seed)
	for _, args := range [][]string{
		{"route", "set", "main", "/v1/models", "g2", "-m", "models to g2"},
		{"route", "delete", "main", "/v1/models", "-m", "no route"},
	} {
		if _, errOut, code := ctl(t, addr, "", args...); code != 0 {
			t.Fatalf("%v: %d %s", args, code, errOut)
		}
	}

	out, _, code := ctl(t, addr, "", "history", "--page-size", "2")
	rows := tableRows(out)
	if code != 0 || len(rows) != 4 {
		t.Fatalf("history --page-size 2: %d\n%s", code, out)
	}
	want := [][]string{
		{"REVISION", "TIME", "ACTOR", "OPERATION", "RESOURCES", "MESSAGE"},
		{"3", "", "anonymous", "DeleteRoute", "forward/main", "no route"},
		{"2", "", "anonymous", "UpdateRoute", "forward/main", "models to g2"},
		{"older revisions: llmproxyctl history --page-token 2 --page-size 2"},
	}
	for i, w := range want {
		got := rows[i]
		if i > 0 && len(got) == 6 {
			if _, err := time.Parse(time.RFC3339, got[1]); err != nil {
				t.Errorf("row %d: time %q: %v", i, got[1], err)
			}
			got[1] = ""
		}
		if strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("row %d: %q; want %q", i, got, w)
		}
	}
	out, _, code = ctl(t, addr, "", "history", "--page-token", "2", "--page-size", "2")
	if rows := tableRows(out); code != 0 || len(rows) != 2 || rows[1][0] != "1" || rows[1][3] != "ApplyConfig" || rows[1][5] != "-" {
		t.Errorf("second page: %d\n%s", code, out)
	}

	out, _, code = ctl(t, addr, "", "history", "--all", "--page-size", "1", "-o", "json")
	var resp struct {
		Revisions []struct {
			Revision   string `json:"revision"`
			CreateTime string `json:"create_time"`
		} `json:"revisions"`
		NextPageToken string `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || code != 0 || len(resp.Revisions) != 3 || resp.NextPageToken != "" ||
		resp.Revisions[0].Revision != "3" || resp.Revisions[2].Revision != "1" || resp.Revisions[0].CreateTime == "" {
		t.Errorf("history --all -o json: %d %v\n%s", code, err, out)
	}
}

// TestDiffAndRollback checks diff's text and a rollback's answer and history entry.
func TestDiffAndRollback(t *testing.T) {
	addr := startServer(t, seed)
	changed := strings.Replace(strings.Replace(seed, "sk-secret-a", "sk-secret-b", 1), "port: 3000", "port: 3001", 1)
	if _, errOut, code := ctl(t, addr, changed, "apply", "-f", "-", "-m", "new key"); code != 0 {
		t.Fatalf("apply: %d %s", code, errOut)
	}
	out, _, code := ctl(t, addr, "", "diff", "2")
	want := "revision 1 → revision 2:\n" +
		"changed forward/main\n    port: 3000 → 3001\n" +
		"changed upstream/a\n    auth.token: changed (secret)\n"
	if code != 0 || out != want {
		t.Errorf("diff 2: %d\n%s\nwant:\n%s", code, out, want)
	}
	if out, _, code := ctl(t, addr, "", "diff", "2", "2"); code != 0 || out != "revision 2 → revision 2: no changes\n" {
		t.Errorf("diff 2 2: %d %q", code, out)
	}
	out, _, code = ctl(t, addr, "", "diff", "1", "0", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "action: added") || strings.Contains(out, "sk-secret") {
		t.Errorf("diff 1 0 -o yaml: %d\n%s", code, out)
	}

	out, errOut, code := ctl(t, addr, "", "rollback", "1", "--expected-revision", "2")
	if code != 0 || out != "revision 3: the config of revision 1\n" {
		t.Fatalf("rollback 1: %d %q %s", code, out, errOut)
	}
	out, _, _ = ctl(t, addr, "", "history", "--page-size", "1")
	if rows := tableRows(out); len(rows) < 2 || rows[1][3] != "RollbackRevision" || rows[1][5] != "rollback to revision 1" {
		t.Errorf("history after the rollback:\n%s", out)
	}
	if _, errOut, code := ctl(t, addr, "", "rollback", "2", "--expected-revision", "2"); code != exitConflict {
		t.Errorf("rollback at a stale revision: %d %s", code, errOut)
	}
}
