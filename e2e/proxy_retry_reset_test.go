package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/harness"
)

// connect_error retries only what never reached an upstream. A connection lost after the
// request was written (the upstream may have processed, and billed, it) is `reset`, which
// the default retry_on leaves out: the client gets 502 and the request is not sent again,
// unless the group asks for reset.
func TestProxyRetryResetIsNotAConnectError(t *testing.T) {
	t.Parallel()
	hang := resStartMock(t, "hang")
	hang.behave(`{"hangup":true}`)
	ok := resStartMock(t, "ok")
	port := harness.FreePort(t)
	p := resStartProxy(t, `
http_server:
  forwards:
    - name: main
      address: 127.0.0.1
      port: {{.Port}}
      default_group: lost
      routing:
        - {path: "/refused/*", target_group: refused}
        - {path: "/lost-retried/*", target_group: lost-retried}
upstreams:
  - {name: hang, url: "{{.Hang}}"}
  - {name: ok, url: "{{.OK}}"}
  - {name: down, url: "http://{{.Down}}"}
upstream_groups:
  - name: lost
    balance: {strategy: failover}
    upstreams: [{name: hang}, {name: ok}]
    http_client: {retry: {attempts: 2, initial: 100}}
  - name: refused
    balance: {strategy: failover}
    upstreams: [{name: down}, {name: ok}]
    http_client: {retry: {attempts: 2, initial: 100}}
  - name: lost-retried
    balance: {strategy: failover}
    upstreams: [{name: hang}, {name: ok}]
    http_client: {retry: {attempts: 2, initial: 100, retry_on: [reset, connect_error]}}
`, map[string]any{"Port": port, "Hang": hang.url, "OK": ok.url, "Down": harness.FreeAddr(t)})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx := context.Background()

	a := resSend(ctx, resClient, base+resChatPath, resChat("lost", false))
	resCheckProxyError(t, a, http.StatusBadGateway)
	if h, o := hang.countBodies("lost"), ok.countBodies("lost"); h != 1 || o != 0 {
		t.Errorf("a request lost after it was written reached hang %d and ok %d times; want 1 and 0 (not sent again)", h, o)
	}

	a = resSend(ctx, resClient, base+"/refused"+resChatPath, resChat("refused", false))
	if a.Status != http.StatusOK || a.Upstream() != "ok" {
		t.Errorf("a refused connection (nothing sent): %s; want 200 from ok after a connect_error retry", a)
	}

	a = resSend(ctx, resClient, base+"/lost-retried"+resChatPath, resChat("asked", false))
	if a.Status != http.StatusOK || a.Upstream() != "ok" {
		t.Errorf("retry_on reset: %s; want 200 from ok", a)
	}
	if h := hang.countBodies("asked"); h != 1 {
		t.Errorf("retry_on reset: hang received the request %d times; want 1", h)
	}

	ms := p.metrics()
	for _, c := range []struct{ metric, label, value, upstream string }{
		{"llmproxy_upstream_errors_total", "error", "reset", "hang"},
		{"llmproxy_upstream_errors_total", "error", "connect_error", "down"},
	} {
		if n, _ := ms.sum(c.metric, c.label, c.value, "upstream", c.upstream); n < 1 {
			t.Errorf("%s{%s=%q,upstream=%q} = %v; want at least 1\n%s", c.metric, c.label, c.value, c.upstream, n, ms.dump(c.metric))
		}
	}
	if n, _ := ms.sum("llmproxy_upstream_errors_total", "error", "connect_error", "upstream", "hang"); n != 0 {
		t.Errorf("hang's lost connections counted as connect_error %v times; want 0\n%s", n, ms.dump("llmproxy_upstream_errors_total"))
	}
	for _, c := range []struct{ group, reason string }{{"refused", "connect_error"}, {"lost-retried", "reset"}} {
		if n, _ := ms.sum("llmproxy_retries_total", "group", c.group, "reason", c.reason); n != 1 {
			t.Errorf("llmproxy_retries_total{group=%q,reason=%q} = %v; want 1\n%s", c.group, c.reason, n, ms.dump("llmproxy_retries_total"))
		}
	}
}
