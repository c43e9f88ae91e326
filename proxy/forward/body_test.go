package forward

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// bodyTimeoutConfig is forward "f" with timeout.body 300ms over upstream {{U0}}.
const bodyTimeoutConfig = `
http_server:
  forwards:
    - name: f
      port: 3999
      default_group: g
      timeout: {body: "300ms"}
upstreams:
  - {name: u, url: "{{U0}}"}
upstream_groups:
  - {name: g, upstreams: [{name: u}]}
`

// slowReader yields its parts one per gap.
type slowReader struct {
	parts []string
	gap   time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.parts) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.gap) // the client's pace is the behaviour under test
	n := copy(p, r.parts[0])
	r.parts[0] = r.parts[0][n:]
	if r.parts[0] == "" {
		r.parts = r.parts[1:]
	}
	return n, nil
}

func TestBodyTimeoutAnswers408(t *testing.T) {
	var reached atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.Copy(io.Discard, r.Body)
	}))
	defer up.Close()
	p := newTestProxy(t, bodyTimeoutConfig, up.URL)
	for _, tc := range []struct {
		name   string
		length int64 // -1: chunked, read before the attempt; 2 MiB: streamed to the upstream
	}{{"chunked", -1}, {"large", 2 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			parts := []string{`{"model":"m",`, strings.Repeat(" ", 1<<10)}
			for range 8 {
				parts = append(parts, strings.Repeat(" ", 1<<10))
			}
			if tc.length > 0 {
				parts = append(parts, strings.Repeat(" ", int(tc.length)-10<<10-len(parts[0])-2))
			}
			parts = append(parts, "}")
			req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/chat/completions", &slowReader{parts: parts, gap: 100 * time.Millisecond})
			req.ContentLength = tc.length
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				if tc.length > 0 {
					return // the proxy may close the connection while the client still writes
				}
				t.Fatalf("POST: %v", err)
			}
			checkProxyError(t, resp, http.StatusRequestTimeout, "body_timeout")
			if !resp.Close {
				t.Error("answer without Connection: close (the rest of the body is still coming)")
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("408 after %v; want it at the 300ms body timeout", d)
			}
		})
	}
	if n := reached.Load(); n > 1 {
		t.Errorf("upstream reached %d times; want at most the one streamed attempt", n)
	}
	if got := counterValue(p.Metrics.HTTPErrors.WithLabelValues("f", "body_timeout", "408")); got < 1 {
		t.Errorf("body_timeout errors counted %v; want at least 1", got)
	}
}

// A body that arrived in time leaves no deadline behind: an answer streamed for longer
// than the body timeout reaches the client whole, for a body read before the attempt and
// for one streamed to the upstream alike.
func TestBodyTimeoutDoesNotCutTheAnswer(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 8 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond) // a stream longer than the body timeout
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	p := newTestProxy(t, bodyTimeoutConfig, up.URL)
	for _, size := range []int{100, 2 << 20} {
		body := `{"model":"m","pad":"` + strings.Repeat("x", size) + `"}`
		resp := post(t, p.URL+"/v1/chat/completions", body)
		got := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || !strings.HasSuffix(got, "data: [DONE]\n\n") {
			t.Errorf("body of %d bytes: status %d, answer %q; want the whole stream", size, resp.StatusCode, got)
		}
	}
}
