package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	"github.com/llmproxy-go/llmproxy/e2e/harness"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// secretsFixture is a valid config that sets every field config.proto marks as a secret at
// least once (TestSecretsNeverShown checks that it does). Its secret values are
// placeholders that plantSecrets replaces. Requests to its forward reach mocks a and b;
// those under /via-proxy/ go through an outbound proxy that is not there.
func secretsFixture(port int, a, b, deadProxy string) *configv1.Config {
	return &configv1.Config{
		HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{{
			Name: "main", Address: proto.String("127.0.0.1"), Port: proto.Uint32(uint32(port)), DefaultGroup: "g",
			Routing: []*configv1.Route{{Path: "/via-proxy/*", TargetGroup: "gp"}},
		}}},
		Upstreams: []*configv1.Upstream{
			{Name: "up-bearer", Url: a, Auth: &configv1.Auth{Type: "bearer", Token: "placeholder"}, Headers: []*configv1.HeaderOp{
				{Op: "insert", Key: "X-Api-Key", Value: "placeholder"},
				{Op: "insert", Key: "anthropic-version", Value: "2023-06-01"},
			}},
			{Name: "up-basic", Url: b, Auth: &configv1.Auth{Type: "basic", Username: "user", Password: "placeholder"}},
		},
		UpstreamGroups: []*configv1.UpstreamGroup{
			{Name: "g", Upstreams: []*configv1.UpstreamRef{{Name: "up-bearer"}, {Name: "up-basic"}}},
			{Name: "gp", Upstreams: []*configv1.UpstreamRef{{Name: "up-bearer"}},
				HttpClient: &configv1.HttpClient{Proxy: &configv1.OutboundProxy{Url: "http://puser:placeholder@" + deadProxy}}},
		},
		Consumers: []*configv1.Consumer{{Name: "c", Keys: []*configv1.ConsumerKey{{Id: "k1", Hash: "placeholder"}}}},
	}
}

// planted is a secret value put into the config, or a form it takes on the wire.
type planted struct {
	value string
	// wire: an upstream receives this value in its requests.
	wire bool
}

// keyHashField is a consumer key's hash, a secret that must keep its form.
const keyHashField = protoreflect.FullName("llmproxy.config.v1.ConsumerKey.hash")

// plantSecrets gives every secret field set in m (by the marks of config.proto, found by
// reflection) a unique value, counts in filled the values it set per field, and returns
// them.
func plantSecrets(t *testing.T, m protoreflect.Message, run string, filled map[protoreflect.FullName]int) (secrets []planted) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList() && fd.Message() != nil:
			for j := 0; j < v.List().Len(); j++ {
				secrets = append(secrets, plantSecrets(t, v.List().Get(j).Message(), run, filled)...)
			}
		case fd.Message() != nil && !fd.IsMap():
			secrets = append(secrets, plantSecrets(t, v.Message(), run, filled)...)
		case fd.Kind() == protoreflect.StringKind && !fd.IsList() && !fd.IsMap():
			kind := redact.Kind(fd)
			if kind == configv1.Secret_SECRET_UNSPECIFIED {
				continue
			}
			if kind == configv1.Secret_SECRET_HEADER_VALUE && !redact.SensitiveHeader(m.Get(fields.ByName("key")).String()) {
				continue // a header that carries no credential
			}
			filled[fd.FullName()]++
			secret := fmt.Sprintf("SeCrEt-%s-%d-%s", fd.Name(), filled[fd.FullName()], run)
			value := secret
			if fd.FullName() == keyHashField {
				// A key hash must have its form: the hash of a unique key.
				value = validate.FormatKeyHash(sha256.Sum256([]byte(secret)))
				secret = value
			}
			if kind == configv1.Secret_SECRET_URL_PASSWORD {
				u, err := url.Parse(v.String())
				if err != nil || u.User == nil {
					t.Fatalf("%s: fixture value %q is not a URL with a user", fd.FullName(), v.String())
				}
				u.User = url.UserPassword(u.User.Username(), secret)
				value = u.String()
			}
			m.Set(fd, protoreflect.ValueOfString(value))
			switch {
			case fd.FullName() == keyHashField: // stays in the control plane and the proxies
				secrets = append(secrets, planted{value: secret})
			case kind == configv1.Secret_SECRET_URL_PASSWORD: // sent to the outbound proxy only
				secrets = append(secrets, planted{value: secret})
			case fd.Name() == "password" && fields.ByName("username") != nil: // basic auth travels as base64(user:password)
				user := m.Get(fields.ByName("username")).String()
				secrets = append(secrets, planted{value: secret},
					planted{value: base64.StdEncoding.EncodeToString([]byte(user + ":" + secret)), wire: true})
			default:
				secrets = append(secrets, planted{value: secret, wire: true})
			}
		}
	}
	return secrets
}

// TestSecretsNeverShown (issue 9): every field config.proto marks as a secret, filled with a
// unique value, never appears in the admin API's reads (REST and gRPC, history and diffs
// included), the export, a proxy's /config (from the control plane and from a file), or the
// logs of either binary, including around a write-back of the redacted export, refused
// writes, a secret's rotation and a failed request. The write-back keeps the secrets: the
// upstreams still receive them.
func TestSecretsNeverShown(t *testing.T) {
	mocks := startMocks(t, nil, "a", "b")
	port := harness.FreePort(t)
	forward := fmt.Sprintf("http://127.0.0.1:%d", port)
	run := fmt.Sprintf("%08x", rand.Uint32())
	cfg := secretsFixture(port, mocks["a"].URL, mocks["b"].URL, harness.FreeAddr(t))
	filled := map[protoreflect.FullName]int{}
	secrets := plantSecrets(t, cfg.ProtoReflect(), run, filled)
	for _, fd := range redact.Fields(cfg.ProtoReflect().Descriptor()) {
		if filled[fd.FullName()] == 0 {
			t.Fatalf("%s is marked secret in config.proto but secretsFixture does not set it: add it there", fd.FullName())
		}
	}

	cp := startControlPlane(t, "sqlite:"+t.TempDir()+"/cp.db", "")
	body, err := protojson.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fleet := fleetOf(cp)
	rev := fleet.write(t, http.MethodPut, "/api/v1/config", string(body))
	p := xdsStartProxyWith(t, cp.grpcAddr, "p1", t.TempDir(), nil, "--log-level", "debug")
	xdsWaitRevision(t, rev, p)

	// The secrets reach the upstreams: two requests, one per member of g.
	for range 2 {
		if a := mustSend(t, http.MethodPost, forward+"/v1/chat/completions", chat("gpt-4o")); a.Status != http.StatusOK {
			t.Fatalf("chat: %d %s", a.Status, a.Body)
		}
	}
	if a := mustSend(t, http.MethodPost, forward+"/via-proxy/v1/chat/completions", chat("gpt-4o")); a.Status != http.StatusBadGateway {
		t.Errorf("through the missing outbound proxy: %d %s; want 502", a.Status, a.Body)
	}
	// received fails the test unless the upstreams have received every wire secret.
	received := func(when string) {
		var b strings.Builder
		for _, m := range []*mock{mocks["a"], mocks["b"]} {
			for _, r := range m.requests(t) {
				fmt.Fprintln(&b, r.Header)
			}
		}
		for _, s := range secrets {
			if s.wire && !strings.Contains(b.String(), s.value) {
				t.Errorf("%s: no upstream received %s; they got %s", when, s.value, b.String())
			}
		}
	}
	received("before the write-back")

	// Everything a person can read.
	var shown []string
	read := func(path string) string {
		a := cp.rest(t, http.MethodGet, path, "", false)
		if a.code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, a.code, a.body)
		}
		shown = append(shown, "GET "+path+": "+a.body)
		return a.body
	}
	export := read("/api/v1/config")
	for _, path := range []string{"/api/v1/upstreams", "/api/v1/upstreams/up-bearer", "/api/v1/upstreams/up-basic",
		"/api/v1/upstream-groups", "/api/v1/upstream-groups/gp", "/api/v1/forwards", "/api/v1/proxies"} {
		read(path)
	}
	if strings.Count(export, redact.Marker) < len(redact.Fields(cfg.ProtoReflect().Descriptor())) {
		t.Errorf("export shows %q fewer times than there are secret fields: %s", redact.Marker, export)
	}
	client, ctx := cp.client(t)
	gc, err := client.GetConfig(ctx, &adminv1.GetConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	shown = append(shown, "gRPC GetConfig: "+gc.String())
	shown = append(shown, "fleet proxy /config: "+fetch(t, p.Admin+"/config"))

	// Writing the redacted export back changes nothing and keeps every secret.
	if a := cp.rest(t, http.MethodPut, "/api/v1/config", export, false); a.code != http.StatusOK || !strings.Contains(a.body, `"revision":"`+cpRev(rev)+`"`) {
		t.Errorf("write-back of the export: %d %s; want 200 at revision %d", a.code, a.body, rev)
	}
	// Refused writes do not echo the secret they carry.
	for _, bad := range []string{
		`{"url":"` + mocks["a"].URL + `","auth":{"type":"bearer","token":"SeCrEt-refused-` + run + `\u0001"}}`,
		`{"url":"http://user:SeCrEt-refused-` + run + ` @h","auth":{"type":"bearer","token":"fresh-token"}}`,
	} {
		a := cp.rest(t, http.MethodPut, "/api/v1/upstreams/up-bearer", bad, false)
		if a.code != http.StatusBadRequest {
			t.Errorf("PUT %s: %d %s; want 400", bad, a.code, a.body)
		}
		shown = append(shown, "refused write: "+a.body)
	}
	secrets = append(secrets, planted{value: "SeCrEt-refused-" + run})

	// The same config served by a proxy from a file.
	static := proto.Clone(cfg).(*configv1.Config)
	static.HttpServer.Forwards[0].Port = proto.Uint32(uint32(harness.FreePort(t)))
	yaml, err := configfile.Encode(static)
	if err != nil {
		t.Fatal(err)
	}
	sp := startProxy(t, string(yaml))
	shown = append(shown, "static proxy /config: "+fetch(t, sp.Admin+"/config"))

	// After the write-back, the upstreams still get the real secrets.
	for _, m := range mocks {
		if err := m.ClearRequests(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		mustSend(t, http.MethodPost, forward+"/v1/chat/completions", chat("gpt-4o"))
	}
	received("after the write-back")

	// History: a revision that rotates a secret, its record and its diff.
	rotated := "SeCrEt-rotated-" + run
	next := fleet.write(t, http.MethodPut, "/api/v1/upstreams/up-bearer",
		fmt.Sprintf(`{"url":%q,"auth":{"type":"bearer","token":%q}}`, mocks["a"].URL, rotated))
	secrets = append(secrets, planted{value: rotated})
	read("/api/v1/revisions")
	read(fmt.Sprintf("/api/v1/revisions/%d", next))
	if diff := read(fmt.Sprintf("/api/v1/revisions/%d/diff?base=%d", next, rev)); !strings.Contains(diff, "up-bearer") {
		t.Errorf("the diff of the rotation does not name the upstream: %s", diff)
	}

	// Logs, shutdown included.
	for _, proc := range []*harness.Process{p.proc, sp.proc, cp.proc} {
		proc.Stop(10 * time.Second)
		shown = append(shown, proc.Name+" log: "+proc.Output())
	}
	for _, s := range secrets {
		for _, text := range shown {
			if strings.Contains(text, s.value) {
				where, _, _ := strings.Cut(text, ": ")
				t.Errorf("%s shown in %s", s.value, where)
			}
		}
	}
}
