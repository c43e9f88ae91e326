//go:build fasthttp

// Command llmproxy-spike-fasthttp is a measuring spike, not a product: the data path of
// one forward to one upstream on fasthttp (server and client) instead of net/http, so
// that make bench can put the engine's cost beside llmproxy's and nginx's in the same
// run (README, Benchmarks). It is built only with -tags fasthttp.
//
//	llmproxy-spike-fasthttp --addr 127.0.0.1:8080 --upstream 127.0.0.1:8000 [--access-log=false]
//
// It does the per-request work every proxied request needs and no more: the request id
// (kept or made), hop-by-hop headers removed both ways, X-Forwarded-For, the answer
// streamed (an event stream's headers at once, every chunk read from the upstream
// written and flushed before the next read) and one access-log line per request through
// proxy/accesslog. It has no routing, balancing, retries, breakers, limits, metrics,
// tracing or token counting. Known gaps of the engine, which a product would have to
// close: a client that leaves while the upstream is silent is not noticed until the
// upstream sends something (fasthttp has no disconnect signal), so the upstream request
// keeps running; no HTTP/2.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llmproxy-go/llmproxy/proxy/accesslog"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen on `HOST:PORT`")
	upstream := flag.String("upstream", "", "the upstream's `HOST:PORT` (plain HTTP)")
	logOn := flag.Bool("access-log", true, "one JSON line per request on stderr, buffered")
	flag.Parse()
	if *upstream == "" {
		fmt.Fprintln(os.Stderr, "llmproxy-spike-fasthttp: --upstream is required")
		os.Exit(2)
	}
	p := &proxy{upstream: *upstream, client: &fasthttp.HostClient{
		Addr:                     *upstream,
		StreamResponseBody:       true,
		MaxConns:                 1 << 20,
		MaxIdleConnDuration:      90 * time.Second,
		ReadBufferSize:           4 << 10,
		WriteBufferSize:          4 << 10,
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
	}}
	if *logOn {
		p.alog = accesslog.New(os.Stderr, accesslog.Options{})
	}
	srv := &fasthttp.Server{Handler: p.serve, NoDefaultServerHeader: true, StreamRequestBody: false}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "llmproxy-spike-fasthttp:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.ShutdownWithContext(context.Background())
	}()
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "llmproxy-spike-fasthttp:", err)
	}
	if p.alog != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.alog.Close(cctx)
	}
}

type proxy struct {
	upstream string
	client   *fasthttp.HostClient
	alog     *accesslog.Logger // nil: no access log
}

// hopHeaders are removed in both directions (RFC 9110 section 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

var eventStream = []byte("text/event-stream")

func (p *proxy) serve(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	req := &ctx.Request
	id := string(req.Header.Peek("X-Request-Id"))
	if id == "" || len(id) > 200 {
		id = newRequestID()
	}
	// The client's request is rewritten in place for the upstream.
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	ip, _, _ := net.SplitHostPort(ctx.RemoteAddr().String())
	if prior := req.Header.Peek("X-Forwarded-For"); len(prior) > 0 {
		ip = string(prior) + ", " + ip
	}
	req.Header.Set("X-Forwarded-For", ip)
	req.Header.Set("X-Request-Id", id)
	req.SetHost(p.upstream)
	e := &accesslog.Entry{RequestID: id, Forward: "spike", Method: string(req.Header.Method()),
		Path: string(req.URI().Path()), Route: "default", Client: ctx.RemoteAddr().String(), Upstream: p.upstream, Attempts: 1}

	resp := fasthttp.AcquireResponse()
	if err := p.client.Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		ctx.Response.Header.Set("X-Request-Id", id)
		ctx.SetContentType("application/json")
		ctx.SetStatusCode(fasthttp.StatusBadGateway)
		ctx.SetBodyString(`{"error":{"message":"upstream unreachable","type":"upstream_error","code":"upstream_unreachable"}}`)
		e.Status, e.Error = fasthttp.StatusBadGateway, "upstream_unreachable"
		p.log(e, start)
		return
	}
	out := &ctx.Response
	resp.Header.CopyTo(&out.Header)
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Header.Set("X-Request-Id", id)
	e.Status = resp.StatusCode()
	body := resp.BodyStream()
	if body == nil {
		e.Bytes = int64(len(resp.Body()))
		out.SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		p.log(e, start)
		return
	}
	size := resp.Header.ContentLength()
	if sse := bytes.HasPrefix(resp.Header.ContentType(), eventStream); sse || size < 0 {
		// Chunked to the client: fasthttp writes and flushes every read as one chunk.
		out.ImmediateHeaderFlush = sse
		size = -1
	}
	out.SetBodyStream(&relayBody{p: p, resp: resp, r: body, e: e, start: start}, size)
}

// relayBody is the upstream's answer as the server writes it to the client; its Close
// (by the server, when the answer ends or the client is gone) releases the upstream
// response and logs the request.
type relayBody struct {
	p     *proxy
	resp  *fasthttp.Response
	r     io.Reader
	e     *accesslog.Entry
	start time.Time
}

func (b *relayBody) Read(buf []byte) (int, error) {
	n, err := b.r.Read(buf)
	b.e.Bytes += int64(n)
	return n, err
}

func (b *relayBody) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	b.p.log(b.e, b.start)
	return err
}

func (p *proxy) log(e *accesslog.Entry, start time.Time) {
	if p.alog == nil {
		return
	}
	e.Time = time.Now()
	e.Duration = e.Time.Sub(start)
	p.alog.Log(e)
}

// newRequestID makes a request id as llmproxy does: 128 random bits from math/rand/v2
// (unique, not secret), in hex.
func newRequestID() string {
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		b[i], b[8+i] = byte(a>>(8*i)), byte(c>>(8*i))
	}
	return hex.EncodeToString(b[:])
}
