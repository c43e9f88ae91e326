package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/apikey"
)

// TestConsumersAndKeys walks a consumer's life through the CLI: create with limits, a key
// made and printed once, rotation, revocation, get and delete, and the offline hash.
func TestConsumersAndKeys(t *testing.T) {
	addr := startServer(t, seed)
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := ctl(t, addr, stdin, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		return out
	}

	out := run("", "consumer", "create", "team", "--model", "gpt-4o*", "--forward", "main", "--requests-per-minute", "10",
		"--tokens-per-day", "5000", "--budget", "2.5", "--budget-period", "week", "--label", "team=search", "-m", "new team")
	if out != "consumer \"team\" created (revision 2)\n" {
		t.Errorf("consumer create printed %q", out)
	}
	out = run("", "key", "create", "team", "--id", "ci", "--expires-at", "2031-01-01T00:00:00Z")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	key := lines[len(lines)-1]
	if len(lines) != 2 || !strings.HasPrefix(lines[0], `key "ci" of consumer "team" created (revision 3); it is shown only this once:`) || !strings.HasPrefix(key, apikey.Prefix) {
		t.Fatalf("key create printed %q", out)
	}

	out = run("", "consumer", "get", "team")
	for _, want := range []string{"name: team", "id: ci", "hash: <redacted>", "expires_at: \"2031-01-01T00:00:00Z\"", "requests_per_minute: 10",
		"tokens_per_day: 5000", "usd: 2.5", "period: week", "team: search", "- gpt-4o*"} {
		if !strings.Contains(out, want) {
			t.Errorf("consumer get lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, key) || strings.Contains(out, apikey.Hash(key)) {
		t.Errorf("consumer get shows the key or its hash:\n%s", out)
	}
	if out := run("", "get", "consumers"); !strings.Contains(out, "name: team") {
		t.Errorf("get consumers printed:\n%s", out)
	}

	out = run("", "key", "rotate", "team", "ci", "--grace", "1h", "--new-id", "ci-2", "-o", "json")
	var rot struct{ ID, Key string }
	if err := json.Unmarshal([]byte(out), &rot); err != nil || rot.ID != "ci-2" || !strings.HasPrefix(rot.Key, apikey.Prefix) || rot.Key == key {
		t.Fatalf("key rotate -o json printed %s (%v)", out, err)
	}
	if out := run("", "key", "revoke", "team", "ci"); out != "key \"ci\" of consumer \"team\" revoked (revision 5)\n" {
		t.Errorf("key revoke printed %q", out)
	}
	if _, errOut, code := ctl(t, addr, "", "key", "revoke", "team", "ci"); code != exitNotFound || !strings.Contains(errOut, `key "ci" not found in consumer "team"`) {
		t.Errorf("revoking twice: exit %d %s", code, errOut)
	}
	if out := run("", "consumer", "delete", "team"); out != "consumer \"team\" deleted (revision 6)\n" {
		t.Errorf("consumer delete printed %q", out)
	}

	// Offline: the hash of a key given as an argument or on stdin, and a new key.
	if out := run("", "key", "hash", "llmp-abc", "--server", "127.0.0.1:1"); out != apikey.Hash("llmp-abc")+"\n" {
		t.Errorf("key hash KEY printed %q", out)
	}
	if out := run("llmp-abc\n", "key", "hash"); out != apikey.Hash("llmp-abc")+"\n" {
		t.Errorf("key hash from stdin printed %q", out)
	}
	out = run("", "key", "hash", "--new")
	var newKey, newHash string
	if _, err := fmt.Sscanf(out, "key:  %s\nhash: %s\n", &newKey, &newHash); err != nil || apikey.Hash(newKey) != newHash {
		t.Errorf("key hash --new printed %q", out)
	}

	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"consumer"}, exitUsage, "consumer needs an action"},
		{[]string{"key", "hash", "--new", "x"}, exitUsage, "--new makes a key"},
		{[]string{"key", "create", "team", "--expires-in", "1h", "--expires-at", "2031-01-01T00:00:00Z"}, exitUsage, "exclude each other"},
		{[]string{"consumer", "create", "x", "--label", "novalue"}, exitUsage, "want KEY=VALUE"},
		{[]string{"consumer", "create", "x", "--budget-period", "day"}, exitUsage, "--budget-period needs --budget"},
		{[]string{"consumer", "create", "x", "--forward", "nope"}, exitInvalid, `consumer.forwards[0]: forward "nope" is not defined`},
		{[]string{"key", "create", "nobody"}, exitNotFound, `consumer "nobody" not found`},
	} {
		if _, errOut, code := ctl(t, addr, "", tt.args...); code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d %q; want %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
}
