package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// slowConfig is one forward in front of a group that takes one request at a time and
// refuses any other at once, so a request that holds the slot shows as a 503 for the next.
const slowConfig = `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: g
{{- if .Body}}
      timeout: {body: "{{.Body}}"}
{{- end}}
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - name: g
    upstreams: [{name: up}]
    concurrency: {max: 1, queue: 0, drop_excess: true}
`

// slowPost POSTs body to url in parts, one every gap, with the declared length
// contentLength (-1: chunked). After each part has gone out it sends the number of parts
// written so far on progress (when not nil), then closes progress at the end of the
// request.
func slowPost(ctx context.Context, url string, parts []string, contentLength int64, gap time.Duration, progress chan<- int) resAnswer {
	pr, pw := io.Pipe()
	go func() {
		for i, p := range parts {
			if i > 0 {
				select {
				case <-time.After(gap): // the pace of a slow client is the behaviour under test
				case <-ctx.Done():
					pw.CloseWithError(ctx.Err())
					return
				}
			}
			if _, err := io.WriteString(pw, p); err != nil {
				return // the proxy stopped reading
			}
			if progress != nil {
				select {
				case progress <- i + 1:
				default:
				}
			}
		}
		pw.Close()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
	if err != nil {
		return resAnswer{Err: err}
	}
	req.ContentLength = contentLength
	req.Header.Set("Content-Type", "application/json")
	return resDo(resClient, req)
}

// chatParts cuts a chat request body into n parts.
func chatParts(content string, n int) []string {
	body := resChat(content, false)
	size := (len(body) + n - 1) / n
	var parts []string
	for len(body) > 0 {
		k := min(size, len(body))
		parts = append(parts, body[:k])
		body = body[k:]
	}
	return parts
}

// A client that sends its body slowly must cost only itself: the proxy reads a small
// body before it takes one of the group's concurrency slots, so two such clients do not
// keep a max: 1 group busy for everybody else.
func TestProxySlowBodyDoesNotHoldConcurrencySlots(t *testing.T) {
	t.Parallel()
	up := resStartMock(t, "up")
	port := harness.FreePort(t)
	resStartProxy(t, slowConfig, map[string]any{"Port": port, "URL": up.url, "Body": ""})
	url := fmt.Sprintf("http://127.0.0.1:%d%s", port, resChatPath)
	ctx := context.Background()

	var wg sync.WaitGroup
	slow := make([]resAnswer, 2)
	progress := make([]chan int, 2)
	for i := range slow {
		progress[i] = make(chan int, 16)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Different lengths: the two bodies end apart, and each then finds the slot free.
			slow[i] = slowPost(ctx, url, chatParts(fmt.Sprintf("slow %d", i), 10+4*i), -1, 200*time.Millisecond, progress[i])
		}()
	}
	// Once both slow clients have sent three parts, the proxy has been reading their
	// bodies for a while; fast requests must still go through, one at a time.
	for i := range progress {
		for n := range progress[i] {
			if n >= 3 {
				break
			}
		}
	}
	for i := range 4 {
		a := resSend(ctx, resClient, url, resChat(fmt.Sprintf("fast %d", i), false))
		if a.Status != http.StatusOK {
			t.Errorf("fast request %d while two clients trickle their bodies: %s; want 200 (a slow body must not hold the group's slot)", i, a)
		}
	}
	wg.Wait()
	for i, a := range slow {
		if a.Status != http.StatusOK {
			t.Errorf("slow client %d: %s; want 200 once its body is in", i, a)
		}
	}
}

// forwards[].timeout.body bounds the reading of a request body: a client still sending
// after it gets 408 in the proxy's error shape, nothing reaches the upstream, and a large
// body streamed to the upstream holds the group's slot no longer than that.
func TestProxyBodyTimeout(t *testing.T) {
	t.Parallel()
	up := resStartMock(t, "up")
	port := harness.FreePort(t)
	p := resStartProxy(t, slowConfig, map[string]any{"Port": port, "URL": up.url, "Body": "1s"})
	url := fmt.Sprintf("http://127.0.0.1:%d%s", port, resChatPath)
	ctx := context.Background()

	a := slowPost(ctx, url, chatParts("too slow", 20), -1, 250*time.Millisecond, nil)
	msg := resCheckProxyError(t, a, http.StatusRequestTimeout)
	if !strings.Contains(msg, "body") {
		t.Errorf("408 message %q does not say the body was too slow", msg)
	}
	if a.Elapsed > 4*time.Second {
		t.Errorf("408 came after %s; want it at the 1s body timeout", a.Elapsed.Round(time.Millisecond))
	}
	if n := len(up.recordsWith("Content-Type", "application/json")); n != 0 {
		t.Errorf("upstream received %d requests; want none from a client whose body timed out", n)
	}

	// A large declared body streams to the upstream (it is not buffered) and holds the
	// slot; the timeout ends it, and the slot is free again.
	big := strings.Repeat("x", 256<<10)
	parts := []string{`{"model":"m","pad":"`}
	for range 8 {
		parts = append(parts, big)
	}
	parts = append(parts, `"}`)
	var total int64
	for _, s := range parts {
		total += int64(len(s))
	}
	done := make(chan resAnswer, 1)
	go func() { done <- slowPost(ctx, url, parts, total, 400*time.Millisecond, nil) }()
	<-done // the client sees a 408 or a reset connection, depending on when the proxy closed it
	if !resWait(5*time.Second, func() bool {
		n, _ := p.metrics().sum("llmproxy_http_request_errors_total", "error", "body_timeout", "status", "408")
		return n >= 2
	}) {
		t.Fatalf("no second body_timeout counted\n%s", p.metrics().dump("llmproxy_http_request_errors_total"))
	}
	if a := resSend(ctx, resClient, url, resChat("after", false)); a.Status != http.StatusOK {
		t.Errorf("request after the timed-out upload: %s; want 200 (the slot is free again)", a)
	}
}
