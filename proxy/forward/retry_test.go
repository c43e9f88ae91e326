package forward

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestRetryConnectErrorVersusReset: a connection refused (nothing sent) is connect_error
// and retried by the default words; a connection closed by an upstream that has read the
// request is reset, retried only when retry_on says so.
func TestRetryConnectErrorVersusReset(t *testing.T) {
	var hungUp atomic.Int32
	lost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hungUp.Add(1)
		panic(http.ErrAbortHandler) // close the connection without an answer
	}))
	defer lost.Close()
	okUp := &scripted{statuses: []int{200}}
	ok := httptest.NewServer(okUp)
	defer ok.Close()
	const body = `{"model":"m"}`

	for _, tc := range []struct {
		name     string
		first    string
		retryOn  string
		status   int
		code     string
		kind     string // llmproxy_upstream_errors_total error label of the first member
		hungUps  int32
		reachedB int
	}{
		{"refused, default words", closedURL(t), "[connect_error, timeout]", 200, "", "connect_error", 0, 1},
		{"lost, default words", lost.URL, "[connect_error, timeout]", 502, "upstream_error", "reset", 1, 0},
		{"lost, reset listed", lost.URL, "[reset]", 200, "", "reset", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hungUp.Store(0)
			before := len(okUp.calls())
			cfg := simpleConfig("    balance: {strategy: failover}\n    http_client:\n      retry: {attempts: 2, initial: 100, retry_on: "+tc.retryOn+"}\n", "a", "b")
			p := newTestProxy(t, cfg, tc.first, ok.URL)
			resp := post(t, p.URL+"/v1/chat/completions", body)
			if tc.code != "" {
				eb := checkProxyError(t, resp, tc.status, tc.code)
				if eb.Error.Message != ErrUpstreamBroken.Msg {
					t.Errorf("message %q; want %q (the connection failed; the upstream was reached)", eb.Error.Message, ErrUpstreamBroken.Msg)
				}
			} else if got := readAll(t, resp); resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s); want %d", resp.StatusCode, got, tc.status)
			}
			if got := hungUp.Load(); got != tc.hungUps {
				t.Errorf("the hanging upstream read the request %d times; want %d", got, tc.hungUps)
			}
			if got := len(okUp.calls()) - before; got != tc.reachedB {
				t.Errorf("the second member received %d requests; want %d", got, tc.reachedB)
			}
			if n := counterValue(p.Metrics.UpstreamErrors.WithLabelValues(tc.kind, "g", "a")); n != 1 {
				t.Errorf("upstream errors{error=%q} = %v; want 1", tc.kind, n)
			}
		})
	}
}
