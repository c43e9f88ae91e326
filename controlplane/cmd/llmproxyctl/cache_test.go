package main

import (
	"strings"
	"testing"
)

func TestCachePurge(t *testing.T) {
	addr := startServer(t, seed)

	out, errOut, code := ctl(t, addr, "", "cache", "purge", "g1", "-m", "stale answers")
	if code != 0 || !strings.Contains(out, "cache of group g1 purged (epoch 1)") {
		t.Fatalf("cache purge g1: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = ctl(t, addr, "", "cache", "purge", "g1")
	if code != 0 || !strings.Contains(out, "(epoch 2)") {
		t.Fatalf("second purge: %d\n%s%s", code, out, errOut)
	}
	out, _, code = ctl(t, addr, "", "history", "-o", "json")
	if code != 0 || !strings.Contains(out, "PurgeCache") || !strings.Contains(out, "stale answers") {
		t.Errorf("history does not show the purge with its message: %d\n%s", code, out)
	}
	if _, errOut, code := ctl(t, addr, "", "cache", "purge", "nope"); code != 3 {
		t.Errorf("purge of an unknown group: exit %d, want 3 (not found)\n%s", code, errOut)
	}
	if _, _, code := ctl(t, addr, "", "cache", "purge"); code != 2 {
		t.Errorf("purge without a group: exit %d, want 2 (usage)", code)
	}
	out, _, _ = ctl(t, addr, "", "__complete", "cache", "purge", "")
	if !strings.Contains(out, "g1\ng2\n") {
		t.Errorf("group names not completed:\n%s", out)
	}
}
