package forward

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAccessLog(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, benchAnswer)
	}))
	defer up.Close()
	for _, off := range []bool{false, true} {
		var logs syncBuffer
		c, err := configfile.Decode("test.yaml", []byte(strings.ReplaceAll(simpleConfig("", "a"), "{{U0}}", up.URL)))
		if err != nil {
			t.Fatal(err)
		}
		m := telemetry.NewMetrics()
		reg := config.NewRegistry(m, nil)
		rt, err := config.Compile(c, reg, config.Options{Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		lg := slog.New(slog.NewJSONHandler(&logs, nil))
		srv := httptest.NewServer(New(config.NewHolder(rt), "f", Deps{Metrics: m, Logger: lg, NoAccessLog: off}))
		resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-x"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		srv.Close()
		reg.Close()
		got := logs.String()
		has := strings.Contains(got, `"msg":"request"`) && strings.Contains(got, `"status":200`) && strings.Contains(got, `"prompt_tokens":12`)
		if has == off {
			t.Errorf("NoAccessLog=%v: access log record present = %v; logs:\n%s", off, has, got)
		}
	}
}
