package forward

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/proxy/accesslog"
	"github.com/llmproxy-go/llmproxy/proxy/config"
)

const benchAnswer = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}`

func benchProxy(b *testing.B, groupExtra string) string {
	return benchProxyDeps(b, Deps{}, groupExtra)
}

func benchProxyDeps(b *testing.B, deps Deps, groupExtra string) string {
	return newTestProxyDeps(b, deps, simpleConfig(groupExtra, "a"), jsonUpstream(b)).URL
}

// benchLogFile is a file in a temporary directory that receives the access log, so
// every write is a real write syscall as with a log on stderr redirected to a file.
func benchLogFile(b *testing.B) *os.File {
	f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// runBench posts chat completions to target in parallel, with the header pairs hdr.
func runBench(b *testing.B, target string, hdr ...string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	const body = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	b.ReportAllocs()
	cpu0, cpuOK := processCPU()
	b.ResetTimer()
	defer func() {
		// CPU time per request (client, proxy and upstream together) holds still on a
		// shared, busy machine where ns/op does not.
		if cpu1, ok := processCPU(); ok && cpuOK {
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
		}
	}()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", target+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkProxyNonStream measures the whole loopback path client → proxy → upstream;
// allocations include the test client's and upstream's.
func BenchmarkProxyNonStream(b *testing.B) {
	b.Run("no-retry", func(b *testing.B) { runBench(b, benchProxy(b, "")) })
	b.Run("retry", func(b *testing.B) { runBench(b, benchProxy(b, retryCfg)) })
	b.Run("access-log", func(b *testing.B) {
		al := accesslog.New(benchLogFile(b), accesslog.Options{})
		b.Cleanup(func() { al.Close(context.Background()) })
		runBench(b, benchProxyDeps(b, Deps{AccessLog: al}, ""))
	})
	b.Run("cache-hit", func(b *testing.B) {
		// Every request after the first is answered from the group's memory cache: what a
		// hit costs the server besides the client's side (no upstream exchange).
		runBench(b, benchProxy(b, "    cache: {enabled: true, ttl: 1h}\n"))
	})
	b.Run("consumer", func(b *testing.B) {
		// An identified consumer with a local requests limit: key lookup, body read,
		// model check, admission and settlement, x-ratelimit headers.
		p := newTestProxy(b, consumerConfig("required", "{requests_per_minute: 10000000}"), jsonUpstream(b))
		runBench(b, p.URL, "Authorization", "Bearer llmp-team")
	})
}

// BenchmarkDirect is the same load without the proxy, for comparison.
func BenchmarkDirect(b *testing.B) {
	runBench(b, jsonUpstream(b))
}

func BenchmarkOutboundHeader(b *testing.B) {
	in := http.Header{
		"Content-Type":    {"application/json"},
		"Authorization":   {"Bearer client"},
		"Accept":          {"*/*"},
		"User-Agent":      {"openai-python/1.0"},
		"X-Stainless-Os":  {"Linux"},
		"Connection":      {"keep-alive"},
		"X-Forwarded-For": {"10.0.0.1"},
	}
	r := &http.Request{Header: in, RemoteAddr: "127.0.0.1:5555", URL: &url.URL{Path: "/v1/chat/completions"}}
	g := &config.Group{Agent: "LLMProxy/1.0"}
	m := &config.Member{Auth: "Bearer sk-xxx", HeaderOps: []config.HeaderOp{{Op: config.HeaderInsert, Key: "Openai-Organization", Value: "org"}}}
	h := make(http.Header, 16)
	id := []string{"0123456789abcdef0123456789abcdef"}
	b.ReportAllocs()
	for b.Loop() {
		clear(h) // as a pooled map is reused (attempt.go)
		outboundHeader(h, in, r, g, m, id, false)
	}
}

func BenchmarkUsageScanSSE(b *testing.B) {
	stream := []byte(strings.Repeat("data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"word \"}}]}\n\n", 200) +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":200}}\n\ndata: [DONE]\n\n")
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		var u usage
		sc := sseScanner{onLine: func(l []byte) {
			if p, ok := sseData(l); ok && len(p) > 0 && p[0] == '{' {
				u.scan(p)
			}
		}}
		for i := 0; i < len(stream); i += 1024 {
			sc.Write(stream[i:min(i+1024, len(stream))])
		}
		sc.Close()
	}
}

func BenchmarkTargetURL(b *testing.B) {
	in := &url.URL{Path: "/v1/chat/completions", RawQuery: "x=1"}
	for _, tt := range []struct{ name, base string }{
		{"host", "https://api.openai.com"},
		{"v1", "https://api.openai.com/v1"},
		{"full-endpoint", "https://api.openai.com/v1/chat/completions"},
		{"prefix", "http://gpu-host:8000/llm"},
	} {
		u, _ := url.Parse(tt.base)
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			var out url.URL
			for b.Loop() {
				targetURL(&out, u, in)
			}
		})
	}
}
