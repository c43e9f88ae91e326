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
	b = append(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"...)
	*buf = b
	if !sw.send(b) {
		return
	}
	ok := sendChunks(sw, out, p, buf, func(i int, b []byte) []byte {
		b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"...)
		b = appendJSONString(b, word(i))
		return append(b, "}}\n\n"...)
	})
	if !ok {
		return
	}
	b = append((*buf)[:0], "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"...)
	b = append(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":"...)
	b = strconv.AppendInt(b, int64(u.completion), 10)
	b = append(b, "}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"...)
	*buf = b
	if sw.send(b) {
		out.complete = true
	}
}
