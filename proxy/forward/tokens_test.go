package forward

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/llmproxy-go/llmproxy/e2e/mockllm"
)

func TestUsageScan(t *testing.T) {
	tests := []struct {
		name               string
		docs               []string
		prompt, completion int64
		seen               bool
	}{
		{"openai", []string{`{"id":"x","choices":[{"message":{"content":"\"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"completion_tokens_details":{"reasoning_tokens":3}}}`}, 12, 34, true},
		{"openai stream chunks", []string{`{"choices":[{"delta":{"content":"hi"}}],"usage":null}`, `{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}`}, 7, 5, true},
		{"anthropic stream", []string{
			`{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}`,
			`{"type":"content_block_delta","delta":{"text":"usage"}}`,
			`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}`,
		}, 30, 15, true},
		{"anthropic non-stream", []string{`{"content":[{"type":"text","text":"x"}],"usage":{"input_tokens":3,"output_tokens":4}}`}, 3, 4, true},
		{"none", []string{`{"data":[1,2]}`, `not json "usage"`}, 0, 0, false},
		{"spaces", []string{`{"usage" : { "prompt_tokens" : 1 , "completion_tokens" : 2 } }`}, 1, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var u usage
			for _, d := range tt.docs {
				u.scan([]byte(d))
			}
			if u.prompt != tt.prompt || u.completion != tt.completion || u.seen != tt.seen {
				t.Errorf("got %+v; want prompt %d completion %d seen %v", u, tt.prompt, tt.completion, tt.seen)
			}
		})
	}
}

func TestTopLevelModel(t *testing.T) {
	tests := []struct{ doc, want string }{
		{`{"model":"gpt-4o","messages":[]}`, "gpt-4o"},
		{`{"messages":[{"model":"inner"}],"stream":true,"n":1,"model":"claude-3"}`, "claude-3"},
		{` { "x" : {"model":"no"} , "model" : "yes" }`, "yes"},
		{`{"messages":[]}`, ""},
		{`[1]`, ""},
		{`{"model":42}`, ""},
		{`{"model":"a\"b\u00e9"}`, "a\"bé"},
	}
	for _, tt := range tests {
		if got := modelOf([]byte(tt.doc)); got != tt.want {
			t.Errorf("modelOf(%s) = %q; want %q", tt.doc, got, tt.want)
		}
	}
}

// lines splits s the way sseScanner does.
func referenceLines(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			break
		}
		out = append(out, strings.TrimSuffix(s[:i], "\r"))
		s = s[i+1:]
	}
	if s != "" {
		out = append(out, strings.TrimSuffix(s, "\r"))
	}
	return out
}

func scanPieces(data []byte, cuts []int) []string {
	var got []string
	sc := &sseScanner{onLine: func(l []byte) { got = append(got, string(l)) }}
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(data) {
			sc.Write(data[prev:c])
			prev = c
		}
	}
	sc.Write(data[prev:])
	sc.Close()
	return got
}

func TestSSEScanner(t *testing.T) {
	data := []byte("event: x\r\ndata: {\"a\":1}\n\ndata: two\npartial")
	want := referenceLines(string(data))
	for cut := 0; cut <= len(data); cut++ {
		got := scanPieces(data, []int{cut, cut + 3})
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("cut %d: lines %q; want %q", cut, got, want)
		}
	}
}

func FuzzSSEScanner(f *testing.F) {
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1}}\n\n"), uint8(3), uint8(7))
	f.Add([]byte("event: message_start\r\ndata: x\r\n\r\n"), uint8(1), uint8(2))
	f.Add([]byte("no newline at all"), uint8(5), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint8) {
		if bytes.Count(data, []byte("\n")) > 1000 || len(data) > maxSSELine {
			return
		}
		got := scanPieces(data, []int{int(a), int(a) + int(b)})
		want := referenceLines(string(data))
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
			t.Fatalf("lines %q; want %q", got, want)
		}
		var u usage
		for _, l := range got {
			if p, ok := sseData([]byte(l)); ok {
				u.scan(p)
			}
		}
	})
}

func TestTokensCounted(t *testing.T) {
	mock, err := mockllm.New(mockllm.Options{Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(mock)
	defer s.Close()
	tests := []struct {
		name, path, body string
	}{
		{"openai json", "/v1/chat/completions", `{"model":"x","messages":[{"role":"user","content":"hello there"}]}`},
		{"openai stream", "/v1/chat/completions", `{"model":"x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`},
		{"anthropic json", "/v1/messages", `{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"hello there"}]}`},
		{"anthropic stream", "/v1/messages", `{"model":"claude","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hello there"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestProxy(t, simpleConfig("", "a"), s.URL)
			resp := post(t, p.URL+tt.path, tt.body, "X-Mock-Chunks", "5")
			if body := readAll(t, resp); resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			m := p.Runtime.Groups[0].Members[0]
			prompt, completion := counterValue(m.PromptTokens), counterValue(m.CompletionTokens)
			if prompt != float64(len(tt.body)/4) || completion != 5 {
				t.Errorf("tokens prompt %v completion %v; want %d and 5", prompt, completion, len(tt.body)/4)
			}
		})
	}
}
