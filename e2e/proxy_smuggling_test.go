package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
	"github.com/llmproxy-go/llmproxy/e2e/mockllm"
)

// smuggleConfig is one forward in front of one mockllm; HeaderTimeout is the forward's
// timeout.connect, the time a client has to send its request's headers.
const smuggleConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
      timeout: {connect: {{.HeaderTimeout}}}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - {name: g, upstreams: [{name: up}]}
`

// smuggleProxy starts a mockllm and a proxy on smuggleConfig and returns the mock and the
// forward's host:port.
func smuggleProxy(t *testing.T, headerTimeout int) (*resMock, string) {
	t.Helper()
	up := resStartMock(t, "up")
	port := harness.FreePort(t)
	resStartProxy(t, smuggleConfig, map[string]any{"Port": port, "URL": up.url, "HeaderTimeout": headerTimeout})
	return up, fmt.Sprintf("127.0.0.1:%d", port)
}

// smuggleHead is the start of a POST's header section, before its framing headers.
const smuggleHead = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

// rawDial connects to addr with a deadline of timeout for every read and write; the
// connection is closed when the test ends.
func rawDial(t *testing.T, addr string, timeout time.Duration) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(timeout))
	return c
}

// rawAnswer is one response read off a raw connection.
type rawAnswer struct {
	Status   int
	Upstream string // X-Mock-Upstream: "" when the proxy (or net/http) answered by itself
	Body     string
}

// rawConversation writes request, as is, on a new connection to addr and reads every
// response until the proxy closes the connection. It fails the test when the connection
// is still open after 10 s: every request below ends with the server closing.
func rawConversation(t *testing.T, addr, request string) []rawAnswer {
	t.Helper()
	c := rawDial(t, addr, 10*time.Second)
	go io.WriteString(c, request) // a server that refuses early may stop reading
	br := bufio.NewReader(c)
	var answers []rawAnswer
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				t.Fatalf("connection still open after 10 s; answers so far %+v", answers)
			}
			return answers
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers = append(answers, rawAnswer{Status: resp.StatusCode, Upstream: resp.Header.Get("X-Mock-Upstream"), Body: string(b)})
	}
}

// TestProxySmuggling sends ambiguous or malformed HTTP/1.1 framing to a forward over raw
// TCP. Whatever the client sees, the upstream must never see a request the client was not
// answered for: each request the upstream received matches one answer from it, in order,
// and a refused request reaches it not at all. Framing the proxy cannot read unambiguously
// is refused (400, 501) and the connection closed, so the bytes after it are never read as
// a request; a request with both Transfer-Encoding: chunked and Content-Length is read by
// its chunked framing (RFC 9112 §6.3), sent on with the proxy's own framing, and the
// connection is closed after its answer (§6.1), so nothing after it is read either.
func TestProxySmuggling(t *testing.T) {
	t.Parallel()
	up, addr := smuggleProxy(t, 10)

	// smuggled is the request hidden in each attack; closer ends every conversation, so
	// that a server still reading requests after the attack answers it and then closes.
	const smuggled = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	const closer = "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	const head = smuggleHead
	chunkOf := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

	type upstreamSaw struct{ method, path, body string }
	tests := []struct {
		name    string
		request string
		// status is the one answer a refused request gets; 0: the request is read and
		// forwarded, and want lists what the upstream receives, one answer for each.
		status int
		want   []upstreamSaw
		// closes: the proxy closes the connection after its first answer (RFC 9112 §6.1
		// requires it after a request with both Transfer-Encoding and Content-Length;
		// net/http of Go 1.26 alone keeps the connection), so the upstream sees only
		// want[0] and the rest of want is what it would see were the connection kept.
		closes bool
	}{
		{
			name:    "CL.TE: chunked wins over Content-Length",
			request: head + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s", 5+len(smuggled), smuggled) + closer,
			// The bytes after the last chunk are the client's next request on its own
			// connection, answered to it like any pipelined request.
			want:   []upstreamSaw{{"POST", "/v1/chat/completions", ""}, {"GET", "/v1/smuggled", ""}, {"GET", "/v1/models", ""}},
			closes: true,
		},
		{
			name:    "TE.CL: the chunk holding a request is body",
			request: head + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunkOf(smuggled) + "0\r\n\r\n" + closer,
			want:    []upstreamSaw{{"POST", "/v1/chat/completions", smuggled}, {"GET", "/v1/models", ""}},
			closes:  true,
		},
		{name: "two different Content-Length", request: head + "Content-Length: 0\r\nContent-Length: 38\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{name: "Content-Length not a number", request: head + "Content-Length: +38\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{name: "Transfer-Encoding: xchunked", request: head + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled + closer, status: http.StatusNotImplemented},
		{name: "Transfer-Encoding with a space before the colon", request: head + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{name: "Transfer-Encoding: chunked, identity", request: head + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled + closer, status: http.StatusNotImplemented},
		{name: "two Transfer-Encoding headers", request: head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled + closer, status: http.StatusNotImplemented},
		{
			name: "Transfer-Encoding and Content-Length on HTTP/1.0",
			// HTTP/1.0 has no chunked coding: the body is Content-Length's, and the
			// connection closes after the answer, so nothing after it is read.
			request: strings.Replace(head, "HTTP/1.1", "HTTP/1.0", 1) + "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n" + smuggled + closer,
			want:    []upstreamSaw{{"POST", "/v1/chat/completions", ""}},
		},
		{name: "invalid chunk size", request: head + "Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{name: "chunk size overflowing 64 bits", request: head + "Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nab\r\n0\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{name: "bare CR in a header value", request: head + "X-A: a\rContent-Length: 38\r\nContent-Length: 0\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{name: "header name with a space", request: head + "X Foo: bar\r\nContent-Length: 0\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{name: "header name with a tab", request: head + "Content-Length\t: 38\r\n\r\n" + smuggled + closer, status: http.StatusBadRequest},
		{
			name: "obs-fold line that looks like Transfer-Encoding",
			// RFC 9112 §5.2 lets a server replace an obs-fold by a space; net/http does, so
			// the folded line is part of X-A's value, not a header, and Content-Length: 0
			// frames the body: the bytes after it are the client's next request.
			request: head + "X-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n" + smuggled + closer,
			want:    []upstreamSaw{{"POST", "/v1/chat/completions", ""}, {"GET", "/v1/smuggled", ""}, {"GET", "/v1/models", ""}},
		},
		{
			name: "header line ending in a bare LF",
			// RFC 9112 §2.2 lets a recipient take a bare LF as a line end; net/http does,
			// so the two header lines are read as two and the framing is unambiguous.
			request: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\nContent-Length: 0\r\n\r\n" + closer,
			want:    []upstreamSaw{{"POST", "/v1/chat/completions", ""}, {"GET", "/v1/models", ""}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := up.stats().LastSeq
			answers := rawConversation(t, addr, tc.request)
			recs, err := up.api.Requests(t.Context(), before)
			if err != nil {
				t.Fatalf("requests of the mock: %v", err)
			}
			var saw []upstreamSaw
			for _, r := range recs {
				saw = append(saw, upstreamSaw{r.Method, r.Path, r.Body})
			}
			if tc.status != 0 {
				if len(answers) != 1 || answers[0].Status != tc.status || answers[0].Upstream != "" {
					t.Errorf("answers %+v; want one %d from the proxy, then the connection closed", answers, tc.status)
				}
				if len(saw) != 0 {
					t.Errorf("upstream received %+v; want nothing", saw)
				}
				return
			}
			want := tc.want
			if tc.closes {
				want = want[:1]
			}
			if fmt.Sprint(saw) != fmt.Sprint(want) {
				t.Errorf("upstream received %+v; want %+v", saw, want)
			}
			if len(answers) != len(saw) {
				t.Errorf("client got %d answers %+v for the %d requests the upstream received", len(answers), answers, len(saw))
			}
			for i, a := range answers {
				if a.Upstream != "up" {
					t.Errorf("answer %d %+v was not the upstream's", i, a)
				}
			}
		})
	}

	// Headers over net/http's limit (1 MiB) answer 431 and reach no upstream.
	t.Run("header bomb", func(t *testing.T) {
		before := up.stats().LastSeq
		var b strings.Builder
		b.WriteString(head)
		filler := strings.Repeat("a", 1000)
		for i := 0; b.Len() < 1<<20+64<<10; i++ {
			fmt.Fprintf(&b, "X-Bomb-%d: %s\r\n", i, filler)
		}
		b.WriteString("Content-Length: 0\r\n\r\n")
		answers := rawConversation(t, addr, b.String())
		if len(answers) != 1 || answers[0].Status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("answers %+v; want one 431", answers)
		}
		if recs, err := up.api.Requests(t.Context(), before); err != nil || len(recs) != 0 {
			t.Errorf("upstream received %d requests (%v); want none", len(recs), err)
		}
	})
}

// TestProxySmugglingSlowloris holds a connection open by sending a request's headers one
// byte every half second: the forward closes it when its header timeout (timeout.connect,
// 2 s here) has passed, answering at most net/http's own 4xx (400 today) and sending
// nothing upstream, while a client sending at normal speed is served meanwhile.
func TestProxySmugglingSlowloris(t *testing.T) {
	t.Parallel()
	const headerTimeout = 2 * time.Second
	up, addr := smuggleProxy(t, int(headerTimeout/time.Second))

	c := rawDial(t, addr, headerTimeout+10*time.Second)
	start := time.Now()
	request := smuggleHead + "Content-Length: 0\r\n\r\n"
	sent := make(chan int, len(request))
	go func() { // one byte every 500 ms until the proxy closes the connection
		defer close(sent)
		for i := range len(request) {
			if _, err := c.Write([]byte{request[i]}); err != nil {
				return
			}
			sent <- i + 1
			time.Sleep(500 * time.Millisecond)
		}
	}()
	type readEnd struct {
		data []byte
		at   time.Duration
	}
	closed := make(chan readEnd, 1)
	go func() {
		b, _ := io.ReadAll(c)
		closed <- readEnd{b, time.Since(start)}
	}()

	// While the slow client holds its connection, a normal one is served.
	for n := range sent {
		if n >= 2 {
			break
		}
	}
	a := resSend(t.Context(), resScrapeClient, "http://"+addr+resChatPath, resChat("normal", false))
	if a.Status != http.StatusOK || a.Upstream() != "up" {
		t.Errorf("a normal client during the slow one got %s; want 200 from up", a)
	}

	var end readEnd
	select {
	case end = <-closed:
	case <-time.After(headerTimeout + 10*time.Second):
		t.Fatalf("the slow client's connection is still open %v after it began; header timeout %v", time.Since(start), headerTimeout)
	}
	t.Logf("the slow client's connection closed %v after it began, having read %q", end.at, end.data)
	if end.at > headerTimeout+5*time.Second {
		t.Errorf("the slow client's connection closed %v after it began; want about the header timeout %v", end.at, headerTimeout)
	}
	if s := string(end.data); s != "" && !strings.HasPrefix(s, "HTTP/1.1 4") || strings.Contains(s, "X-Mock-Upstream") {
		t.Errorf("the slow client read %q; want nothing or a 4xx from the proxy", s)
	}
	var slow []mockllm.Record
	for _, r := range up.records() {
		if !strings.Contains(r.Body, "normal") {
			slow = append(slow, r)
		}
	}
	if len(slow) != 0 {
		t.Errorf("upstream received %d requests other than the normal client's: %+v", len(slow), slow)
	}
}
