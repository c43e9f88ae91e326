package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
)

// restWrites are the REST operations whose body is decoded from JSON.
var restWrites = []struct{ method, path, seed string }{
	{"POST", "/api/v1/upstreams", `{"name":"n","url":"https://n.example.com","auth":{"type":"bearer","token":"t"}}`},
	{"PUT", "/api/v1/upstreams/a", `{"name":"a","url":"https://a.example.com","auth":{"type":"bearer","token":"<redacted>"}}`},
	{"POST", "/api/v1/upstream-groups", `{"name":"g2","upstreams":[{"name":"b","weight":2}],"balance":{"strategy":"least_busy"}}`},
	{"PUT", "/api/v1/upstream-groups/g1", `{"name":"g1","upstreams":[{"name":"a"}],"http_client":{"retry":{"retry_on":["reset","502"]}}}`},
	{"PATCH", "/api/v1/upstream-groups/g1", `{"upstreams":[{"name":"a","weight":3},{"name":"b"}]}`},
	{"POST", "/api/v1/forwards", `{"name":"f2","port":3001,"default_group":"g1","timeout":{"connect":5,"body":"30s"}}`},
	{"PUT", "/api/v1/forwards/f", `{"name":"f","port":3000,"default_group":"g1","ratelimit":{"per_second":5}}`},
	{"POST", "/api/v1/forwards/f/routes", `{"path":"/v1/embeddings","target_group":"g1","methods":["POST"]}`},
	{"PUT", "/api/v1/config?dry_run=true", `{"upstreams":[{"name":"a","url":"https://a.example.com"}],"upstream_groups":[{"name":"g1","upstreams":[{"name":"a"}]}]}`},
	{"PUT", "/api/v1/config?force=true", `{"http_server":{"forwards":[{"name":"f","default_group":"g1"}]},"upstreams":[{"name":"a","url":"https://a.example.com","auth":{"type":"bearer","token":"<redacted>"}}],"upstream_groups":[{"name":"g1","upstreams":[{"name":"a"}]}]}`},
}

// FuzzRESTWrites sends arbitrary bodies through the REST façade (the gateway's JSON
// decoding and the body and query checks in front of it) to every write that takes a body,
// committing what is accepted, where FuzzApplyConfigJSON dry-runs PUT /api/v1/config bodies
// at the service. It checks what an operator relies on whatever they send: no answer is a server error; every error
// is the API's JSON error shape; a stored secret never comes back in clear; and whatever
// was accepted leaves a configuration that passes validation.
func FuzzRESTWrites(f *testing.F) {
	for i, w := range restWrites {
		f.Add(uint8(i), []byte(w.seed))
		f.Add(uint8(i), []byte(`{}`))
	}
	for _, b := range []string{``, `null`, `[]`, `{"name":1}`, `{"upstreams":[{"name":"a"},{"name":"a"}]}`, `{"name":"x","url":"http://u:p@h/?api_key=k"}`, "{\"name\":\"\\u0000\"}"} {
		f.Add(uint8(0), []byte(b))
		f.Add(uint8(4), []byte(b))
	}
	e := newEnv(f, "", nil)
	e.seed(f, base()) // upstream "a" holds the secret sk-a-secret
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		w := restWrites[int(op)%len(restWrites)]
		req, err := http.NewRequestWithContext(context.Background(), w.method, e.rest+w.path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", w.method, w.path, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s %q: %d %s; want no server error", w.method, w.path, body, resp.StatusCode, got)
		}
		if bytes.Contains(got, []byte("sk-a-secret")) {
			t.Fatalf("%s %s %q: the answer shows a stored secret: %s", w.method, w.path, body, got)
		}
		if resp.StatusCode >= 400 {
			var eb struct {
				Error *struct{ Message, Type, Code string } `json:"error"`
			}
			if json.Unmarshal(got, &eb) != nil || eb.Error == nil || eb.Error.Message == "" || eb.Error.Type == "" || eb.Error.Code == "" {
				t.Fatalf("%s %s %q: %d with body %s; want {\"error\":{\"message\",\"type\",\"code\"}}", w.method, w.path, body, resp.StatusCode, got)
			}
			return
		}
		_, cfg, err := e.store.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Validate(cfg); err != nil {
			t.Fatalf("%s %s %q was accepted (%d) and left a configuration that fails validation: %v", w.method, w.path, body, resp.StatusCode, err)
		}
	})
}
