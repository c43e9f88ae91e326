package admin_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/apikey"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// withConsumer is base() with a consumer "team" (key "static" of hash staticHash) that may
// use forward f only.
func withConsumer() *configv1.Config {
	c := base()
	c.HttpServer.Forwards[0].ClientAuth = "required"
	c.Consumers = []*configv1.Consumer{{
		Name: "team", Forwards: []string{"f"},
		Keys: []*configv1.ConsumerKey{{Id: "static", Hash: staticHash}},
	}}
	return c
}

var staticHash = apikey.Hash("llmp-static-test-key")

// storedKey returns the stored key id of consumer "team", or nil.
func storedKey(t *testing.T, e *env, id string) *configv1.ConsumerKey {
	t.Helper()
	_, cfg := e.stored(t)
	for _, c := range cfg.GetConsumers() {
		if c.GetName() != "team" {
			continue
		}
		for _, k := range c.GetKeys() {
			if k.GetId() == id {
				return k
			}
		}
	}
	return nil
}

func TestConsumerLifecycle(t *testing.T) {
	e := newEnv(t, "", nil)
	e.seed(t, base())
	ctx := e.ctx(t)

	in := withConsumer().Consumers[0]
	in.Models = []string{"gpt-4o*"}
	resp, err := e.client.CreateConsumer(ctx, &adminv1.CreateConsumerRequest{Consumer: in})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if got := resp.GetConsumer().GetKeys()[0].GetHash(); got != redact.Marker {
		t.Errorf("create answered hash %q; want it redacted", got)
	}
	_, err = e.client.CreateConsumer(ctx, &adminv1.CreateConsumerRequest{Consumer: &configv1.Consumer{Name: "team"}})
	wantCode(t, err, codes.AlreadyExists, `consumer "team" already exists`)
	_, err = e.client.CreateConsumer(ctx, &adminv1.CreateConsumerRequest{Consumer: &configv1.Consumer{
		Name: "bad", Forwards: []string{"nope"}, Keys: []*configv1.ConsumerKey{{Id: "x", Hash: "llmp-oops"}},
	}})
	wantCode(t, err, codes.InvalidArgument, "consumer.keys[0].hash", "consumer.forwards[0]")
	if strings.Contains(err.Error(), "llmp-oops") {
		t.Errorf("the refusal echoes what may be a key: %v", err)
	}

	// GET, then PUT what it gave back: the redacted hash keeps the stored one.
	got, err := e.client.GetConsumer(ctx, &adminv1.GetConsumerRequest{Name: "team"})
	if err != nil || got.GetKeys()[0].GetHash() != redact.Marker {
		t.Fatalf("get: %v, %v", got, err)
	}
	got.Models = append(got.Models, "o3-mini")
	if _, err := e.client.UpdateConsumer(ctx, &adminv1.UpdateConsumerRequest{Name: "team", Consumer: got}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if k := storedKey(t, e, "static"); k.GetHash() != staticHash {
		t.Errorf("stored hash after GET-then-PUT = %q; want %q", k.GetHash(), staticHash)
	}
	list, err := e.client.ListConsumers(ctx, &adminv1.ListConsumersRequest{})
	if err != nil || len(list.GetConsumers()) != 1 || list.GetConsumers()[0].GetKeys()[0].GetHash() != redact.Marker {
		t.Fatalf("list: %v, %v", list, err)
	}

	// A forward a consumer names cannot go.
	_, err = e.client.DeleteForward(ctx, &adminv1.DeleteForwardRequest{Name: "f"})
	wantCode(t, err, codes.FailedPrecondition, `forward "f" is used by consumer "team"`)

	if _, err := e.client.DeleteConsumer(ctx, &adminv1.DeleteConsumerRequest{Name: "team"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, err = e.client.GetConsumer(ctx, &adminv1.GetConsumerRequest{Name: "team"})
	wantCode(t, err, codes.NotFound, `consumer "team" not found`)
	wantResource(t, err, admin.ResourceConsumer, "team", "")
}

func TestKeys(t *testing.T) {
	e := newEnv(t, "", nil)
	rev := e.seed(t, withConsumer())
	ctx := e.ctx(t)

	// A created key is answered once, in clear; only its hash is stored.
	created, err := e.client.CreateKey(ctx, &adminv1.CreateKeyRequest{Name: "team", Key: &adminv1.NewKey{ExpiresAt: "2031-01-01T00:00:00Z"}})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	key, id := created.GetKey(), created.GetId()
	if !strings.HasPrefix(key, apikey.Prefix) || len(key) < 40 || id == "" || created.GetRevision() != rev+1 {
		t.Fatalf("create key answered key %q id %q revision %d", key, id, created.GetRevision())
	}
	k := storedKey(t, e, id)
	if k.GetHash() != apikey.Hash(key) || k.GetExpiresAt() != "2031-01-01T00:00:00Z" {
		t.Fatalf("stored key %v; want the hash of the answered key", k)
	}
	_, cfg := e.stored(t)
	if b, _ := proto.Marshal(cfg); strings.Contains(string(b), key) {
		t.Fatal("the stored config holds the key in clear")
	}
	for _, c := range created.GetConsumer().GetKeys() {
		if c.GetHash() != redact.Marker {
			t.Errorf("the answer shows hash %q", c.GetHash())
		}
	}

	// The requested id must be new; a bad expiry names the request field.
	_, err = e.client.CreateKey(ctx, &adminv1.CreateKeyRequest{Name: "team", Key: &adminv1.NewKey{Id: "static"}})
	wantCode(t, err, codes.AlreadyExists, `key "static" already exists in consumer "team"`)
	_, err = e.client.CreateKey(ctx, &adminv1.CreateKeyRequest{Name: "team", Key: &adminv1.NewKey{Id: "k2", ExpiresAt: "soon"}})
	wantCode(t, err, codes.InvalidArgument, "key.expires_at")
	_, err = e.client.CreateKey(ctx, &adminv1.CreateKeyRequest{Name: "nobody"})
	wantCode(t, err, codes.NotFound, `consumer "nobody" not found`)

	// A dry run shows what would change and answers no key: none is stored.
	dry, err := e.client.CreateKey(ctx, &adminv1.CreateKeyRequest{Name: "team", DryRun: true})
	if err != nil || !dry.GetDryRun() || dry.GetKey() != "" || storedKey(t, e, dry.GetId()) != nil {
		t.Fatalf("dry run: %v, %v", dry, err)
	}

	// Rotation with a grace period: a new key, and the old one expires then.
	before := time.Now()
	rot, err := e.client.RotateKey(ctx, &adminv1.RotateKeyRequest{Name: "team", Id: "static", Rotation: &adminv1.KeyRotation{Grace: "1h", NewId: "static-2"}})
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if rot.GetId() != "static-2" || storedKey(t, e, "static-2").GetHash() != apikey.Hash(rot.GetKey()) {
		t.Fatalf("rotate answered %v", rot)
	}
	exp, err := time.Parse(time.RFC3339, storedKey(t, e, "static").GetExpiresAt())
	if err != nil || exp.Before(before.Add(time.Hour)) || exp.After(time.Now().Add(time.Hour+2*time.Second)) {
		t.Errorf("old key expires at %v (%v); want about an hour from now", exp, err)
	}
	// Rotating again with a longer grace never extends an expiry.
	if _, err := e.client.RotateKey(ctx, &adminv1.RotateKeyRequest{Name: "team", Id: "static", Rotation: &adminv1.KeyRotation{Grace: "48h"}}); err != nil {
		t.Fatalf("second rotation: %v", err)
	}
	if again, _ := time.Parse(time.RFC3339, storedKey(t, e, "static").GetExpiresAt()); !again.Equal(exp) {
		t.Errorf("a second rotation moved the expiry from %v to %v", exp, again)
	}
	// Without a grace period the old key goes at once.
	if _, err := e.client.RotateKey(ctx, &adminv1.RotateKeyRequest{Name: "team", Id: "static-2"}); err != nil {
		t.Fatalf("rotation without grace: %v", err)
	}
	if storedKey(t, e, "static-2") != nil {
		t.Error("rotation without grace kept the old key")
	}
	_, err = e.client.RotateKey(ctx, &adminv1.RotateKeyRequest{Name: "team", Id: "static", Rotation: &adminv1.KeyRotation{Grace: "-1h"}})
	wantCode(t, err, codes.InvalidArgument, "rotation.grace")

	// Revocation removes the key.
	if _, err := e.client.RevokeKey(ctx, &adminv1.RevokeKeyRequest{Name: "team", Id: id}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if storedKey(t, e, id) != nil {
		t.Error("revoked key is still stored")
	}
	_, err = e.client.RevokeKey(ctx, &adminv1.RevokeKeyRequest{Name: "team", Id: id})
	wantCode(t, err, codes.NotFound, `key "`+id+`" not found in consumer "team"`)
	wantResource(t, err, admin.ResourceKey, id, "team")
}

func TestPricing(t *testing.T) {
	e := newEnv(t, "", nil)
	e.seed(t, base())
	ctx := e.ctx(t)
	prices := []*configv1.Price{{Model: "gpt-4o-mini*", InputPerMillion: 0.15, OutputPerMillion: 0.6}, {Model: "gpt-4o*", InputPerMillion: 2.5, OutputPerMillion: 10}}
	resp, err := e.client.UpdatePricing(ctx, &adminv1.UpdatePricingRequest{Pricing: prices})
	if err != nil || len(resp.GetPricing()) != 2 || resp.GetDiff().GetResources()[0].GetKind() != "pricing" {
		t.Fatalf("update pricing: %v, %v", resp, err)
	}
	got, err := e.client.GetPricing(ctx, &adminv1.GetPricingRequest{})
	if err != nil || len(got.GetPricing()) != 2 || got.GetPricing()[1].GetModel() != "gpt-4o*" || got.GetRevision() != resp.GetRevision() {
		t.Fatalf("get pricing: %v, %v", got, err)
	}
	_, err = e.client.UpdatePricing(ctx, &adminv1.UpdatePricingRequest{Pricing: []*configv1.Price{{Model: "[", InputPerMillion: -1}}})
	wantCode(t, err, codes.InvalidArgument, "pricing[0].model", "pricing[0].input_per_million")
}

func TestConsumersREST(t *testing.T) {
	e := newEnv(t, "", nil)
	e.seed(t, withConsumer())
	api := e.rest + "/api/v1"

	code, _, body := restCall(t, "POST", api+"/consumers/team/keys?message=for+ci", `{"id":"ci"}`, "")
	var created struct {
		ID, Key  string
		Revision string
	}
	if err := json.Unmarshal(body, &created); err != nil || code != http.StatusCreated || created.ID != "ci" || !strings.HasPrefix(created.Key, apikey.Prefix) {
		t.Fatalf("POST keys: %d %s", code, body)
	}
	if storedKey(t, e, "ci").GetHash() != apikey.Hash(created.Key) {
		t.Fatal("REST-created key is not stored by its hash")
	}
	// A bare POST (no body) makes a key with a generated id.
	if code, _, body := restCall(t, "POST", api+"/consumers/team/keys", "", ""); code != http.StatusCreated || !strings.Contains(string(body), `"key":"llmp-`) {
		t.Fatalf("POST keys without a body: %d %s", code, body)
	}

	code, _, body = restCall(t, "POST", api+"/consumers/team/keys/ci:rotate", `{"grace":"10m"}`, "")
	if code != http.StatusCreated || !strings.Contains(string(body), `"key":"llmp-`) || storedKey(t, e, "ci").GetExpiresAt() == "" {
		t.Fatalf("POST :rotate: %d %s", code, body)
	}
	if code, _, body := restCall(t, "DELETE", api+"/consumers/team/keys/ci", "", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE key: %d %s", code, body)
	}
	if code, _, body := restCall(t, "DELETE", api+"/consumers/team/keys/ci", "", ""); code != http.StatusNotFound {
		t.Fatalf("DELETE a revoked key: %d %s", code, body)
	}

	code, _, body = restCall(t, "GET", api+"/consumers/team", "", "")
	if code != http.StatusOK || strings.Contains(string(body), "sha256:") || !strings.Contains(string(body), redact.Marker) {
		t.Fatalf("GET consumer: %d %s", code, body)
	}
	if code, _, body := restCall(t, "POST", api+"/consumers", `{"name":"other","limits":{"requests_per_minute":10,"budget":{"usd":5,"period":"week"}}}`, ""); code != http.StatusCreated {
		t.Fatalf("POST consumer: %d %s", code, body)
	}

	if code, _, body := restCall(t, "PUT", api+"/pricing", " ", ""); code != http.StatusBadRequest || !strings.Contains(string(body), "send []") {
		t.Fatalf("PUT pricing with an empty body: %d %s", code, body)
	}
	if code, _, body := restCall(t, "PUT", api+"/pricing", `[{"model":"gpt-4o*","input_per_million":2.5,"output_per_million":10}]`, ""); code != http.StatusOK {
		t.Fatalf("PUT pricing: %d %s", code, body)
	}
	code, _, body = restCall(t, "GET", api+"/pricing", "", "")
	if code != http.StatusOK || !strings.Contains(string(body), `"model":"gpt-4o*"`) {
		t.Fatalf("GET pricing: %d %s", code, body)
	}
}
