package forward

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSSEFirstChunkBeforeSecond(t *testing.T) {
	sendSecond := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-sendSecond:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	}))
	defer up.Close()
	p := newTestProxy(t, simpleConfig("", "a"), up.URL)

	resp := post(t, p.URL+"/v1/chat/completions", `{"stream":true}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first line = %q, %v; want data: one (before the upstream sent the second)", line, err)
	}
	close(sendSecond)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest = %q", rest)
	}
}

func TestClientCancelReachesUpstream(t *testing.T) {
	arrived := make(chan struct{})
	canceled := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // the server notices a closed connection only once the body is read
		close(arrived)
		<-r.Context().Done()
		close(canceled)
	}))
	defer up.Close()
	p := newTestProxy(t, simpleConfig("", "a"), up.URL)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", p.URL+"/v1/chat/completions", strings.NewReader("{}"))
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	<-arrived
	cancel()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not canceled")
	}
	if err := <-errc; err == nil {
		t.Error("client request succeeded; want canceled")
	}
}

func TestMidStreamDeathSSEError(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, "data: {\"x\":1}\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the upstream dies mid-stream
	}))
	defer up.Close()
	// Retries on: a started stream must still not be retried.
	p := newTestProxy(t, simpleConfig("    http_client:\n      retry: {attempts: 3, initial: 100, retry_on: [\"502\", connect_error, timeout]}\n", "a"), up.URL)

	resp := post(t, p.URL+"/v1/chat/completions", `{"stream":true}`)
	body := readAll(t, resp)
	want := "data: {\"x\":1}\n\ndata: {\"error\":{\"message\":\"upstream stream interrupted\",\"type\":\"upstream_error\",\"code\":\"stream_interrupted\"}}\n\n"
	if resp.StatusCode != 200 || body != want {
		t.Errorf("got %d %q; want 200 %q", resp.StatusCode, body, want)
	}
	if n := upstreamRequests(t, p, "a"); n != 1 {
		t.Errorf("upstream attempts = %v; want 1 (a started stream is not retried)", n)
	}
}

func TestMidBodyDeathAborts(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		io.WriteString(w, `{"partial":`)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer up.Close()
	p := newTestProxy(t, simpleConfig("", "a"), up.URL)
	resp, err := http.Post(p.URL+"/v1/chat/completions", "application/json", strings.NewReader("{}"))
	if err == nil {
		// The status line may have gone out; the body must then end in an error.
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("reading a body whose upstream died succeeded; want an error")
	}
}

// An event stream's headers reach the client when the upstream sends them, not with the
// first token: the client (and an idle stream) knows at once that the stream is open.
func TestSSEHeadersBeforeFirstChunk(t *testing.T) {
	sendFirst := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-sendFirst:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: one\n\n")
	}))
	defer up.Close()
	p := newTestProxy(t, simpleConfig("", "a"), up.URL)

	got := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Post(p.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- resp
	}()
	var resp *http.Response
	select {
	case resp = <-got:
	case <-time.After(5 * time.Second):
		close(sendFirst)
		t.Fatal("no response headers while the upstream holds its first chunk; want them at once")
	}
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	close(sendFirst)
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "data: one\n\n" {
		t.Errorf("body = %q", b)
	}
}

// Events of every size reach the client whole and before the upstream sends the next
// one: sizes around the buffer a stream waits in (one that fills it exactly included,
// where a relay reading on for the rest of a burst would hold it until the next event)
// and larger than the burst buffer.
func TestSSEEventSizesEachDeliveredBeforeNext(t *testing.T) {
	sizes := []int{10, streamWaitSize - 1, streamWaitSize, streamWaitSize + 1, 2 * streamWaitSize,
		streamBufSize, streamBufSize + 1, 3*streamBufSize + 7, 1}
	event := func(i, n int) string {
		// "data: " + payload + "\n\n" is n bytes.
		return "data: " + strings.Repeat(string(rune('a'+i)), n-8) + "\n\n"
	}
	next := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for i, n := range sizes {
			if n < 8 {
				n = 8
			}
			io.WriteString(w, event(i, n))
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer up.Close()
	p := newTestProxy(t, simpleConfig("", "a"), up.URL)

	resp := post(t, p.URL+"/v1/chat/completions", `{"stream":true}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i, n := range sizes {
		if n < 8 {
			n = 8
		}
		want := event(i, n)
		got := make([]byte, len(want))
		done := make(chan error, 1)
		go func() { _, err := io.ReadFull(br, got); done <- err }()
		select {
		case err := <-done:
			if err != nil || string(got) != want {
				t.Fatalf("event %d (%d bytes): got %q, %v; want it whole", i, n, got, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%d bytes) held back until the upstream sends the next; want it at once", i, n)
		}
		next <- struct{}{}
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("after the last event: %q; want the end of the stream", rest)
	}
}
