package cache

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Entry is one stored answer. An entry is immutable once stored: any number of requests
// may replay it at once.
type Entry struct {
	// Status is the answer's status code (2xx).
	Status int
	// Header holds the stored response headers (StoredHeaders), canonical names; callers
	// copy the value slices into a response without changing them.
	Header http.Header
	// Body is the answer's body as the upstream sent it. For an event stream it is the
	// exact SSE frames in order, through the last one, so a replay is the same stream.
	Body []byte
	// Stream reports an event stream (text/event-stream).
	Stream bool
	// StoredAt is when the answer was complete; TTL how long it lives from then.
	StoredAt time.Time
	TTL      time.Duration
	// Epoch is the group's cache epoch the entry was stored under.
	Epoch uint64
	// PromptTokens and CompletionTokens are the usage read from the answer (0 when it had
	// none), counted again on every hit.
	PromptTokens, CompletionTokens int64
}

// entryOverhead approximates the memory of an Entry besides its body and headers.
const entryOverhead = 256

// Size is the entry's weight in a memory backend: body, headers and a fixed overhead.
func (e *Entry) Size() int {
	n := entryOverhead + len(e.Body)
	for k, vs := range e.Header {
		n += len(k) + 16
		for _, v := range vs {
			n += len(v) + 16
		}
	}
	return n
}

// Age is how old the entry is at now (never negative).
func (e *Entry) Age(now time.Time) time.Duration { return max(now.Sub(e.StoredAt), 0) }

// Fresh reports whether the entry is still alive at now.
func (e *Entry) Fresh(now time.Time) bool { return e.Age(now) < e.TTL }

// StoredHeaders are the response headers an entry keeps: the body's type and encoding and
// the provider's own ids. An upstream's X-Request-Id is kept as X-Upstream-Request-Id (the
// proxy's X-Request-Id belongs to each request). Rate-limit and timing headers are not
// kept: they describe the original exchange, not the answer.
var StoredHeaders = [...]string{
	"Content-Type", "Content-Encoding", "Content-Language",
	"X-Upstream-Request-Id", "Request-Id",
	"Openai-Organization", "Openai-Project", "Openai-Version", "Openai-Model",
	"Anthropic-Organization-Id",
}

// SelectHeaders returns the StoredHeaders of an upstream answer's header src (copies).
func SelectHeaders(src http.Header) http.Header {
	out := make(http.Header, 4)
	for _, k := range StoredHeaders {
		from := k
		if k == "X-Upstream-Request-Id" {
			from = "X-Request-Id"
		}
		if vs := src[from]; len(vs) > 0 {
			out[k] = append([]string(nil), vs...)
		}
	}
	return out
}

// Encoding of an entry for a shared backend (Redis):
//
//	magic "LC", version 1, flags (1 stream, 2 body compressed with DEFLATE)
//	uvarint status, varint stored-at (Unix ms), uvarint ttl (ms), uvarint epoch,
//	uvarint prompt tokens, uvarint completion tokens,
//	uvarint number of header values, each: uvarint len, name, uvarint len, value
//	body (the rest)
const (
	encVersion     = 1
	flagStream     = 1
	flagCompressed = 2
)

// compressAbove is the body size from which an encoded body is compressed.
const compressAbove = 1 << 10

// ErrCorrupt is returned by Decode for bytes that are not an encoded entry.
var ErrCorrupt = errors.New("corrupt cache entry")

var flaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// Encode returns e in the shared backends' format; a body above 1 KiB is compressed when
// that makes it smaller.
func Encode(e *Entry) []byte {
	b := make([]byte, 0, 64+len(e.Body)/2)
	flags := byte(0)
	if e.Stream {
		flags |= flagStream
	}
	b = append(b, 'L', 'C', encVersion, flags)
	b = binary.AppendUvarint(b, uint64(e.Status))
	b = binary.AppendVarint(b, e.StoredAt.UnixMilli())
	b = binary.AppendUvarint(b, uint64(e.TTL/time.Millisecond))
	b = binary.AppendUvarint(b, e.Epoch)
	b = binary.AppendUvarint(b, uint64(max(e.PromptTokens, 0)))
	b = binary.AppendUvarint(b, uint64(max(e.CompletionTokens, 0)))
	n := 0
	for _, vs := range e.Header {
		n += len(vs)
	}
	b = binary.AppendUvarint(b, uint64(n))
	for k, vs := range e.Header {
		for _, v := range vs {
			b = appendString(b, k)
			b = appendString(b, v)
		}
	}
	if len(e.Body) > compressAbove {
		var zb bytes.Buffer
		zb.Grow(len(e.Body) / 2)
		zw := flaters.Get().(*flate.Writer)
		zw.Reset(&zb)
		_, werr := zw.Write(e.Body)
		cerr := zw.Close()
		flaters.Put(zw)
		if werr == nil && cerr == nil && zb.Len() < len(e.Body) {
			b[3] |= flagCompressed
			return append(b, zb.Bytes()...)
		}
	}
	return append(b, e.Body...)
}

// Decode parses what Encode wrote. maxBody bounds a decompressed body (a corrupt or hostile
// value cannot make it inflate without limit).
func Decode(b []byte, maxBody int) (*Entry, error) {
	if len(b) < 4 || b[0] != 'L' || b[1] != 'C' || b[2] != encVersion {
		return nil, ErrCorrupt
	}
	flags := b[3]
	d := decoder{b: b[4:]}
	e := &Entry{Stream: flags&flagStream != 0}
	e.Status = int(d.uvarint())
	e.StoredAt = time.UnixMilli(d.varint())
	e.TTL = time.Duration(d.uvarint()) * time.Millisecond
	e.Epoch = d.uvarint()
	e.PromptTokens = int64(d.uvarint())
	e.CompletionTokens = int64(d.uvarint())
	n := d.uvarint()
	if d.err != nil || n > 1024 {
		return nil, ErrCorrupt
	}
	e.Header = make(http.Header, n)
	for range n {
		k, v := d.str(), d.str()
		if d.err != nil {
			return nil, ErrCorrupt
		}
		e.Header[k] = append(e.Header[k], v)
	}
	if e.Status < 100 || e.Status > 999 {
		return nil, ErrCorrupt
	}
	if flags&flagCompressed == 0 {
		e.Body = append([]byte(nil), d.b...)
		return e, nil
	}
	zr := flate.NewReader(bytes.NewReader(d.b))
	defer zr.Close()
	body, err := io.ReadAll(io.LimitReader(zr, int64(maxBody)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("%w: body above %d bytes", ErrCorrupt, maxBody)
	}
	e.Body = body
	return e, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = ErrCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = ErrCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = ErrCorrupt
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
