package cache

import (
	"net/http"
	"strings"
	"testing"
)

func keyOf(body string, mod ...func(*Request)) Key {
	r := &Request{Method: "POST", Path: "/v1/chat/completions", Group: "g", Body: []byte(body),
		Header: http.Header{"Authorization": {"Bearer sk-a"}}}
	for _, m := range mod {
		m(r)
	}
	return r.Key()
}

const base = `{"model":"gpt-4o","temperature":0.2,"messages":[{"role":"user","content":"hi"}],"stream":false}`

func TestKeyCanonicalBody(t *testing.T) {
	same := []struct{ name, body string }{
		{"reordered keys", `{"stream":false,"messages":[{"content":"hi","role":"user"}],"temperature":0.2,"model":"gpt-4o"}`},
		{"whitespace", " {\n  \"model\" : \"gpt-4o\",\t\"temperature\": 0.2,\r\n \"messages\": [ { \"role\": \"user\", \"content\": \"hi\" } ], \"stream\": false }\n"},
	}
	want := keyOf(base)
	for _, tc := range same {
		if got := keyOf(tc.body); got != want {
			t.Errorf("%s: key differs from the original; want the same", tc.name)
		}
	}
	differ := []struct{ name, body string }{
		{"model", strings.Replace(base, "gpt-4o", "gpt-4o-mini", 1)},
		{"temperature", strings.Replace(base, "0.2", "0.3", 1)},
		{"number spelling", strings.Replace(base, "0.2", "0.20", 1)},
		{"stream", strings.Replace(base, `"stream":false`, `"stream":true`, 1)},
		{"content", strings.Replace(base, `"hi"`, `"hi!"`, 1)},
		{"message order", `{"model":"gpt-4o","temperature":0.2,"messages":[{"role":"user","content":"hi"},{"role":"user","content":"yo"}],"stream":false}`},
		{"message order swapped", `{"model":"gpt-4o","temperature":0.2,"messages":[{"role":"user","content":"yo"},{"role":"user","content":"hi"}],"stream":false}`},
		{"extra field", strings.Replace(base, `"stream":false`, `"stream":false,"tools":[]`, 1)},
		{"null vs absent", strings.Replace(base, `"stream":false`, `"stream":false,"user":null`, 1)},
		{"string vs number", strings.Replace(base, "0.2", `"0.2"`, 1)},
		{"key moved into nested object", `{"model":"gpt-4o","temperature":0.2,"messages":[{"role":"user","content":"hi","stream":false}]}`},
		{"not JSON", base[:len(base)-1]},
		{"empty", ""},
	}
	seen := map[Key]string{want: "original"}
	for _, tc := range differ {
		k := keyOf(tc.body)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s: same key as %s; want a different one", tc.name, prev)
		}
		seen[k] = tc.name
	}
	// Invalid JSON is keyed by its exact bytes.
	if keyOf("not json") != keyOf("not json") || keyOf("not json") == keyOf("not  json") {
		t.Error("non-JSON bodies must be keyed by their exact bytes")
	}
}

func TestKeyRequestParts(t *testing.T) {
	want := keyOf(base)
	differ := map[string]func(*Request){
		"method":     func(r *Request) { r.Method = "PUT" },
		"path":       func(r *Request) { r.Path = "/v1/completions" },
		"query":      func(r *Request) { r.RawQuery = "api-version=2024" },
		"group":      func(r *Request) { r.Group = "h" },
		"epoch":      func(r *Request) { r.Epoch = 1 },
		"credential": func(r *Request) { r.Header = http.Header{"Authorization": {"Bearer sk-b"}} },
		"x-api-key":  func(r *Request) { r.Header = http.Header{"X-Api-Key": {"sk-a"}} },
		"anonymous":  func(r *Request) { r.Header = nil },
		"consumer":   func(r *Request) { r.Consumer = "acme" },
		"edit":       func(r *Request) { r.Edit = "usage-stripped" },
		"encoding": func(r *Request) {
			r.Header = http.Header{"Authorization": {"Bearer sk-a"}, "Accept-Encoding": {"gzip"}}
		},
		"anthropic": func(r *Request) {
			r.Header = http.Header{"Authorization": {"Bearer sk-a"}, "Anthropic-Version": {"2023-06-01"}}
		},
		"shared": func(r *Request) { r.Shared = true },
	}
	for name, mod := range differ {
		if keyOf(base, mod) == want {
			t.Errorf("changing the %s gives the same key; want a different one", name)
		}
	}
	// Shared: the caller does not matter, other headers do not either.
	sharedA := keyOf(base, func(r *Request) { r.Shared = true })
	sharedB := keyOf(base, func(r *Request) {
		r.Shared = true
		r.Header = http.Header{"Authorization": {"Bearer sk-b"}, "X-Other": {"1"}}
	})
	if sharedA != sharedB {
		t.Error("shared: two credentials give two keys; want one")
	}
	if keyOf(base, func(r *Request) { r.Header["X-Other"] = []string{"1"} }) != want {
		t.Error("an unrelated header changed the key")
	}
}

func TestKeyNesting(t *testing.T) {
	deep := strings.Repeat("[", maxDepth+5) + strings.Repeat("]", maxDepth+5)
	a := keyOf(deep)
	if a != keyOf(deep) {
		t.Error("a deep body must key deterministically")
	}
	// Containers are delimited by their lengths: moving a value across a container's end
	// changes the key.
	pairs := [][2]string{
		{`[["a"],"b"]`, `[["a","b"]]`},
		{`{"a":{"b":1},"c":2}`, `{"a":{"b":1,"c":2}}`},
		{`[[],[]]`, `[[[]]]`},
		{`{"a":[]}`, `{"a":{}}`},
		{`[{}]`, `[{},{}]`},
	}
	for _, p := range pairs {
		if keyOf(p[0]) == keyOf(p[1]) {
			t.Errorf("%s and %s share a key", p[0], p[1])
		}
	}
	ok := strings.Repeat("[", 10) + "1" + strings.Repeat("]", 10)
	if keyOf(ok) == keyOf(strings.Repeat("[", 10)+"2"+strings.Repeat("]", 10)) {
		t.Error("nested arrays with different leaves share a key")
	}
}

func TestKeyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so pooled buffers are reallocated")
	}
	r := &Request{Method: "POST", Path: "/v1/chat/completions", Group: "g", Body: []byte(base),
		Header: http.Header{"Authorization": {"Bearer sk-a"}}}
	r.Key()
	if n := testing.AllocsPerRun(100, func() { r.Key() }); n != 0 {
		t.Errorf("Key allocates %v times per call; want 0", n)
	}
}

func FuzzKey(f *testing.F) {
	f.Add(base)
	f.Add(`{"a":[1,2,{"b":null}],"c":"\"x\\"}`)
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, body string) {
		k1 := keyOf(body)
		if k1 != keyOf(body) {
			t.Fatal("key is not deterministic")
		}
	})
}
