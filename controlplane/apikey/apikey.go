// Package apikey makes consumers' API keys: New draws a key, Hash gives the form the
// configuration stores (validate.FormatKeyHash of its SHA-256), NewID names one. The
// control plane (CreateKey, RotateKey) and llmproxyctl (key hash) use it; a proxy only
// hashes the keys it is shown, with crypto/sha256 over the key's bytes.
//
// A key is Prefix and 43 base64url characters: 256 bits from crypto/rand. The prefix lets
// secret scanners and people recognise a leaked key; it carries no information.
//
// The functions are safe for concurrent use.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
)

// Prefix starts every key New makes.
const Prefix = "llmp-"

// New returns a fresh key: Prefix and the unpadded base64url encoding of 32 random bytes.
func New() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return Prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// Hash returns the configuration's spelling of key's hash: "sha256:" and the lowercase hex
// SHA-256 of its bytes.
func Hash(key string) string { return validate.FormatKeyHash(sha256.Sum256([]byte(key))) }

// NewID returns a key id that taken does not report as used: "k" and 8 random hex digits.
func NewID(taken func(id string) bool) string {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		id := "k" + hex.EncodeToString(b[:])
		if taken == nil || !taken(id) {
			return id
		}
	}
}
