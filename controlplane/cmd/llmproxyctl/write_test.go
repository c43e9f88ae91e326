package main

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// TestFillEveryWrite checks that the shared write flags fit every write request of the
// admin API (those with a wait field), so any write command can use them.
func TestFillEveryWrite(t *testing.T) {
	c := &cli{}
	c.expected = optUint{set: true, v: 7}
	w := &writeOptions{c: c, message: "why", wait: defaultWait, dryRun: true, expected: &c.expected}
	methods := adminv1.File_llmproxy_admin_v1_admin_proto.Services().ByName("AdminService").Methods()
	writes := 0
	for i := range methods.Len() {
		in := methods.Get(i).Input()
		if in.Fields().ByName("wait") == nil {
			continue
		}
		writes++
		mt, err := protoregistry.GlobalTypes.FindMessageByName(in.FullName())
		if err != nil {
			t.Fatal(err)
		}
		req := mt.New().Interface()
		if err := w.fill(req); err != nil {
			t.Errorf("%s: %v", in.FullName(), err)
			continue
		}
		m := req.ProtoReflect()
		get := func(name protoreflect.Name) protoreflect.Value { return m.Get(in.Fields().ByName(name)) }
		if get("message").String() != "why" || get("wait").String() != "30s" || !get("dry_run").Bool() || get("expected_revision").Uint() != 7 {
			t.Errorf("%s filled as %v", in.FullName(), req)
		}
	}
	if writes < 15 {
		t.Errorf("found %d write requests; the admin API has more", writes)
	}
}

// fixedFleet is a fleet whose proxies never change.
type fixedFleet []*adminv1.ProxyStatus

func (f fixedFleet) Proxies() []*adminv1.ProxyStatus { return f }

// TestWriteWaits checks what a write with --wait prints and its exit code: 0 when every
// proxy applied it, 6 naming the proxy and its reason on a refusal, 7 naming the laggard
// at the deadline, and the fleet in the -o json answer.
func TestWriteWaits(t *testing.T) {
	const reason = "upstreams[0].auth.token: environment variable \"KEY\" is not set"
	applied := &adminv1.ProxyStatus{NodeId: "p1", Connected: true, AckedRevision: 1000}
	refusing := &adminv1.ProxyStatus{NodeId: "p2", Connected: true, AckedRevision: 1, LastNackRevision: 1000, LastNackError: reason}
	lagging := &adminv1.ProxyStatus{NodeId: "p3", Connected: true, AckedRevision: 1}
	gone := &adminv1.ProxyStatus{NodeId: "p4", AckedRevision: 1}
	tests := []struct {
		name    string
		fleet   fixedFleet
		args    []string
		code    int
		out     string
		errWant string
	}{
		{"all applied", fixedFleet{applied, applied, gone}, []string{"--wait"}, exitOK,
			"upstream group \"g2\" deleted (revision 2)\napplied on 2 of 2 proxies\n", ""},
		{"refused", fixedFleet{applied, refusing}, []string{"--wait=5s", "-m", "drop g2"}, exitRefused,
			"upstream group \"g2\" deleted (revision 2)\napplied on 1 of 2 proxies\nrefused by p2 (revision 1000): " + reason + "\n",
			"llmproxyctl: revision 2 was refused by p2; it is stored (llmproxyctl rollback 1 undoes it)\n"},
		{"timed out", fixedFleet{applied, lagging}, []string{"--wait=300ms"}, exitTimeout,
			"upstream group \"g2\" deleted (revision 2)\napplied on 1 of 2 proxies\nnot yet applied on p3 after waiting 300ms\n",
			"llmproxyctl: revision 2 was not applied on p3 within 300ms; it is stored (llmproxyctl rollback 1 undoes it)\n"},
		{"no proxies", nil, []string{"--wait"}, exitOK,
			"upstream group \"g2\" deleted (revision 2)\napplied on 0 of 0 proxies (no proxy is connected to this control plane)\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServerWith(t, seed, tt.fleet)
			out, errOut, code := ctl(t, addr, "", append([]string{"delete", "group", "g2"}, tt.args...)...)
			if code != tt.code || out != tt.out || errOut != tt.errWant {
				t.Errorf("exit %d; want %d\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", code, tt.code, out, tt.out, errOut, tt.errWant)
			}
		})
	}

	addr := startServerWith(t, seed, fixedFleet{applied, refusing})
	out, _, code := ctl(t, addr, "", "route", "set", "main", "/v1/models", "g2", "--wait=5s", "-o", "json")
	var resp struct {
		Revision string `json:"revision"`
		Fleet    struct {
			Applied int `json:"applied"`
			Refused []struct {
				NodeID string `json:"node_id"`
				Error  string `json:"error"`
			} `json:"refused"`
		} `json:"fleet"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || code != exitRefused || resp.Revision != "2" ||
		resp.Fleet.Applied != 1 || len(resp.Fleet.Refused) != 1 || resp.Fleet.Refused[0].Error != reason {
		t.Errorf("route set -o json --wait: exit %d, %v\n%s", code, err, out)
	}
}

// TestDryRun checks that every write command's --dry-run prints the diff and stores
// nothing.
func TestDryRun(t *testing.T) {
	addr := startServer(t, seed)
	changed := strings.Replace(seed, "port: 3000", "port: 3001", 1)
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"apply --diff", changed, []string{"apply", "-f", "-", "--diff"},
			"changed forward/main\n    port: 3000 → 3001\n"},
		{"apply --dry-run", changed, []string{"apply", "-f", "-", "--dry-run"},
			"changed forward/main\n    port: 3000 → 3001\n"},
		{"delete", "", []string{"delete", "group", "g2", "--dry-run"},
			"removed upstream_group/g2\n    name: \"g2\"\n    upstreams[\"a\"].name: \"a\"\n"},
		{"route set", "", []string{"route", "set", "main", "/v1/models", "g2", "--dry-run"},
			"changed forward/main\n    routing[\"/v1/models\"].target_group: \"g1\" → \"g2\"\n"},
		{"route delete", "", []string{"route", "delete", "main", "/v1/models", "--dry-run"},
			"changed forward/main\n    routing[\"/v1/models\"].path: \"/v1/models\" → (unset)\n    routing[\"/v1/models\"].target_group: \"g1\" → (unset)\n"},
		{"rollback", "", []string{"rollback", "1", "--dry-run"},
			"revision 1 → the proposed config: no changes\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := ctl(t, addr, tt.stdin, tt.args...)
			if code != 0 || !strings.HasPrefix(out, "dry run: the change is valid at revision 1; nothing was stored\n") || !strings.HasSuffix(out, tt.want) {
				t.Errorf("exit %d %s\n%s\nwant it to end with:\n%s", code, errOut, out, tt.want)
			}
		})
	}
	if out, _, _ := ctl(t, addr, "", "history", "-o", "json"); !strings.Contains(out, `"revision": "1"`) || strings.Contains(out, `"revision": "2"`) {
		t.Errorf("a dry run stored something:\n%s", out)
	}
}
