package admin_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/llmproxy-go/llmproxy/controlplane/fleet"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// reportingFleet is a fleet that also answers the report views, from a real fleet.Reports.
type reportingFleet struct {
	fakeFleet
	*fleet.Reports
}

func (f reportingFleet) Proxies() []*adminv1.ProxyStatus { return f.fakeFleet.Proxies() }

func TestFleetViews(t *testing.T) {
	const token = "views-token"
	st, err := store.Open(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "usage.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reports, err := fleet.New(context.Background(), fleet.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, token, reportingFleet{fakeFleet{{NodeId: "p1"}}, reports})
	e.seed(t, base())
	api := e.rest + "/api/v1"

	for _, tc := range []struct {
		name, path string
		want       int
		bodyHas    []string
	}{
		{"health of a configured upstream", "/upstreams/a/health", 200, []string{`"name":"a"`, `"verdict":"unknown"`}},
		{"health of an unknown upstream", "/upstreams/nope/health", 404, []string{`upstream \"nope\" not found`}},
		{"health of every upstream", "/upstream-health", 200, []string{`"upstreams":`, `"name":"a"`, `"name":"b"`}},
		{"usage", "/usage?by=model&window=15m", 200, []string{`"by":"model"`, `"start_time"`, `"total"`}},
		{"usage with bad parameters", "/usage?by=route&window=1y&step=0", 400, []string{`"field":"by"`, `"field":"window"`, `"field":"step"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := restCall(t, "GET", api+tc.path, "", token)
			if code != tc.want {
				t.Fatalf("GET %s: %d %s; want %d", tc.path, code, body, tc.want)
			}
			for _, s := range tc.bodyHas {
				if !strings.Contains(string(body), s) {
					t.Errorf("GET %s: body %s lacks %s", tc.path, body, s)
				}
			}
		})
	}
	list, err := e.client.ListUpstreamHealth(e.ctx(t), &adminv1.ListUpstreamHealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range list.GetUpstreams() {
		names = append(names, h.GetName()+" "+h.GetVerdict())
	}
	if strings.Join(names, ", ") != "a unknown, b unknown" || list.GetRevision() == 0 {
		t.Errorf("ListUpstreamHealth: %v at revision %d; want a and b in config order, unknown (no reports)", names, list.GetRevision())
	}
	if code, _, _ := restCall(t, "GET", api+"/usage?by=model", "", ""); code != 401 {
		t.Errorf("usage without the admin token: %d; want 401", code)
	}

	// A control plane that collects no reports says so.
	plain := newEnv(t, "", fakeFleet{})
	plain.seed(t, base())
	_, err = plain.client.GetUpstreamHealth(plain.ctx(t), &adminv1.GetUpstreamHealthRequest{Name: "a"})
	wantCode(t, err, codes.Unimplemented, "does not collect proxy reports")
	_, err = plain.client.ListUpstreamHealth(plain.ctx(t), &adminv1.ListUpstreamHealthRequest{})
	wantCode(t, err, codes.Unimplemented, "does not collect proxy reports")
}
