package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigUnsupportedRefused: a feature the proxy lacks (the response cache) is refused by
// the control plane, whole config and resource write alike, with 400 naming the field, and
// no revision is committed that every proxy of the fleet would NACK. (llmproxyctl validate
// and llmproxy --test refuse it with the same error: see sameErrorConfigs.)
func TestConfigUnsupportedRefused(t *testing.T) {
	t.Parallel()
	const field = "upstream_groups[0].cache.enabled"
	cp := startControlPlane(t, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), "")

	revision := func() string { return cp.rest(t, "GET", "/api/v1/config", "", false).header.Get("X-Llmproxy-Revision") }
	rev := revision()
	whole := `{"upstreams":[{"name":"a","url":"http://127.0.0.1:1"}],` +
		`"upstream_groups":[{"name":"g","upstreams":[{"name":"a"}],"cache":{"enabled":true}}]}`
	a := cp.rest(t, "PUT", "/api/v1/config", whole, false)
	if a.code != 400 || !strings.Contains(a.body, field) || !strings.Contains(a.body, "not supported") {
		t.Errorf("PUT /api/v1/config with cache.enabled: %d %s; want 400 naming %s", a.code, a.body, field)
	}
	if got := revision(); got != rev {
		t.Errorf("revision %s after a refused PUT; want %s", got, rev)
	}
	if a := cp.rest(t, "PUT", "/api/v1/config", strings.Replace(whole, `"enabled":true`, `"enabled":false`, 1), false); a.code != 200 {
		t.Fatalf("PUT /api/v1/config with cache.enabled false: %d %s", a.code, a.body)
	}
	rev = revision()
	a = cp.rest(t, "PUT", "/api/v1/upstream-groups/g", `{"name":"g","upstreams":[{"name":"a"}],"cache":{"enabled":true}}`, false)
	if a.code != 400 || !strings.Contains(a.body, "upstream_group.cache.enabled") {
		t.Errorf("PUT /api/v1/upstream-groups/g with cache.enabled: %d %s; want 400 naming upstream_group.cache.enabled", a.code, a.body)
	}
	if got := revision(); got != rev {
		t.Errorf("revision %s after a refused resource write; want %s", got, rev)
	}

}
