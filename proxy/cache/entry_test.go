package cache

import (
	"bytes"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleEntry(body string) *Entry {
	return &Entry{
		Status:   200,
		Header:   http.Header{"Content-Type": {"text/event-stream"}, "X-Upstream-Request-Id": {"req_1"}},
		Body:     []byte(body),
		Stream:   true,
		StoredAt: time.UnixMilli(1_700_000_000_123),
		TTL:      5 * time.Minute,
		Epoch:    3, PromptTokens: 12, CompletionTokens: 7,
	}
}

func TestEncodeDecode(t *testing.T) {
	for _, body := range []string{"", "data: {\"x\":1}\n\ndata: [DONE]\n\n", strings.Repeat("data: {\"content\":\"word\"}\n\n", 500)} {
		e := sampleEntry(body)
		b := Encode(e)
		got, err := Decode(b, 1<<20)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.Body == nil {
			got.Body = []byte{}
		}
		if e.Body == nil {
			e.Body = []byte{}
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip of a %d-byte body:\n got %+v\nwant %+v", len(body), got, e)
		}
		if len(body) > 4096 && len(b) >= len(body)/2 {
			t.Errorf("a repetitive %d-byte body encodes to %d bytes; want it compressed", len(body), len(b))
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Encode(sampleEntry(strings.Repeat("abc", 1000)))
	cases := map[string][]byte{
		"empty":           nil,
		"wrong magic":     append([]byte("XX"), good[2:]...),
		"future version":  append([]byte{'L', 'C', 9}, good[3:]...),
		"truncated":       good[:8],
		"corrupt deflate": append(append([]byte(nil), good[:len(good)-40]...), bytes.Repeat([]byte{0xff}, 40)...),
	}
	for name, b := range cases {
		if _, err := Decode(b, 1<<20); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v; want ErrCorrupt", name, err)
		}
	}
	if _, err := Decode(good, 100); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a body above the limit: err %v; want ErrCorrupt", err)
	}
}

func TestSelectHeaders(t *testing.T) {
	src := http.Header{
		"Content-Type":                   {"application/json"},
		"X-Request-Id":                   {"up-1"},
		"Request-Id":                     {"req_2"},
		"Openai-Organization":            {"org"},
		"X-Ratelimit-Remaining-Requests": {"10"},
		"Set-Cookie":                     {"a=b"},
		"Date":                           {"now"},
	}
	got := SelectHeaders(src)
	want := http.Header{"Content-Type": {"application/json"}, "X-Upstream-Request-Id": {"up-1"}, "Request-Id": {"req_2"}, "Openai-Organization": {"org"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	src["Content-Type"][0] = "changed"
	if got.Get("Content-Type") != "application/json" {
		t.Error("SelectHeaders must copy the values")
	}
}
