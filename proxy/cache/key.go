package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"net/http"
	"slices"
	"sync"
)

// Key identifies one cacheable request: the SHA-256 of everything that can change its
// answer (see Request). The zero Key is never produced by Request.Key.
type Key [32]byte

// String is the key in hex, as written into Redis key names.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// AppendHex appends the key in hex to b.
func (k Key) AppendHex(b []byte) []byte { return hex.AppendEncode(b, k[:]) }

// Request is what a Key is computed from. Strings are used as given: Path is the escaped
// path as the client sent it and RawQuery its query, so two spellings of one URL are two
// keys (never one key for two URLs).
type Request struct {
	Method   string
	Path     string
	RawQuery string
	// Group is the target group's name and Epoch its cache epoch: a purge bumps the epoch,
	// so older entries are no longer addressed by any key.
	Group string
	Epoch uint64
	// Shared leaves the caller out of the key (the group's cache.shared). Otherwise the
	// credential headers (CredentialHeaders) and Consumer are hashed in: a different caller
	// computes a different key, so it can neither read nor probe for another's entries.
	Shared   bool
	Consumer string
	// Edit names a change the proxy makes to the answer on its way to the client (the
	// answer shared and stored is the changed one), "" none: requests whose answers are
	// changed differently have different keys, whatever the caller.
	Edit string
	// Header supplies the credential headers and the VaryHeaders; nil means none.
	Header http.Header
	// Body is the request body. A JSON body is hashed in canonical form: the order of object
	// keys and insignificant whitespace do not matter, every member and array element does
	// (numbers and strings compare by their exact spelling). Anything else is hashed as is.
	Body []byte
}

// CredentialHeaders are the request headers that carry a client credential. Unless the
// group is shared, their values are part of the key (inside the hash, never stored).
var CredentialHeaders = [...]string{"Authorization", "X-Api-Key", "Api-Key"}

// VaryHeaders are request headers besides the body that change an answer: the encodings
// the client accepts (a gzip answer must not reach a client that did not ask for it) and
// the provider API versions and betas.
var VaryHeaders = [...]string{"Accept-Encoding", "Anthropic-Version", "Anthropic-Beta", "Openai-Beta"}

// keyVersion changes whenever the key derivation changes, so old entries are not misread.
const keyVersion = 3

// scratch is the pooled working memory of one key computation.
type scratch struct {
	buf   []byte   // representation stack (see canonical)
	spans []member // object members being sorted
}

var scratchPool = sync.Pool{New: func() any { return &scratch{buf: make([]byte, 0, 4096), spans: make([]member, 0, 32)} }}

// maxPooledScratch keeps very large bodies' buffers out of the pool.
const maxPooledScratch = 1 << 20

// Key computes the request's key. It does not allocate once its pooled buffers have grown
// to the size of the requests seen; it is safe for concurrent use (r is only read).
func (r *Request) Key() Key {
	s := scratchPool.Get().(*scratch)
	b := append(s.buf[:0], 'K', keyVersion)
	b = appendString(b, r.Method)
	b = appendString(b, r.Path)
	b = appendString(b, r.RawQuery)
	b = appendString(b, r.Group)
	b = binary.AppendUvarint(b, r.Epoch)
	b = appendString(b, r.Edit)
	if r.Shared {
		b = append(b, 'S')
	} else {
		b = append(b, 'C')
		b = appendString(b, r.Consumer)
		for _, name := range CredentialHeaders {
			b = appendValues(b, r.Header[name])
		}
	}
	for _, name := range VaryHeaders {
		b = appendValues(b, r.Header[name])
	}
	s.buf = b
	s.canonical(r.Body)
	k := Key(sha256.Sum256(s.buf))
	if cap(s.buf) <= maxPooledScratch {
		s.spans = s.spans[:0]
		scratchPool.Put(s)
	}
	return k
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendValues(b []byte, vs []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(vs)))
	for _, v := range vs {
		b = appendString(b, v)
	}
	return b
}

// maxDepth bounds the nesting the canonical form follows; deeper bodies are hashed raw.
const maxDepth = 128

// member is one object member while its object is being hashed: its key's bytes in the
// body and its value's representation in the scratch buffer.
type member struct {
	ks, ke int // body[ks:ke] is the key, without its quotes
	rs, re int // buf[rs:re] is the value's representation
}

// canonical appends the body's representation to s.buf: 'J' and the canonical form of a
// JSON document, or 'R' and the SHA-256 of the raw bytes when body is not JSON.
//
// Representations are self-delimiting, so different documents never concatenate to the
// same bytes: a string or number is a tag, its length and its bytes; true, false and null
// a tag; an array 'a', the length of its content (4 bytes) and its elements'
// representations in order; an object 'o', the length of its content (4 bytes) and its
// members sorted by key (stable, so duplicate keys keep their order), each member its key
// (length and bytes) and its value's representation. Everything ends up in the one hash of
// the key: a container costs a copy, not a hash of its own (keyVersion 2 hashed each one).
func (s *scratch) canonical(body []byte) {
	start := len(s.buf)
	s.buf = append(s.buf, 'J')
	i := s.value(body, skipSpace(body, 0), 0)
	if i < 0 || skipSpace(body, i) != len(body) {
		s.buf = append(s.buf[:start], 'R')
		sum := sha256.Sum256(body)
		s.buf = append(s.buf, sum[:]...)
	}
}

// value appends the representation of the JSON value at body[i:] and returns the index
// just past it, or -1 when body is not valid JSON there (or nests deeper than maxDepth).
func (s *scratch) value(body []byte, i, depth int) int {
	if i >= len(body) {
		return -1
	}
	switch c := body[i]; {
	case c == '"':
		end := stringEnd(body, i)
		if end < 0 {
			return -1
		}
		s.buf = append(s.buf, 's')
		s.buf = binary.AppendUvarint(s.buf, uint64(end-i-2))
		s.buf = append(s.buf, body[i+1:end-1]...)
		return end
	case c == '{':
		if depth >= maxDepth {
			return -1
		}
		return s.object(body, i, depth+1)
	case c == '[':
		if depth >= maxDepth {
			return -1
		}
		return s.array(body, i, depth+1)
	case c == 't':
		return s.literal(body, i, "true", 't')
	case c == 'f':
		return s.literal(body, i, "false", 'f')
	case c == 'n':
		return s.literal(body, i, "null", 'z')
	case c == '-' || (c >= '0' && c <= '9'):
		end := i + 1
		for end < len(body) && isNumberByte(body[end]) {
			end++
		}
		s.buf = append(s.buf, 'n')
		s.buf = binary.AppendUvarint(s.buf, uint64(end-i))
		s.buf = append(s.buf, body[i:end]...)
		return end
	}
	return -1
}

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

func (s *scratch) literal(body []byte, i int, word string, tag byte) int {
	if len(body)-i < len(word) || string(body[i:i+len(word)]) != word {
		return -1
	}
	s.buf = append(s.buf, tag)
	return i + len(word)
}

// containerHead is a container's tag and content length (containerLen).
const containerHead = 5

// maxContainer is the largest container content a representation can hold (its length is
// 4 bytes); a bigger body is hashed raw.
const maxContainer = math.MaxUint32

// closeContainer writes the length of the content that follows the head at buf[start:].
func (s *scratch) closeContainer(start int) bool {
	n := len(s.buf) - start - containerHead
	if n > maxContainer {
		return false
	}
	binary.BigEndian.PutUint32(s.buf[start+1:start+containerHead], uint32(n))
	return true
}

func (s *scratch) array(body []byte, i, depth int) int {
	start := len(s.buf)
	s.buf = append(s.buf, 'a', 0, 0, 0, 0)
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		i++
	} else {
		for {
			if i = s.value(body, i, depth); i < 0 {
				return -1
			}
			i = skipSpace(body, i)
			if i >= len(body) {
				return -1
			}
			if body[i] == ']' {
				i++
				break
			}
			if body[i] != ',' {
				return -1
			}
			i = skipSpace(body, i+1)
		}
	}
	if !s.closeContainer(start) {
		return -1
	}
	return i
}

func (s *scratch) object(body []byte, i, depth int) int {
	start := len(s.buf)
	s.buf = append(s.buf, 'o', 0, 0, 0, 0)
	first := len(s.spans)
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		i++
	} else {
		for {
			if i >= len(body) || body[i] != '"' {
				return -1
			}
			kEnd := stringEnd(body, i)
			if kEnd < 0 {
				return -1
			}
			m := member{ks: i + 1, ke: kEnd - 1}
			i = skipSpace(body, kEnd)
			if i >= len(body) || body[i] != ':' {
				return -1
			}
			m.rs = len(s.buf)
			if i = s.value(body, skipSpace(body, i+1), depth); i < 0 {
				return -1
			}
			m.re = len(s.buf)
			s.spans = append(s.spans, m)
			i = skipSpace(body, i)
			if i >= len(body) {
				return -1
			}
			if body[i] == '}' {
				i++
				break
			}
			if body[i] != ',' {
				return -1
			}
			i = skipSpace(body, i+1)
		}
	}
	members := s.spans[first:]
	sorted := slices.IsSortedFunc(members, func(a, b member) int {
		return bytes.Compare(body[a.ks:a.ke], body[b.ks:b.ke])
	})
	if !sorted {
		slices.SortStableFunc(members, func(a, b member) int {
			return bytes.Compare(body[a.ks:a.ke], body[b.ks:b.ke])
		})
	}
	// The members are written after the values, in key order, then moved down over the
	// values (copy handles the overlap).
	out := len(s.buf)
	for _, m := range members {
		s.buf = binary.AppendUvarint(s.buf, uint64(m.ke-m.ks))
		s.buf = append(s.buf, body[m.ks:m.ke]...)
		s.buf = append(s.buf, s.buf[m.rs:m.re]...)
	}
	content := start + containerHead
	n := copy(s.buf[content:], s.buf[out:])
	s.buf = s.buf[:content+n]
	s.spans = s.spans[:first]
	if !s.closeContainer(start) {
		return -1
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i] (a quote), or -1
// when it does not end within b.
func stringEnd(b []byte, i int) int {
	for i++; ; {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		// The quote ends the string unless an odd number of backslashes precedes it.
		n := 0
		for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return i + 1
		}
		i++
	}
}
