package mockllm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultChunks is the number of content chunks (words) of an answer when nothing says otherwise.
const DefaultChunks = 5

// Behaviour is how a Server answers when a request carries no X-Mock-* header saying otherwise.
// The zero value answers every request at once and successfully. In JSON, durations are strings
// with a unit ("100ms"; a bare number means milliseconds):
//
//	{"status":503,"retry_after":"1","fail_times":0,"latency":"100ms","ttft":"0s",
//	 "chunk_gap":"0s","chunks":5,"body_size":0,"break_after":0,"hangup":false}
type Behaviour struct {
	// Status, when ≥300, makes every answer an error with this status (see FailTimes);
	// a 2xx only replaces 200. 0 means 200.
	Status int
	// RetryAfter is copied into the Retry-After header of error answers; "" sends none.
	RetryAfter string
	// FailTimes > 0 limits the failure to the next FailTimes requests (with Status, or 502 when
	// Status is not an error); the ones after succeed. It counts down from each SetBehaviour.
	FailTimes int
	// Latency delays the response headers.
	Latency time.Duration
	// TTFT delays a stream's first content chunk after the headers.
	TTFT time.Duration
	// ChunkGap separates a stream's content chunks.
	ChunkGap time.Duration
	// Chunks is the number of content chunks; 0 means DefaultChunks (ask for none with the
	// X-Mock-Chunks header).
	Chunks int
	// BodySize pads non-streaming answers to about this many bytes; 0 means no padding.
	BodySize int
	// BreakAfter > 0 aborts every stream after that many content chunks (and non-streaming
	// answers after that many body bytes); 0 means never.
	BreakAfter int
	// Hangup makes every request, once its body is read (and recorded), end with the
	// connection closed and no answer at all: an upstream lost after the request was sent.
	Hangup bool
}

// MarshalJSON writes every field, durations as strings.
func (b Behaviour) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Status     int    `json:"status"`
		RetryAfter string `json:"retry_after"`
		FailTimes  int    `json:"fail_times"`
		Latency    string `json:"latency"`
		TTFT       string `json:"ttft"`
		ChunkGap   string `json:"chunk_gap"`
		Chunks     int    `json:"chunks"`
		BodySize   int    `json:"body_size"`
		BreakAfter int    `json:"break_after"`
		Hangup     bool   `json:"hangup"`
	}{b.Status, b.RetryAfter, b.FailTimes, b.Latency.String(), b.TTFT.String(), b.ChunkGap.String(),
		b.Chunks, b.BodySize, b.BreakAfter, b.Hangup})
}

// UnmarshalJSON sets the fields present in data and leaves the others as they are, so decoding
// into a copy of a base Behaviour applies a partial update. Unknown fields are an error.
func (b *Behaviour) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("decode behaviour: %w", err)
	}
	next := *b
	for k, v := range raw {
		var err error
		switch k {
		case "status":
			err = json.Unmarshal(v, &next.Status)
		case "retry_after":
			err = json.Unmarshal(v, &next.RetryAfter)
			if err != nil { // accept a number of seconds too
				var n int
				if json.Unmarshal(v, &n) == nil {
					next.RetryAfter, err = strconv.Itoa(n), nil
				}
			}
		case "fail_times":
			err = json.Unmarshal(v, &next.FailTimes)
		case "latency":
			next.Latency, err = decodeDuration(v)
		case "ttft":
			next.TTFT, err = decodeDuration(v)
		case "chunk_gap":
			next.ChunkGap, err = decodeDuration(v)
		case "chunks":
			err = json.Unmarshal(v, &next.Chunks)
		case "body_size":
			err = json.Unmarshal(v, &next.BodySize)
		case "break_after":
			err = json.Unmarshal(v, &next.BreakAfter)
		case "hangup":
			err = json.Unmarshal(v, &next.Hangup)
		default:
			err = fmt.Errorf("unknown field")
		}
		if err != nil {
			return fmt.Errorf("decode behaviour field %q: %w", k, err)
		}
	}
	if err := next.validate(); err != nil {
		return err
	}
	*b = next
	return nil
}

func (b Behaviour) validate() error {
	switch {
	case b.Status != 0 && (b.Status < 200 || b.Status > 599):
		return fmt.Errorf("validate behaviour: status %d out of range", b.Status)
	case b.FailTimes < 0, b.Chunks < 0, b.BodySize < 0, b.BreakAfter < 0:
		return fmt.Errorf("validate behaviour: counts must not be negative")
	case b.Latency < 0, b.TTFT < 0, b.ChunkGap < 0:
		return fmt.Errorf("validate behaviour: durations must not be negative")
	}
	return nil
}

// decodeDuration reads "150ms" or a number of milliseconds.
func decodeDuration(v json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return parseDuration(s)
	}
	var ms float64
	if err := json.Unmarshal(v, &ms); err != nil {
		return 0, fmt.Errorf("want a duration string or milliseconds")
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// parseDuration reads a Go duration, or a bare integer of milliseconds.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("negative duration %q", s)
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// behaviourState is one installed Behaviour with its own countdown of FailTimes.
type behaviourState struct {
	b        Behaviour
	failLeft atomic.Int64
}

func newBehaviourState(b Behaviour) *behaviourState {
	s := &behaviourState{b: b}
	s.failLeft.Store(int64(b.FailTimes))
	return s
}

// takeFailure reports whether this request is one of the FailTimes failures.
func (s *behaviourState) takeFailure() bool {
	for {
		n := s.failLeft.Load()
		if n <= 0 {
			return false
		}
		if s.failLeft.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// failCounters counts requests per X-Mock-Fail-Key.
type failCounters struct {
	mu   sync.Mutex
	seen map[string]int
}

// next counts one more request for key and returns how many came before it.
func (f *failCounters) next(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = make(map[string]int)
	}
	n := f.seen[key]
	f.seen[key] = n + 1
	return n
}

func (f *failCounters) reset() {
	f.mu.Lock()
	f.seen = nil
	f.mu.Unlock()
}
