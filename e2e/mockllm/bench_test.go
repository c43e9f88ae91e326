package mockllm

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// discardWriter is a reusable http.ResponseWriter that throws the answer away.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *discardWriter) Flush()                      {}

type resettableBody struct{ *bytes.Reader }

func (resettableBody) Close() error { return nil }

const benchBody = `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},` +
	`{"role":"user","content":"Say hello in five words."}],"temperature":0.2,"max_tokens":32}`

func benchServe(b *testing.B, opts Options, body string, hdr http.Header) {
	s, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	rd := bytes.NewReader([]byte(body))
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	req.Body = resettableBody{rd}
	req.ContentLength = int64(len(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rd.Reset([]byte(body))
		clear(w.h)
		s.ServeHTTP(w, req)
	}
	if w.status != http.StatusOK {
		b.Fatalf("status %d", w.status)
	}
}

// BenchmarkChatCompletion measures the handler alone on the non-streaming path.
func BenchmarkChatCompletion(b *testing.B) {
	b.Run("recording", func(b *testing.B) { benchServe(b, Options{}, benchBody, nil) })
	b.Run("no-recording", func(b *testing.B) { benchServe(b, Options{MaxRecords: -1}, benchBody, nil) })
	b.Run("body-4KiB", func(b *testing.B) {
		benchServe(b, Options{MaxRecords: -1}, benchBody, http.Header{HeaderBodySize: {"4096"}})
	})
	b.Run("stream", func(b *testing.B) {
		benchServe(b, Options{MaxRecords: -1}, strings.Replace(benchBody, `{`, `{"stream":true,`, 1), nil)
	})
}

// BenchmarkChatCompletionHTTP measures a full loopback round trip.
func BenchmarkChatCompletionHTTP(b *testing.B) {
	s, err := New(Options{MaxRecords: -1})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	c := ts.Client()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(benchBody))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
