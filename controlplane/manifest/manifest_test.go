package manifest

import (
	"testing"

	xdsv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/xds/v1"
)

func TestDigest(t *testing.T) {
	a := Digest(map[string]string{"u1": "v1", "u2": "v2"})
	if a.GetCount() != 2 || len(a.GetDigest()) != 64 {
		t.Fatalf("digest = %v; want count 2 and a hex SHA-256", a)
	}
	vs := map[string]string{"u1": "v1", "u2": "v2"}
	same := DigestSorted([]string{"u1", "u2"}, func(n string) string { return vs[n] })
	if !Same(a, same) {
		t.Errorf("Digest and DigestSorted disagree: %v vs %v", a, same)
	}
	for name, other := range map[string]map[string]string{
		"changed version": {"u1": "v1", "u2": "v3"},
		"renamed":         {"u1": "v1", "u3": "v2"},
		"one fewer":       {"u1": "v1"},
		"split boundary":  {"u1v": "1", "u2": "v2"},
	} {
		if Same(a, Digest(other)) {
			t.Errorf("%s: same digest as the original set", name)
		}
	}
	if Same(nil, a) || Same(a, nil) {
		t.Error("nil must match nothing")
	}
}

func TestStreamToken(t *testing.T) {
	for _, tt := range []struct {
		env              map[string]string
		wantTok, wantVar string
	}{
		{map[string]string{}, "", ""},
		{map[string]string{AdminTokenEnv: "adm"}, "adm", AdminTokenEnv},
		{map[string]string{AdminTokenEnv: "adm", TokenEnv: "x"}, "x", TokenEnv},
		{map[string]string{TokenEnv: "x"}, "x", TokenEnv},
	} {
		tok, from := StreamToken(func(k string) string { return tt.env[k] })
		if tok != tt.wantTok || from != tt.wantVar {
			t.Errorf("%v: got %q from %q; want %q from %q", tt.env, tok, from, tt.wantTok, tt.wantVar)
		}
	}
}

func TestTypeDigestOfOlderManifest(t *testing.T) {
	m := &xdsv1.Manifest{}
	for _, typ := range []string{ConsumerType, PricingType} {
		if d := TypeDigest(m, typ); !Same(d, Digest(nil)) || d.GetCount() != 0 {
			t.Errorf("%s: a manifest without the digest gives %v; want the empty set's", typ, d)
		}
	}
	if TypeDigest(m, ForwardType) != nil {
		t.Error("a missing forward digest must stay nil: every manifest has one")
	}
	d := Digest(map[string]string{"c": "v"})
	for _, typ := range ConfigTypes {
		SetTypeDigest(m, typ, d)
		if TypeDigest(m, typ) != d {
			t.Errorf("SetTypeDigest(%s) is not read back by TypeDigest", typ)
		}
	}
}
