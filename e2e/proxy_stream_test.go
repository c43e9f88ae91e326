package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

const streamConfig = `
http_server:
  forwards:
    - name: stream
      address: 127.0.0.1
      port: {{.Port}}
      default_group: main
upstreams:
  - {name: up, url: "{{.URL}}"}
upstream_groups:
  - name: main
    upstreams: [{name: up}]
`

// TestProxyStreaming checks that SSE chunks reach the client as the upstream sends them,
// and that a client that leaves cancels the upstream request.
func TestProxyStreaming(t *testing.T) {
	t.Parallel()
	m := startMocks(t, nil, "sse")["sse"]
	addr := harness.FreeAddr(t)
	startProxy(t, renderConfig(t, streamConfig, map[string]any{"Port": harness.Port(t, addr), "URL": m.URL}))
	url := "http://" + addr + "/v1/chat/completions"
	body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`

	open := func(ctx context.Context, t *testing.T, headers ...string) (*http.Response, *bufio.Reader) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("stream answer: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		return resp, bufio.NewReader(resp.Body)
	}
	// nextData returns the next "data:" line.
	nextData := func(t *testing.T, r *bufio.Reader) string {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			if strings.HasPrefix(line, "data:") {
				return strings.TrimSpace(strings.TrimPrefix(line, "data:"))
			}
		}
	}

	t.Run("chunks are relayed as they come", func(t *testing.T) {
		// 4 chunks 300 ms apart: the upstream sends the last one at least 900 ms after the
		// first. A buffering proxy would deliver the first together with the last.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		resp, r := open(ctx, t, "X-Mock-Chunks", "4", "X-Mock-Chunk-Gap", "300ms")
		defer resp.Body.Close()
		first := nextData(t, r)
		tFirst := time.Since(start)
		var last string
		for d := first; d != "[DONE]"; d = nextData(t, r) {
			last = d
		}
		tEnd := time.Since(start)
		if !strings.Contains(first, `"role":"assistant"`) {
			t.Errorf("first data %q is not the first chunk", first)
		}
		if last == first {
			t.Errorf("only one chunk arrived")
		}
		if tEnd-tFirst < 800*time.Millisecond {
			t.Errorf("first chunk at %s, end at %s: want the first chunk at least 800ms before the end", tFirst, tEnd)
		}
		if tFirst > 500*time.Millisecond {
			t.Errorf("first chunk took %s; want it at once", tFirst)
		}
	})

	t.Run("client cancel reaches the upstream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		before := m.stats(t).LastSeq
		resp, r := open(ctx, t, "X-Mock-Chunks", "50", "X-Mock-Chunk-Gap", "200ms")
		nextData(t, r)
		cancel()
		resp.Body.Close()
		harness.Eventually(t, 5*time.Second, func() bool {
			recs, err := m.Requests(context.Background(), before)
			return err == nil && len(recs) == 1 && recs[0].Done && recs[0].Cancelled
		}, "the upstream did not see the client's cancel")
	})
}
