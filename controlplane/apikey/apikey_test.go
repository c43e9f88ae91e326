package apikey

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
)

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k := New()
		raw, ok := strings.CutPrefix(k, Prefix)
		if !ok {
			t.Fatalf("key %q lacks the prefix %q", k, Prefix)
		}
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(b) != 32 {
			t.Fatalf("key %q does not carry 32 bytes of base64url: %v", k, err)
		}
		if seen[k] {
			t.Fatalf("key %q drawn twice", k)
		}
		seen[k] = true
	}
}

func TestHash(t *testing.T) {
	h := Hash("llmp-abc")
	sum, ok := validate.ParseKeyHash(h)
	if !ok || sum != sha256.Sum256([]byte("llmp-abc")) {
		t.Fatalf("Hash = %q, which validate reads as %x, %v", h, sum, ok)
	}
	// The value a shell pipes in: sha256 of the bytes, nothing trimmed here.
	if Hash("llmp-abc\n") == h {
		t.Error("Hash ignores a trailing newline; the caller must trim what it reads")
	}
}

func TestNewID(t *testing.T) {
	calls := 0
	id := NewID(func(string) bool { calls++; return calls < 3 })
	if calls != 3 || len(id) != 9 || id[0] != 'k' {
		t.Errorf("NewID = %q after %d calls; want a fresh k + 8 hex digits after 3", id, calls)
	}
}
