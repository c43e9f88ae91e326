package mockllm

import (
	"net/http"
	"strconv"
)

// appendMessage appends an Anthropic Messages API message object.
func appendMessage(b []byte, id uint64, model []byte, chunks, pad int, u usage) []byte {
	b = append(b, `{"id":"msg_mock_`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, model...)
	b = append(b, `,"content":[{"type":"text","text":"`...)
	b = appendContent(b, chunks, pad)
	b = append(b, `"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(u.completion), 10)
	return append(b, "}}"...)
}

// streamMessages answers a Messages request as Anthropic's SSE stream.
func (s *Server) streamMessages(w http.ResponseWriter, r *http.Request, out *outcome, status int, p plan, info requestInfo, u usage, id uint64) {
	sw := s.startStream(w, r, out, status)
	buf := getBuf()
	defer putBuf(buf)
	b := append((*buf)[:0], "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_"...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, info.model...)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt), 10)
	b = append(b, ",\"output_tokens\":1}}}\n\n"...)
	text := 0 // the index of the text block
	if p.reasoning > 0 {
		b = append(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"...)
		for i := range p.reasoning {
			b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":"...)
			b = appendJSONString(b, thought(i))
			b = append(b, "}}\n\n"...)
		}
		b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"bW9ja2xsbQ==\"}}\n\n"...)
		b = append(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"...)
		text = 1
	}
	b = appendBlockEvent(b, "content_block_start", text, `"content_block":{"type":"text","text":""}`)
	*buf = b
	if !sw.send(b) {
		return
	}
	ok := sendChunks(sw, out, p, buf, func(i int, b []byte) []byte {
		b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":"...)
		b = strconv.AppendInt(b, int64(text), 10)
		b = append(b, ",\"delta\":{\"type\":\"text_delta\",\"text\":"...)
		b = appendJSONString(b, word(i))
		return append(b, "}}\n\n"...)
	})
	if !ok {
		return
	}
	b = appendBlockEvent((*buf)[:0], "content_block_stop", text, "")
	stop := "end_turn"
	if p.tool != "" {
		stop = "tool_use"
		b = append(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":"...)
		b = strconv.AppendInt(b, int64(text+1), 10)
		b = append(b, `,"content_block":{"type":"tool_use","id":"toolu_mock_`...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, `","name":`...)
		b = appendJSONString(b, p.tool)
		b = append(b, ",\"input\":{}}}\n\n"...)
		for _, part := range toolArguments {
			b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":"...)
			b = strconv.AppendInt(b, int64(text+1), 10)
			b = append(b, `,"delta":{"type":"input_json_delta","partial_json":`...)
			b = appendJSONString(b, part)
			b = append(b, "}}\n\n"...)
		}
		b = appendBlockEvent(b, "content_block_stop", text+1, "")
	}
	b = append(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\""...)
	b = append(b, stop...)
	b = append(b, "\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":"...)
	b = strconv.AppendInt(b, int64(u.completion), 10)
	b = append(b, "}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"...)
	*buf = b
	if sw.send(b) {
		out.complete = true
	}
}

// appendBlockEvent appends a content block event (content_block_start or _stop) of block
// index, with extra JSON members (without a leading comma) when not empty.
func appendBlockEvent(b []byte, event string, index int, extra string) []byte {
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: {\"type\":\""...)
	b = append(b, event...)
	b = append(b, "\",\"index\":"...)
	b = strconv.AppendInt(b, int64(index), 10)
	if extra != "" {
		b = append(b, ',')
		b = append(b, extra...)
	}
	return append(b, "}\n\n"...)
}

// toolArguments are the pieces in which a tool call's arguments are streamed.
var toolArguments = [...]string{`{"city":`, `"Paris"}`}

// thoughts are the reasoning chunks, cycled.
var thoughts = [...]string{"Let me think", " about", " the", " question", "."}

func thought(i int) string { return thoughts[i%len(thoughts)] }
