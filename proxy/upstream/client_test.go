package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/internal/wait"
)

// server is an upstream that counts the connections it accepted and the open ones.
type server struct {
	*httptest.Server
	accepted, open atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.accepted.Add(1)
			s.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.open.Add(-1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, cfg Config) (*Client, *http.Transport) {
	fb := &http.Transport{}
	c := New(cfg, fb)
	t.Cleanup(c.CloseIdleConnections)
	return c, fb
}

// post sends a POST with body to url through c and returns the answer's body read whole.
func post(t *testing.T, c *Client, ctx context.Context, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(b)
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Method", r.Method)
	w.Write(append([]byte("echo:"), b...))
}

func TestKeepAliveReusesOneConnection(t *testing.T) {
	s := newServer(t, echo)
	c, _ := newClient(t, Config{})
	var reused []bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	for i := range 5 {
		resp, body := post(t, c, ctx, s.URL+"/v1/chat", "hello")
		if resp.StatusCode != 200 || body != "echo:hello" || resp.Header.Get("X-Method") != "POST" {
			t.Fatalf("request %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	if n := s.accepted.Load(); n != 1 {
		t.Fatalf("5 sequential requests opened %d connections, want 1", n)
	}
	if want := []bool{false, true, true, true, true}; !equal(reused, want) {
		t.Fatalf("GotConn Reused = %v, want %v", reused, want)
	}
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBodyClosedEarlyClosesTheConnection(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
	})
	c, _ := newClient(t, Config{})
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(buf); err == nil {
		t.Fatal("a read after Close succeeded")
	}
	wait.For(t, "the upstream to see the abandoned connection closed", func() bool { return s.open.Load() == 0 })
	resp2, _ := post(t, c, context.Background(), s.URL, "")
	if resp2.StatusCode != 200 || s.accepted.Load() != 2 {
		t.Fatalf("after an abandoned answer: status %d, %d connections (want a new one)", resp2.StatusCode, s.accepted.Load())
	}
}

func TestUpstreamClosedIdleConnectionIsNotUsed(t *testing.T) {
	s := newServer(t, echo)
	c, _ := newClient(t, Config{})
	post(t, c, context.Background(), s.URL, "a")
	// The upstream closes its idle connections (as one does at its keep-alive timeout).
	s.Config.SetKeepAlivesEnabled(false)
	wait.For(t, "the upstream to close the idle connection", func() bool { return s.open.Load() == 0 })
	s.Config.SetKeepAlivesEnabled(true)
	_, body := post(t, c, context.Background(), s.URL, "b")
	if body != "echo:b" || s.accepted.Load() != 2 {
		t.Fatalf("after the upstream closed the idle connection: %q over %d connections", body, s.accepted.Load())
	}
}

func TestConnectionCloseIsHonoured(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("bye"))
	})
	c, _ := newClient(t, Config{})
	for range 3 {
		if _, body := post(t, c, context.Background(), s.URL, ""); body != "bye" {
			t.Fatalf("body %q", body)
		}
	}
	if n := s.accepted.Load(); n != 3 {
		t.Fatalf("3 answers with Connection: close used %d connections, want 3", n)
	}
}

// rawServer answers every request with reply, written as is; with closeAfter it closes
// the connection after the first answer.
func rawServer(t *testing.T, reply string, closeAfter bool) (addr string, accepted *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int64)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(nc, reply); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

func TestBytesAfterTheAnswerPoisonTheConnection(t *testing.T) {
	// A second, unrequested answer follows the first: the connection must not carry
	// another request, whose answer would be the stray one.
	addr, accepted := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray", false)
	c, _ := newClient(t, Config{})
	for range 2 {
		if _, body := post(t, c, context.Background(), "http://"+addr+"/", "q"); body != "ok" {
			t.Fatalf("body %q, want ok", body)
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the first one had unread bytes)", n)
	}
}

func TestInformationalAnswersAreSkipped(t *testing.T) {
	addr, _ := rawServer(t, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone", false)
	c, _ := newClient(t, Config{})
	var got []int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { got = append(got, code); return nil },
	})
	resp, body := post(t, c, ctx, "http://"+addr+"/", "")
	if resp.StatusCode != 200 || body != "done" || len(got) != 1 || got[0] != 103 {
		t.Fatalf("status %d body %q 1xx %v", resp.StatusCode, body, got)
	}
}

func TestCanceledRequestFailsWithItsCause(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then net/http watches the connection for the client's leaving
		if r.URL.Path == "/stream" {
			w.Write([]byte("first"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	c, _ := newClient(t, Config{})
	cause := errors.New("the client left")

	// Waiting for the headers.
	ctx, cancel := context.WithCancelCause(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/wait", strings.NewReader("x"))
	time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
	if _, err := c.RoundTrip(req); !errors.Is(err, cause) {
		t.Fatalf("canceled while waiting for the headers: %v, want the cause", err)
	}

	// Waiting in the body.
	ctx, cancel = context.WithCancelCause(context.Background())
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/stream", strings.NewReader("x"))
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := resp.Body.Read(buf)
	if string(buf[:n]) != "first" {
		t.Fatalf("first read %q", buf[:n])
	}
	time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, cause) {
		t.Fatalf("canceled while reading the body: %v, want the cause", err)
	}
	resp.Body.Close()
	wait.For(t, "both canceled connections to close", func() bool { return s.open.Load() == 0 })
}

func TestIdleTimeoutClosesIdleConnections(t *testing.T) {
	s := newServer(t, echo)
	c, _ := newClient(t, Config{IdleTimeout: 50 * time.Millisecond})
	post(t, c, context.Background(), s.URL, "a")
	wait.For(t, "the idle connection to be closed by the sweep", func() bool { return s.open.Load() == 0 })
	post(t, c, context.Background(), s.URL, "b")
	if n := s.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

func TestMaxIdlePerHost(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	c, _ := newClient(t, Config{MaxIdlePerHost: 2})
	resps := make(chan *http.Response, 4)
	for range 4 {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Error(err)
			}
			resps <- resp
		}()
	}
	wait.For(t, "4 connections", func() bool { return s.open.Load() == 4 })
	close(release)
	for range 4 {
		if resp := <-resps; resp != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	wait.For(t, "2 of 4 connections kept idle", func() bool { return s.open.Load() == 2 })
}

func TestNoBodyAnswersReleaseTheConnection(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	c, _ := newClient(t, Config{})
	for range 3 {
		req, _ := http.NewRequest(http.MethodDelete, s.URL, nil)
		resp, err := c.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%v %v", resp, err)
		}
	}
	if n := s.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for 3 bodiless answers, want 1", n)
	}
}

// recorder is a fallback that records what it is given.
type recorder struct{ got []*http.Request }

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.got = append(r.got, req)
	return &http.Response{StatusCode: 299, Body: http.NoBody, Request: req}, nil
}

func TestWhatGoesToTheFallback(t *testing.T) {
	s := newServer(t, echo)
	streamed, _ := http.NewRequest(http.MethodPost, s.URL, io.NopCloser(strings.NewReader("x"))) // no GetBody
	streamed.ContentLength = -1
	expect, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("x"))
	expect.Header.Set("Expect", "100-continue")
	large, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(strings.Repeat("x", maxDirectBody+1)))
	small, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(strings.Repeat("x", maxDirectBody)))
	tls, _ := http.NewRequest(http.MethodGet, "https://example.invalid/", nil)
	plain, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("x"))

	for _, tc := range []struct {
		name     string
		req      *http.Request
		only     bool
		fallback bool
	}{
		{"body streaming from the client", streamed, false, true},
		{"expects 100-continue", expect, false, true},
		{"body over maxDirectBody", large, false, true},
		{"body of maxDirectBody", small, false, false},
		{"TLS", tls, false, true},
		{"cleartext, body in memory", plain, false, false},
		{"FallbackOnly (outbound proxy)", plain, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fb := &recorder{}
			c := New(Config{FallbackOnly: tc.only}, fb)
			defer c.CloseIdleConnections()
			if tc.req.GetBody != nil {
				tc.req.Body, _ = tc.req.GetBody()
			}
			if c.Direct(tc.req) == tc.fallback {
				t.Fatalf("Direct = %v; the request goes to the fallback: %v", !tc.fallback, tc.fallback)
			}
			resp, err := c.RoundTrip(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := len(fb.got) == 1; got != tc.fallback {
				t.Fatalf("went to the fallback: %v, want %v", got, tc.fallback)
			}
			// Direct is what callers that reuse a request's parts rely on: it must say
			// where the request went, before and after the exchange.
			if c.Direct(tc.req) == tc.fallback {
				t.Fatalf("Direct = %v after the exchange; the request went to the fallback: %v", !tc.fallback, tc.fallback)
			}
		})
	}
}

func TestDialErrorIsReturned(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c, _ := newClient(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader("x"))
	_, err := c.RoundTrip(req)
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("error %v, want the dial error", err)
	}
}

func TestHeadersLongerThanTheReadBuffer(t *testing.T) {
	long := strings.Repeat("v", 3000)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Long", long)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: 1\n\n"))
	})
	c, _ := newClient(t, Config{ReadBufferSize: 1 << 10})
	resp, body := post(t, c, context.Background(), s.URL, "")
	if resp.Header.Get("X-Long") != long || body != "data: 1\n\n" {
		t.Fatalf("through a 1 KiB buffer: header of %d bytes, body %q", len(resp.Header.Get("X-Long")), body)
	}
}

func TestClosedClientKeepsNothingIdle(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("ok"))
	})
	defer unblock()
	c, _ := newClient(t, Config{})
	done := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/slow", nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	wait.For(t, "a busy connection", func() bool { return s.open.Load() == 1 })
	post(t, c, context.Background(), s.URL, "") // a second connection, idle after this
	if n := s.open.Load(); n != 2 {
		t.Fatalf("%d connections open, want 2 (one busy, one idle)", n)
	}
	c.Close() // a configuration change dropped the client while an exchange runs on it
	wait.For(t, "the idle connection to close", func() bool { return s.open.Load() == 1 })
	unblock()
	if got := <-done; got != "ok" {
		t.Fatalf("the running exchange got %q", got)
	}
	wait.For(t, "the busy connection to close when its exchange ended", func() bool { return s.open.Load() == 0 })
}

func TestAnswerReadToTheClose(t *testing.T) {
	// No Content-Length, not chunked: the body runs to the end of the connection.
	addr, _ := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", true)
	c, _ := newClient(t, Config{})
	for range 2 {
		if resp, body := post(t, c, context.Background(), "http://"+addr+"/", "x"); body != "until the end" || !resp.Close {
			t.Fatalf("body %q, Close %v", body, resp.Close)
		}
	}
}

func TestCloseUnblocksAWaitingRead(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: 1\n\n"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c, _ := newClient(t, Config{})
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, _ := resp.Body.Read(buf); string(buf[:n]) != "data: 1\n\n" {
		t.Fatalf("first event %q", buf[:n])
	}
	read := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(buf) // waits: the upstream is silent
		read <- err
	}()
	// Close from another goroutine, as net/http's Transport allows, whether or not the
	// Read has started waiting yet.
	resp.Body.Close()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("the Read succeeded after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock the waiting Read")
	}
	wait.For(t, "the connection to close", func() bool { return s.open.Load() == 0 })
}

func TestEarlyAnswerToASmallBodyIsHeard(t *testing.T) {
	// The upstream answers without reading the body and closes the connection.
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte("bad key"))
	})
	c, _ := newClient(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(strings.Repeat("x", maxDirectBody)))
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v; want the upstream's early answer", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || string(b) != "bad key" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}

// breakingConn fails one write once broken is set, after letting a few bytes through, and
// does not count what it writes.
type breakingConn struct {
	net.Conn
	broken *atomic.Bool
}

func (c breakingConn) Write(p []byte) (int, error) {
	if c.broken.CompareAndSwap(true, false) {
		n, _ := c.Conn.Write(p[:min(len(p), 10)])
		return n, errors.New("connection broke mid-request")
	}
	return c.Conn.Write(p)
}

func TestPartlySentRequestIsNotSentAgain(t *testing.T) {
	s := newServer(t, echo)
	broken := new(atomic.Bool)
	d := &net.Dialer{}
	c, _ := newClient(t, Config{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return breakingConn{nc, broken}, nil
	}})
	post(t, c, context.Background(), s.URL, "first") // leaves a pooled connection
	broken.Store(true)
	req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("second"))
	// A retry on a new connection would succeed: the request must fail instead.
	if resp, err := c.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("a request whose write broke after some bytes went out was sent again; it may reach the upstream twice")
	}
}
