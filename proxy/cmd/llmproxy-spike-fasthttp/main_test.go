//go:build fasthttp

package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The spike is measured beside the proxy, so it must stream as the proxy does: an event
// reaches the client before the upstream sends the next, and the request is rewritten
// (hop-by-hop headers gone, X-Request-Id and X-Forwarded-For set).
func TestSpikeStreamsAndRewrites(t *testing.T) {
	next := make(chan struct{})
	seen := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	}))
	defer up.Close()
	p := &proxy{upstream: strings.TrimPrefix(up.URL, "http://"),
		client: &fasthttp.HostClient{Addr: strings.TrimPrefix(up.URL, "http://"), StreamResponseBody: true}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: p.serve}
	go srv.Serve(ln)
	defer srv.Shutdown()

	req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("X-Request-Id", "req-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := <-seen
	if h.Get("Keep-Alive") != "" || h.Get("X-Request-Id") != "req-1" || h.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("upstream saw Keep-Alive %q, X-Request-Id %q, X-Forwarded-For %q; want none, req-1, 127.0.0.1",
			h.Get("Keep-Alive"), h.Get("X-Request-Id"), h.Get("X-Forwarded-For"))
	}
	if id := resp.Header.Get("X-Request-Id"); id != "req-1" {
		t.Errorf("answer's X-Request-Id = %q; want req-1", id)
	}
	line := make(chan string, 1)
	br := bufio.NewReader(resp.Body)
	go func() { l, _ := br.ReadString('\n'); line <- l }()
	select {
	case l := <-line:
		if l != "data: one\n" {
			t.Fatalf("first line = %q; want data: one", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first event held back until the upstream sends the next; want it at once")
	}
	close(next)
	if rest, _ := io.ReadAll(br); string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest = %q", rest)
	}
}
