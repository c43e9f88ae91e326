package admin

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestPathRewrite(t *testing.T) {
	r := pathRewrite{from: "upstreams[1]", to: "upstream"}
	tests := []struct{ in, want string }{
		{"upstreams[1].url", "upstream.url"},
		{"upstreams[1]", "upstream"},
		{"upstreams[10].url", "upstreams[10].url"},
		{"upstream_groups[1].name", "upstream_groups[1].name"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := r.apply(tt.in); got != tt.want {
			t.Errorf("apply(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestRouteID(t *testing.T) {
	for _, p := range []string{"/v1/chat/completions", "/v1/{model:[a-z]+}/x", "/*", "/a?b"} {
		id := RouteID(p)
		for _, in := range []string{id, id + "=", id + "=="} {
			got, err := ParseRouteID(in)
			if err != nil || got != p {
				t.Errorf("ParseRouteID(%q) = %q, %v; want %q", in, got, err, p)
			}
		}
	}
	for _, bad := range []string{"", "!!", "a+b/"} {
		if _, err := ParseRouteID(bad); err == nil {
			t.Errorf("ParseRouteID(%q) succeeded", bad)
		}
	}
}

func TestHTTPStatusAndCodeNames(t *testing.T) {
	tests := []struct {
		code codes.Code
		http int
		name string
	}{
		{codes.InvalidArgument, 400, "invalid_argument"},
		{codes.Unauthenticated, 401, "unauthenticated"},
		{codes.NotFound, 404, "not_found"},
		{codes.AlreadyExists, 409, "already_exists"},
		{codes.FailedPrecondition, 409, "failed_precondition"},
		{codes.Aborted, 409, "aborted"},
		{codes.ResourceExhausted, 413, "resource_exhausted"},
		{codes.Internal, 500, "internal"},
		{codes.DeadlineExceeded, 504, "deadline_exceeded"},
		{codes.OK, 200, "ok"},
	}
	for _, tt := range tests {
		if got := HTTPStatus(tt.code); got != tt.http {
			t.Errorf("HTTPStatus(%v) = %d; want %d", tt.code, got, tt.http)
		}
		if got := snakeCode(tt.code); got != tt.name {
			t.Errorf("snakeCode(%v) = %q; want %q", tt.code, got, tt.name)
		}
	}
}

func TestLoopbackTarget(t *testing.T) {
	tests := map[string]string{
		"0.0.0.0:18000":   "127.0.0.1:18000",
		":18000":          "127.0.0.1:18000",
		"[::]:18000":      "[::1]:18000",
		"10.0.0.1:18000":  "10.0.0.1:18000",
		"127.0.0.1:18000": "127.0.0.1:18000",
	}
	for in, want := range tests {
		if got := LoopbackTarget(in); got != want {
			t.Errorf("LoopbackTarget(%q) = %q; want %q", in, got, want)
		}
	}
}
