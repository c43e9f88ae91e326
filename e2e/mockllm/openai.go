package mockllm

import (
	"encoding/json"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"time"
)

// appendChatCompletion appends a chat.completion object.
func appendChatCompletion(b []byte, id uint64, created int64, model []byte, chunks, pad int, u usage) []byte {
	b = append(b, `{"id":"chatcmpl-mock-`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `","object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = append(b, model...)
	b = append(b, `,"system_fingerprint":"fp_mockllm","choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	b = appendContent(b, chunks, pad)
	b = append(b, `","refusal":null},"logprobs":null,"finish_reason":"stop"}],`...)
	b = appendOpenAIUsage(b, u)
	return append(b, '}')
}

func appendOpenAIUsage(b []byte, u usage) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt+u.completion), 10)
	return append(b, '}')
}

// appendChunkHead appends the start of a chat.completion.chunk SSE event, up to "choices":.
func appendChunkHead(b []byte, id uint64, created int64, model []byte) []byte {
	b = append(b, `data: {"id":"chatcmpl-mock-`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `","object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = append(b, model...)
	return append(b, `,"system_fingerprint":"fp_mockllm","choices":`...)
}

// appendChunkEnd ends a chunk that is not the usage chunk: with include_usage, OpenAI gives
// every such chunk "usage":null.
func appendChunkEnd(b []byte, includeUsage bool) []byte {
	if includeUsage {
		b = append(b, `,"usage":null`...)
	}
	return append(b, "}\n\n"...)
}

// streamChat answers a chat completion as OpenAI's SSE stream.
func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, out *outcome, status int, p plan, info requestInfo, u usage, id uint64) {
	now := time.Now().Unix()
	sw := s.startStream(w, r, out, status)
	buf := getBuf()
	defer putBuf(buf)
	if p.reasoning > 0 {
		b := (*buf)[:0]
		for i := range p.reasoning {
			b = appendChunkHead(b, id, now, info.model)
			b = append(b, `[{"index":0,"delta":{`...)
			if i == 0 {
				b = append(b, `"role":"assistant",`...)
			}
			b = append(b, `"content":null,"reasoning_content":`...)
			b = appendJSONString(b, thought(i))
			b = append(b, "},\"logprobs\":null,\"finish_reason\":null}]"...)
			b = appendChunkEnd(b, info.includeUsage)
		}
		*buf = b
		if !sw.send(b) {
			return
		}
	}
	ok := sendChunks(sw, out, p, buf, func(i int, b []byte) []byte {
		b = appendChunkHead(b, id, now, info.model)
		b = append(b, `[{"index":0,"delta":{`...)
		if i == 0 && p.reasoning == 0 {
			b = append(b, `"role":"assistant",`...)
		}
		b = append(b, `"content":`...)
		b = appendJSONString(b, word(i))
		b = append(b, "},\"logprobs\":null,\"finish_reason\":null}]"...)
		return appendChunkEnd(b, info.includeUsage)
	})
	if !ok {
		return
	}
	b := (*buf)[:0]
	finish := `"stop"`
	if p.tool != "" {
		finish = `"tool_calls"`
		for i, part := range toolArguments {
			b = appendChunkHead(b, id, now, info.model)
			b = append(b, `[{"index":0,"delta":{"tool_calls":[{"index":0,`...)
			if i == 0 {
				b = append(b, `"id":"call_mock_`...)
				b = strconv.AppendUint(b, id, 10)
				b = append(b, `","type":"function","function":{"name":`...)
				b = appendJSONString(b, p.tool)
				b = append(b, `,"arguments":`...)
			} else {
				b = append(b, `"function":{"arguments":`...)
			}
			b = appendJSONString(b, part)
			b = append(b, "}}]},\"logprobs\":null,\"finish_reason\":null}]"...)
			b = appendChunkEnd(b, info.includeUsage)
		}
	}
	b = appendChunkHead(b, id, now, info.model)
	if p.chunks == 0 && p.reasoning == 0 && p.tool == "" {
		b = append(b, `[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":"stop"}]`...)
	} else {
		b = append(b, `[{"index":0,"delta":{},"logprobs":null,"finish_reason":`...)
		b = append(b, finish...)
		b = append(b, "}]"...)
	}
	b = appendChunkEnd(b, info.includeUsage)
	if info.includeUsage {
		b = appendChunkHead(b, id, now, info.model)
		b = append(b, `[],`...)
		b = appendOpenAIUsage(b, u)
		b = append(b, "}\n\n"...)
	}
	b = append(b, "data: [DONE]\n\n"...)
	*buf = b
	if sw.send(b) {
		out.complete = true
	}
}

// serveEmbeddings answers one deterministic 8-dimensional vector per input. It is not on the
// benchmark path, so it decodes the request with encoding/json.
func (s *Server) serveEmbeddings(w http.ResponseWriter, out *outcome, status int, p plan, body []byte) {
	var req struct {
		Model json.RawMessage `json:"model"`
		Input json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Input) == 0 {
		s.writeError(w, out, false, http.StatusBadRequest, "mockllm: embeddings need a JSON body with \"input\"", "")
		return
	}
	inputs := []json.RawMessage{req.Input}
	var list []json.RawMessage
	if json.Unmarshal(req.Input, &list) == nil && len(list) > 0 && list[0][0] != '-' && (list[0][0] < '0' || list[0][0] > '9') {
		inputs = list // a list of inputs, not one list of token ids
	}
	model := []byte(req.Model)
	if len(model) == 0 || model[0] != '"' {
		model = defaultModel
	}
	b := append([]byte(nil), `{"object":"list","data":[`...)
	for i, in := range inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":[`...)
		h := fnv.New64a()
		_, _ = h.Write(in)
		seed := h.Sum64()
		for d := 0; d < 8; d++ {
			if d > 0 {
				b = append(b, ',')
			}
			seed = seed*6364136223846793005 + 1442695040888963407
			v := float64(int64(seed>>11)%2000-1000) / 1000
			b = strconv.AppendFloat(b, math.Round(v*1e6)/1e6, 'f', -1, 64)
		}
		b = append(b, "]}"...)
	}
	prompt := max(1, len(req.Input)/4)
	b = append(b, `],"model":`...)
	b = append(b, model...)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, "}}"...)
	s.writeBody(w, out, status, p.breakAfter, "application/json", b)
}
