package forward

import (
	"bytes"
	"strings"
)

// Usage of streams whose client did not ask for it. An OpenAI chat or text completion
// streamed without stream_options.include_usage reports no tokens; for a consumer's
// request the proxy sets include_usage in the body it sends upstream, reads the usage from
// the extra chunk, and gives the client the stream it asked for: the usage chunk (and the
// blank line ending its event) is dropped and the "usage":null that OpenAI adds to every
// other chunk is removed, so the client's bytes are the ones it would get without the
// proxy. Anthropic streams report usage in their message_start and message_delta events
// whatever the request says.

var (
	streamKey        = []byte(`"stream"`)
	streamOptionsKey = []byte(`"stream_options"`)
	includeUsageKey  = []byte(`"include_usage"`)
	choicesKey       = []byte(`"choices"`)
	jsonTrue         = []byte("true")
	usageNull        = []byte(`"usage":null`)
)

// requestUsage rewrites the body of a consumer's streamed OpenAI completion that does not
// ask for usage so that it does, and has the answer stripped back (ex.stripUsage).
func (ex *exchange) requestUsage() {
	if ex.body == nil {
		return
	}
	p := ex.r.URL.Path
	if !strings.HasSuffix(p, "/chat/completions") && !strings.HasSuffix(p, "/completions") {
		return
	}
	out, ok := withIncludeUsage(ex.body.data())
	if !ok {
		return
	}
	ex.body.release()
	ex.body = &replayable{mem: out}
	ex.stripUsage = true
}

// withIncludeUsage returns body with stream_options.include_usage set to true, and true,
// when body is a JSON object with "stream": true whose stream_options does not already ask
// for usage; otherwise nil and false. Only the bytes it changes differ.
func withIncludeUsage(body []byte) ([]byte, bool) {
	s, e, ok := topLevelValue(body, streamKey)
	if !ok || !bytes.Equal(body[s:e], jsonTrue) {
		return nil, false
	}
	s, e, ok = topLevelValue(body, streamOptionsKey)
	switch {
	case !ok:
		// Insert the member first: {"stream_options":{"include_usage":true}, …}.
		open := skipSpace(body, 0)
		return splice(body, open+1, open+1, `"stream_options":{"include_usage":true},`), true
	case bytes.Equal(body[s:e], []byte("null")):
		return splice(body, s, e, `{"include_usage":true}`), true
	case body[s] != '{':
		return nil, false // not an object: leave the request alone, the upstream judges it
	}
	opts := body[s:e]
	is, ie, found := topLevelValue(opts, includeUsageKey)
	switch {
	case found && bytes.Equal(opts[is:ie], jsonTrue):
		return nil, false
	case found:
		return splice(body, s+is, s+ie, "true"), true
	case body[skipSpace(body, s+1)] == '}':
		return splice(body, s+1, s+1, `"include_usage":true`), true
	}
	return splice(body, s+1, s+1, `"include_usage":true,`), true
}

// splice returns a new slice: b with b[from:to] replaced by with.
func splice(b []byte, from, to int, with string) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(with))
	out = append(out, b[:from]...)
	out = append(out, with...)
	return append(out, b[to:]...)
}

// topLevelValue returns the span of the value of key (quoted) at the top level of the
// JSON object doc, and whether it is there.
func topLevelValue(doc, key []byte) (start, end int, ok bool) {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return 0, 0, false
	}
	i++
	for {
		i = skipSpace(doc, i)
		if i >= len(doc) || doc[i] != '"' {
			return 0, 0, false
		}
		kEnd := stringEnd(doc, i)
		if kEnd == 0 {
			return 0, 0, false
		}
		isKey := bytes.Equal(doc[i:kEnd], key)
		i = skipSpace(doc, kEnd)
		if i >= len(doc) || doc[i] != ':' {
			return 0, 0, false
		}
		i = skipSpace(doc, i+1)
		if i >= len(doc) {
			return 0, 0, false
		}
		vStart := i
		switch c := doc[i]; {
		case c == '"':
			if i = stringEnd(doc, i); i == 0 {
				return 0, 0, false
			}
		case c == '{' || c == '[':
			if i = objectEnd(doc, i); i < 0 {
				return 0, 0, false
			}
		default:
			for i < len(doc) && doc[i] != ',' && doc[i] != '}' && doc[i] != ' ' && doc[i] != '\t' && doc[i] != '\n' && doc[i] != '\r' {
				i++
			}
		}
		if isKey {
			return vStart, i, true
		}
		i = skipSpace(doc, i)
		if i >= len(doc) || doc[i] != ',' {
			return 0, 0, false
		}
		i++
	}
}

// usageStripper gives a client the stream it asked for from one that carries usage it did
// not ask for (see the comment at the top of this file). It works on whole lines: the
// bytes of a line are held until its end arrives, and every line is passed on unchanged but
// for the two edits. Not safe for concurrent use.
type usageStripper struct {
	carry     []byte // an unfinished line
	dropBlank bool   // the next line, when blank, ends a dropped event
	out       []byte
}

// filter returns what the client gets of p (valid until the next call).
func (s *usageStripper) filter(p []byte) []byte {
	s.out = s.out[:0]
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.carry = append(s.carry, p...)
			break
		}
		line := p[:i+1]
		p = p[i+1:]
		if len(s.carry) > 0 {
			s.carry = append(s.carry, line...)
			line = s.carry
		}
		s.line(line)
		s.carry = s.carry[:0]
	}
	return s.out
}

// flush returns an unfinished last line, unchanged.
func (s *usageStripper) flush() []byte {
	out := s.carry
	s.carry = nil
	return out
}

// line handles one line, its terminator included.
func (s *usageStripper) line(line []byte) {
	body := bytes.TrimRight(line, "\r\n")
	if len(body) == 0 {
		if s.dropBlank {
			s.dropBlank = false
			return
		}
		s.out = append(s.out, line...)
		return
	}
	s.dropBlank = false
	data, ok := sseData(body)
	if !ok || len(data) == 0 || data[0] != '{' {
		s.out = append(s.out, line...)
		return
	}
	if isUsageChunk(data) {
		s.dropBlank = true
		return
	}
	if i := topLevelMember(data, usageNull); i >= 0 {
		start := len(body) - len(data) + i // data ends body, which starts line
		end := start + len(usageNull)
		// Remove the member and one comma next to it, the one before, else the one after;
		// without one (a spaced-out object) the line stays as it is.
		switch {
		case start > 0 && line[start-1] == ',':
			start--
		case end < len(line) && line[end] == ',':
			end++
		default:
			s.out = append(s.out, line...)
			return
		}
		s.out = append(s.out, line[:start]...)
		s.out = append(s.out, line[end:]...)
		return
	}
	s.out = append(s.out, line...)
}

// isUsageChunk reports whether data is the chunk include_usage adds: "choices" is an empty
// list and "usage" an object.
func isUsageChunk(data []byte) bool {
	s, e, ok := topLevelValue(data, choicesKey)
	if !ok || data[s] != '[' || len(bytes.TrimSpace(data[s+1:e-1])) != 0 {
		return false
	}
	s, _, ok = topLevelValue(data, usageKey)
	return ok && data[s] == '{'
}

// topLevelMember returns the offset in doc of the top-level member spelled exactly as
// member ("key":value, without spaces), or -1.
func topLevelMember(doc, member []byte) int {
	key := member[:bytes.IndexByte(member, ':')]
	s, e, ok := topLevelValue(doc, key)
	if !ok {
		return -1
	}
	start := s - len(key) - 1 // the key and the colon, when nothing stands between them
	if start < 0 || !bytes.Equal(doc[start:e], member) {
		return -1
	}
	return start
}
