package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/console"
)

// The console is served beside the API without a token; / sends a browser to it; every
// other path still reaches the API.
func TestConsoleBesideTheAPI(t *testing.T) {
	ui, err := console.New()
	if err != nil {
		t.Fatal(err)
	}
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	})
	h := withConsole(api, ui)
	for _, tc := range []struct {
		method, path string
		want         int
		location     string
	}{
		{"GET", "/ui/", 200, ""},
		{"GET", "/ui/js/main.js", 200, ""},
		{"GET", "/ui", 307, "/ui/"},
		{"GET", "/", 302, "/ui/"},
		{"POST", "/", 401, ""},
		{"GET", "/api/v1/proxies", 401, ""},
		{"GET", "/uix", 401, ""},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.want || w.Header().Get("Location") != tc.location {
			t.Errorf("%s %s: %d (Location %q); want %d (%q)", tc.method, tc.path, w.Code, w.Header().Get("Location"), tc.want, tc.location)
		}
	}
}
