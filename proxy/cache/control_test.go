package cache

import (
	"net/http"
	"testing"
	"time"
)

func TestParseDirectives(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want Directives
	}{
		{"none", http.Header{}, Directives{}},
		{"no-cache", http.Header{"Cache-Control": {"no-cache"}}, Directives{NoCache: true}},
		{"case and spaces", http.Header{"Cache-Control": {" No-Store , ONLY-IF-CACHED "}}, Directives{NoStore: true, OnlyIfCached: true}},
		{"max-age", http.Header{"Cache-Control": {"max-age=30"}}, Directives{MaxAge: 30 * time.Second, HasMaxAge: true}},
		{"quoted max-age", http.Header{"Cache-Control": {`max-age="5"`}}, Directives{MaxAge: 5 * time.Second, HasMaxAge: true}},
		{"max-age=0", http.Header{"Cache-Control": {"max-age=0"}}, Directives{HasMaxAge: true}},
		{"two headers, smallest max-age", http.Header{"Cache-Control": {"max-age=60", "max-age=10, no-cache"}}, Directives{NoCache: true, MaxAge: 10 * time.Second, HasMaxAge: true}},
		{"malformed max-age ignored", http.Header{"Cache-Control": {"max-age=soon"}}, Directives{}},
		{"negative max-age ignored", http.Header{"Cache-Control": {"max-age=-1"}}, Directives{}},
		{"unknown directive", http.Header{"Cache-Control": {"stale-if-error=5"}}, Directives{}},
		{"pragma", http.Header{"Pragma": {"no-cache"}}, Directives{NoCache: true}},
		{"cache-control wins over pragma", http.Header{"Pragma": {"no-cache"}, "Cache-Control": {"max-age=5"}}, Directives{MaxAge: 5 * time.Second, HasMaxAge: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseDirectives(tc.h); got != tc.want {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestStorable(t *testing.T) {
	tests := []struct {
		cc     string
		shared bool
		want   bool
	}{
		{"", false, true},
		{"no-store", false, false},
		{"max-age=0, No-Store", true, false},
		{"private", false, true},
		{"private", true, false},
		{`private="set-cookie"`, true, false},
		{"public, max-age=60", true, true},
	}
	for _, tc := range tests {
		h := http.Header{}
		if tc.cc != "" {
			h.Set("Cache-Control", tc.cc)
		}
		if got := Storable(h, tc.shared); got != tc.want {
			t.Errorf("Storable(%q, shared=%v) = %v; want %v", tc.cc, tc.shared, got, tc.want)
		}
	}
}

func TestHeaders(t *testing.T) {
	tests := []struct {
		r              Result
		result, status string
	}{
		{Miss, "MISS", "llmproxy; fwd=uri-miss"},
		{Bypass, "BYPASS", "llmproxy; fwd=bypass"},
		{Refresh, "MISS", "llmproxy; fwd=request"},
		{Stale, "MISS", "llmproxy; fwd=stale"},
		{Unavailable, "MISS", "llmproxy; fwd=miss; detail=backend-unavailable"},
		{Coalesced, "HIT", "llmproxy; hit; detail=coalesced"},
		{NotCached, "MISS", "llmproxy; detail=only-if-cached"},
	}
	for _, tc := range tests {
		h := http.Header{}
		SetHeaders(h, tc.r)
		if h.Get("X-PROXY-CACHE") != tc.result || h.Get("Cache-Status") != tc.status {
			t.Errorf("result %d: X-PROXY-CACHE %q, Cache-Status %q; want %q, %q", tc.r, h.Get("X-PROXY-CACHE"), h.Get("Cache-Status"), tc.result, tc.status)
		}
	}
	h := http.Header{}
	SetHitHeaders(h, 61500*time.Millisecond, 238*time.Second+500*time.Millisecond)
	if h.Get("X-PROXY-CACHE") != "HIT" || h.Get("Cache-Status") != "llmproxy; hit; ttl=238" || h.Get("Age") != "61" {
		t.Errorf("hit headers: %v", h)
	}
}
