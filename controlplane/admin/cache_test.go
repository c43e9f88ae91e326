package admin_test

import (
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

func TestPurgeCache(t *testing.T) {
	e := newEnv(t, "", nil)
	cfg := base()
	cfg.UpstreamGroups[0].Cache = &configv1.Cache{Enabled: proto.Bool(true), Ttl: "1m"}
	rev := e.seed(t, cfg)
	ctx := e.ctx(t)

	r, err := e.client.PurgeCache(ctx, &adminv1.PurgeCacheRequest{Name: "g1", ExpectedRevision: proto.Uint64(rev)})
	if err != nil {
		t.Fatalf("purge: %v", err)
	}
	if r.Revision != rev+1 || r.Epoch != 1 {
		t.Errorf("purge answered revision %d epoch %d; want %d and 1", r.Revision, r.Epoch, rev+1)
	}
	r, err = e.client.PurgeCache(ctx, &adminv1.PurgeCacheRequest{Name: "g1"})
	if err != nil || r.Epoch != 2 {
		t.Fatalf("second purge: %v, epoch %d; want 2", err, r.GetEpoch())
	}
	_, stored := e.stored(t)
	if c := stored.UpstreamGroups[0].Cache; c.GetEpoch() != 2 || c.GetTtl() != "1m" || !c.GetEnabled() {
		t.Errorf("stored cache after two purges: %v; want epoch 2 and the rest unchanged", c)
	}

	// No write lowers the epoch: not a whole-group update without it, not a config apply.
	g := group("g1", "a", "b")
	if _, err := e.client.UpdateUpstreamGroup(ctx, &adminv1.UpdateUpstreamGroupRequest{Name: "g1", UpstreamGroup: g}); err != nil {
		t.Fatalf("update group: %v", err)
	}
	cfg = base()
	cfg.UpstreamGroups[0].Cache = &configv1.Cache{Enabled: proto.Bool(true), Epoch: 1}
	if _, err := e.client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{Config: cfg}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	_, stored = e.stored(t)
	if got := stored.UpstreamGroups[0].GetCache().GetEpoch(); got != 2 {
		t.Errorf("epoch after an update and an apply without it: %d; want 2 kept", got)
	}
	// A group without a cache block can be purged: its epoch is kept for when it is enabled.
	if _, err := e.client.CreateUpstreamGroup(ctx, &adminv1.CreateUpstreamGroupRequest{UpstreamGroup: group("g2", "b")}); err != nil {
		t.Fatal(err)
	}
	if r, err := e.client.PurgeCache(ctx, &adminv1.PurgeCacheRequest{Name: "g2"}); err != nil || r.Epoch != 1 {
		t.Errorf("purge of a group without cache: %v, epoch %d", err, r.GetEpoch())
	}

	_, err = e.client.PurgeCache(ctx, &adminv1.PurgeCacheRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `"nope"`)
	_, err = e.client.PurgeCache(ctx, &adminv1.PurgeCacheRequest{Name: "g1", ExpectedRevision: proto.Uint64(1)})
	wantCode(t, err, codes.Aborted)
}

func TestPurgeCacheREST(t *testing.T) {
	e := newEnv(t, "", nil)
	rev := e.seed(t, base())
	code, hdr, body := restCall(t, "POST", e.rest+"/api/v1/upstream-groups/g1/cache:purge", "", "")
	if code != 200 || !strings.Contains(string(body), `"epoch":"1"`) || hdr.Get("X-Llmproxy-Revision") == "" {
		t.Fatalf("POST cache:purge: %d %s (revision header %q)", code, body, hdr.Get("X-Llmproxy-Revision"))
	}
	if !strings.Contains(string(body), `"revision":"`) || strings.Contains(string(body), `"revision":"`+strconv.FormatUint(rev, 10)+`"`) {
		t.Errorf("purge body %s: want the new revision", body)
	}
	code, _, body = restCall(t, "POST", e.rest+"/api/v1/upstream-groups/zz/cache:purge", "", "")
	if code != 404 {
		t.Errorf("purge of an unknown group: %d %s; want 404", code, body)
	}
}
