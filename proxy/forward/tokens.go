package forward

import (
	"bytes"
	"encoding/json"
)

// maxSSELine bounds the bytes kept for one unfinished SSE line; a longer line is skipped
// by the scanner (it is still relayed untouched).
const maxSSELine = 256 << 10

// sseScanner splits a byte stream, fed in arbitrary pieces, into lines ("\n" or "\r\n"
// terminated) and calls onLine for each. Complete lines inside a piece are passed as
// sub-slices of it (no copy); only an unfinished line at the end of a piece is copied, so
// the scanner never holds back or duplicates the relayed stream. onLine must not keep the
// slice.
type sseScanner struct {
	carry  []byte
	skip   bool
	onLine func(line []byte)
}

// Write feeds p; it never fails.
func (s *sseScanner) Write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if s.skip {
				return
			}
			if len(s.carry)+len(p) > maxSSELine {
				s.skip, s.carry = true, s.carry[:0]
				return
			}
			s.carry = append(s.carry, p...)
			return
		}
		line := p[:i]
		p = p[i+1:]
		if s.skip {
			s.skip = false
			continue
		}
		if len(s.carry) > 0 {
			if len(s.carry)+len(line) > maxSSELine {
				s.carry = s.carry[:0]
				continue
			}
			s.carry = append(s.carry, line...)
			line = s.carry
		}
		s.emit(line)
		s.carry = s.carry[:0]
	}
}

// Close emits an unterminated last line.
func (s *sseScanner) Close() {
	if len(s.carry) > 0 && !s.skip {
		s.emit(s.carry)
	}
	s.carry, s.skip = s.carry[:0], false
}

func (s *sseScanner) emit(line []byte) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	s.onLine(line)
}

// sseData returns the payload of an SSE "data:" line and whether it is one.
func sseData(line []byte) ([]byte, bool) {
	if !bytes.HasPrefix(line, dataPrefix) {
		return nil, false
	}
	line = line[len(dataPrefix):]
	if len(line) > 0 && line[0] == ' ' {
		line = line[1:]
	}
	return line, true
}

var (
	dataPrefix = []byte("data:")
	usageKey   = []byte(`"usage"`)
	promptKey  = []byte(`"prompt_tokens"`)
	complKey   = []byte(`"completion_tokens"`)
	inputKey   = []byte(`"input_tokens"`)
	outputKey  = []byte(`"output_tokens"`)
	cacheCrKey = []byte(`"cache_creation_input_tokens"`)
	cacheRdKey = []byte(`"cache_read_input_tokens"`)
	modelKey   = []byte(`"model"`)
)

// usage accumulates token counts read from an answer. OpenAI reports prompt_tokens and
// completion_tokens (non-stream answers, and the final chunk of a stream with
// stream_options.include_usage); Anthropic reports input_tokens (plus cache creation and
// cache read input tokens, counted as prompt tokens) in message_start and a cumulative
// output_tokens in message_delta. Counts only grow: the largest value seen wins, which
// makes cumulative and final reports agree.
type usage struct {
	prompt, completion int64
	seen               bool
}

// scan looks for a "usage" object in one JSON document (or SSE data payload) and merges
// its counts. It does not allocate.
func (u *usage) scan(doc []byte) {
	for {
		i := bytes.Index(doc, usageKey)
		if i < 0 {
			return
		}
		doc = doc[i+len(usageKey):]
		j := skipSpace(doc, 0)
		if j >= len(doc) || doc[j] != ':' {
			continue
		}
		j = skipSpace(doc, j+1)
		if j >= len(doc) || doc[j] != '{' {
			continue // null or something else; a later "usage" may be the real one
		}
		end := objectEnd(doc, j)
		if end < 0 {
			return
		}
		obj := doc[j:end]
		var prompt int64
		var found bool
		if v, ok := intField(obj, promptKey); ok {
			prompt, found = v, true
		}
		if v, ok := intField(obj, inputKey); ok {
			prompt, found = v, true
			if c, ok := intField(obj, cacheCrKey); ok {
				prompt += c
			}
			if c, ok := intField(obj, cacheRdKey); ok {
				prompt += c
			}
		}
		if found && prompt > u.prompt {
			u.prompt = prompt
		}
		if v, ok := intField(obj, complKey); ok {
			found = true
			u.completion = max(u.completion, v)
		}
		if v, ok := intField(obj, outputKey); ok {
			found = true
			u.completion = max(u.completion, v)
		}
		u.seen = u.seen || found
		doc = doc[end:]
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// objectEnd returns the index just past the JSON object or array starting at b[i], or -1
// when it does not end within b.
func objectEnd(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = stringEnd(b, i) - 1
			if i < 0 {
				return -1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// stringEnd returns the index just past the JSON string starting at b[i] (a quote), or 0
// when it does not end within b.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return 0
}

// intField finds key (quoted) directly or nested in obj and parses the non-negative
// integer after it.
func intField(obj, key []byte) (int64, bool) {
	i := bytes.Index(obj, key)
	if i < 0 {
		return 0, false
	}
	j := skipSpace(obj, i+len(key))
	if j >= len(obj) || obj[j] != ':' {
		return 0, false
	}
	j = skipSpace(obj, j+1)
	var v int64
	start := j
	for ; j < len(obj) && obj[j] >= '0' && obj[j] <= '9'; j++ {
		v = v*10 + int64(obj[j]-'0')
		if v > 1<<50 {
			return 0, false
		}
	}
	return v, j > start
}

// topLevelString returns the value of key at the top level of the JSON object doc when
// it is a string, and whether it found one (escaped strings are decoded with encoding/json).
// Nested keys of the same name are ignored.
func topLevelString(doc, key []byte) (string, bool) {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return "", false
	}
	i++
	for {
		i = skipSpace(doc, i)
		if i >= len(doc) || doc[i] != '"' {
			return "", false
		}
		kEnd := stringEnd(doc, i)
		if kEnd == 0 {
			return "", false
		}
		isKey := bytes.Equal(doc[i:kEnd], key)
		i = skipSpace(doc, kEnd)
		if i >= len(doc) || doc[i] != ':' {
			return "", false
		}
		i = skipSpace(doc, i+1)
		if i >= len(doc) {
			return "", false
		}
		switch c := doc[i]; {
		case c == '"':
			vEnd := stringEnd(doc, i)
			if vEnd == 0 {
				return "", false
			}
			if isKey {
				v := doc[i+1 : vEnd-1]
				if bytes.IndexByte(v, '\\') >= 0 {
					var out string
					if json.Unmarshal(doc[i:vEnd], &out) != nil {
						return "", false
					}
					return out, true
				}
				return string(v), true
			}
			i = vEnd
		case c == '{' || c == '[':
			if isKey {
				return "", false
			}
			end := objectEnd(doc, i)
			if end < 0 {
				return "", false
			}
			i = end
		default:
			if isKey {
				return "", false
			}
			for i < len(doc) && doc[i] != ',' && doc[i] != '}' {
				i++
			}
		}
		i = skipSpace(doc, i)
		if i >= len(doc) || doc[i] != ',' {
			return "", false
		}
		i++
	}
}
