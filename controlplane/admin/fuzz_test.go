package admin_test

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// FuzzApplyConfigJSON decodes a body of PUT /api/v1/config as the REST gateway does
// (protojson, unknown fields refused) and dry-runs it through the admin service: whatever
// the body, the service answers OK or INVALID_ARGUMENT, never panics, and stores nothing.
func FuzzApplyConfigJSON(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"upstreams":[{"name":"a","url":"http://127.0.0.1:1"}],"upstream_groups":[{"name":"g","upstreams":[{"name":"a"}]}],"http_server":{"forwards":[{"name":"f","port":3000,"default_group":"g"}]}}`,
		`{"http_server":{"forwards":[{"name":"f","default_group":"g","tls":{"cert":"c","key":"k"},"trusted_proxies":["10.0.0.0/8","x"],"routing":[{"path":"/v1/{m:[a-z]+}/*","target_group":"g","model":"gpt-*"}]}]}}`,
		`{"upstreams":[{"name":"a","url":"https://u:p@h/?api_key=k","auth":{"type":"bearer","token":"<redacted>"},"headers":[{"op":"insert","key":"X-Api-Key","value":"v"}]}]}`,
		`{"upstream_groups":[{"name":"g","http_client":{"tls":{"ca":""},"retry":{"attempts":0,"retry_on":["999","timeout"]},"proxy":{"url":"socks5://h"}},"concurrency":{"queue":5}}]}`,
	} {
		f.Add([]byte(seed))
	}
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(f.TempDir(), "cp.db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	srv := admin.New(st, fakeFleet{}, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		cfg := &configv1.Config{}
		if protojson.Unmarshal(body, cfg) != nil {
			return // the gateway answers 400 before the service sees it
		}
		_, err := srv.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: cfg, DryRun: true})
		if c := status.Code(err); c != codes.OK && c != codes.InvalidArgument {
			t.Fatalf("dry run of %s: %v; want OK or INVALID_ARGUMENT", body, err)
		}
		if rev, _, err := st.Load(ctx); err != nil || rev != 0 {
			t.Fatalf("a dry run stored revision %d (%v)", rev, err)
		}
	})
}
