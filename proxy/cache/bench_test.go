package cache

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// chatBody is a chat request of about n bytes: a system prompt, a few turns and a tool.
func chatBody(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-4o-mini","temperature":0.7,"max_tokens":256,"stream":true,"stream_options":{"include_usage":true},` +
		`"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],` +
		`"messages":[{"role":"system","content":"You are a helpful assistant."}`)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `,{"role":"user","content":"Question %d: what is the weather like in the city of Paris today?"},{"role":"assistant","content":"It is sunny, %d degrees."}`, i, 20+i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func benchRequest(size int) *Request {
	return &Request{Method: "POST", Path: "/v1/chat/completions", Body: chatBody(size),
		Header: http.Header{"Authorization": {"Bearer sk-test-0123456789"}, "Accept-Encoding": {"gzip"}}}
}

// BenchmarkKey measures the key of a chat request: canonical JSON hashing of the body plus
// the request line, group and caller. It must not allocate.
func BenchmarkKey(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		r := benchRequest(size)
		b.Run(fmt.Sprintf("body=%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(r.Body)))
			for b.Loop() {
				r.Key()
			}
		})
	}
}

// BenchmarkHitPath measures the whole key and lookup path of a hit on the memory backend
// (key, Lookup, the entry's freshness): what a hit costs before the response is written.
func BenchmarkHitPath(b *testing.B) {
	m, err := NewMemory(MemoryOptions{MaxBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	c := New(Policy{Group: "g", TTL: time.Hour, MaxObjectBytes: 1 << 20}, Options{Backend: m, Flights: NewFlights()})
	r := benchRequest(1 << 10)
	k := c.KeyOf(r)
	c.Store(k, &Entry{Status: 200, Body: make([]byte, 2000), StoredAt: time.Now(), TTL: time.Hour}, nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := benchRequest(1 << 10)
		for pb.Next() {
			if _, res := c.Lookup(ctx, c.KeyOf(r)); res != Hit {
				b.Fatal("miss")
			}
		}
	})
}
