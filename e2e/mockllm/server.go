package mockllm

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request header names: a contract for the tests and benchmarks that drive mockllm.
const (
	HeaderLatency    = "X-Mock-Latency"
	HeaderTTFT       = "X-Mock-Ttft" // canonical form of X-Mock-TTFT
	HeaderChunkGap   = "X-Mock-Chunk-Gap"
	HeaderChunks     = "X-Mock-Chunks"
	HeaderStatus     = "X-Mock-Status"
	HeaderRetryAfter = "X-Mock-Retry-After"
	HeaderFailTimes  = "X-Mock-Fail-Times"
	HeaderFailKey    = "X-Mock-Fail-Key"
	HeaderBreakAfter = "X-Mock-Break-After"
	HeaderBodySize   = "X-Mock-Body-Size"
	HeaderReasoning  = "X-Mock-Reasoning"
	HeaderTool       = "X-Mock-Tool"
	HeaderHangup     = "X-Mock-Hangup"
	// HeaderUpstream is set on every response to the Server's name.
	HeaderUpstream = "X-Mock-Upstream"
)

// maxChunks bounds X-Mock-Chunks and maxBodySize X-Mock-Body-Size, so a typo cannot exhaust memory.
const (
	maxChunks   = 1 << 20
	maxBodySize = 64 << 20
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Name is sent as X-Mock-Upstream on every response; "" means "mockllm".
	Name string
	// Behaviour is the startup server-wide behaviour, and what DELETE /_mock/behaviour returns to.
	Behaviour Behaviour
	// MaxRecords is how many requests are remembered; 0 means DefaultMaxRecords, a negative
	// value turns recording off (for benchmarks).
	MaxRecords int
	// Logger, when set, gets one line per API request; nil logs nothing.
	Logger *slog.Logger
}

// Server is the fake upstream. It is safe for concurrent use; create it with New.
type Server struct {
	name    string
	nameHdr []string
	// fixed is the answer of /_mock/fixed and fixedLen its Content-Length.
	fixed    []byte
	fixedLen []string
	base     Behaviour
	cur      atomic.Pointer[behaviourState]
	fails    failCounters
	records  *ring // nil when recording is off
	stats    counters
	logger   *slog.Logger
	ids      atomic.Uint64
}

var _ http.Handler = (*Server)(nil)

// New returns a Server, or an error when opts.Behaviour is invalid.
func New(opts Options) (*Server, error) {
	if err := opts.Behaviour.validate(); err != nil {
		return nil, fmt.Errorf("create mockllm: %w", err)
	}
	s := &Server{name: opts.Name, base: opts.Behaviour, logger: opts.Logger}
	if s.name == "" {
		s.name = "mockllm"
	}
	s.nameHdr = []string{s.name}
	s.fixed = appendChatCompletion(nil, 0, time.Now().Unix(), []byte(`"gpt-4o-mini"`), 5, 0, usage{prompt: 22, completion: 5})
	s.fixedLen = []string{strconv.Itoa(len(s.fixed))}
	switch n := opts.MaxRecords; {
	case n == 0:
		s.records = &ring{buf: make([]*Record, DefaultMaxRecords)}
	case n > 0:
		s.records = &ring{buf: make([]*Record, n)}
	}
	s.cur.Store(newBehaviourState(opts.Behaviour))
	return s, nil
}

// Name returns the name sent in X-Mock-Upstream.
func (s *Server) Name() string { return s.name }

// SetBehaviour replaces the server-wide behaviour (and restarts its FailTimes countdown).
func (s *Server) SetBehaviour(b Behaviour) error {
	if err := b.validate(); err != nil {
		return err
	}
	s.cur.Store(newBehaviourState(b))
	return nil
}

// ResetBehaviour returns to the startup behaviour and clears the X-Mock-Fail-Key counters.
func (s *Server) ResetBehaviour() {
	s.cur.Store(newBehaviourState(s.base))
	s.fails.reset()
}

// Behaviour returns the current server-wide behaviour.
func (s *Server) Behaviour() Behaviour { return s.cur.Load().b }

// Requests returns copies of the remembered requests with Seq > since, oldest first.
func (s *Server) Requests(since uint64) []Record {
	if s.records == nil {
		return []Record{}
	}
	return s.records.since(since)
}

// ClearRequests forgets the remembered requests; Seq keeps counting.
func (s *Server) ClearRequests() {
	if s.records != nil {
		s.records.clear()
	}
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Name:        s.name,
		Requests:    s.stats.requests.Load(),
		InFlight:    s.stats.inFlight.Load(),
		MaxInFlight: s.stats.maxInFlight.Load(),
		Cancelled:   s.stats.cancelled.Load(),
		Aborted:     s.stats.aborted.Load(),
		Errors:      s.stats.errors.Load(),
		Connections: s.stats.connections.Load(),
	}
	if s.records != nil {
		st.LastSeq = s.records.lastSeq()
	}
	return st
}

// ResetStats zeroes the request counters (Connections counts from the start); MaxInFlight
// restarts from the requests in flight now.
func (s *Server) ResetStats() { s.stats.reset() }

// ConnState is an http.Server ConnState hook that counts the connections accepted (in
// Stats.Connections), so a test can tell a client that reuses connections from one that
// opens one per request.
func (s *Server) ConnState(_ net.Conn, st http.ConnState) {
	if st == http.StateNew {
		s.stats.connections.Add(1)
	}
}

// ServeHTTP answers API requests and the /_mock/ admin endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()[HeaderUpstream] = s.nameHdr
	if strings.HasPrefix(r.URL.Path, "/_mock/") {
		s.serveAdmin(w, r)
		return
	}
	s.serveAPI(w, r)
}

// plan is what one request will get.
type plan struct {
	status     int
	retryAfter string
	latency    time.Duration
	ttft       time.Duration
	gap        time.Duration
	chunks     int
	bodySize   int
	breakAfter int    // -1: never
	reasoning  int    // reasoning chunks before the content (streams)
	tool       string // a tool the stream ends by calling; "" none
	hangup     bool   // close the connection without an answer
}

// planFor merges the server-wide behaviour with the request's X-Mock-* headers.
func (s *Server) planFor(h http.Header) (plan, error) {
	st := s.cur.Load()
	b := &st.b
	p := plan{
		retryAfter: b.RetryAfter, latency: b.Latency, ttft: b.TTFT, gap: b.ChunkGap,
		chunks: b.Chunks, bodySize: b.BodySize, breakAfter: -1, hangup: b.Hangup,
	}
	if p.chunks == 0 {
		p.chunks = DefaultChunks
	}
	if b.BreakAfter > 0 {
		p.breakAfter = b.BreakAfter
	}
	var err error
	durations := [...]struct {
		name string
		dst  *time.Duration
	}{{HeaderLatency, &p.latency}, {HeaderTTFT, &p.ttft}, {HeaderChunkGap, &p.gap}}
	for _, d := range durations {
		if v := headerValue(h, d.name); v != "" {
			if *d.dst, err = parseDuration(v); err != nil {
				return p, fmt.Errorf("bad %s %q", d.name, v)
			}
		}
	}
	ints := [...]struct {
		name string
		dst  *int
		max  int
	}{{HeaderChunks, &p.chunks, maxChunks}, {HeaderBreakAfter, &p.breakAfter, maxChunks},
		{HeaderBodySize, &p.bodySize, maxBodySize}, {HeaderReasoning, &p.reasoning, maxChunks}}
	for _, d := range ints {
		if v := headerValue(h, d.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > d.max {
				return p, fmt.Errorf("bad %s %q", d.name, v)
			}
			*d.dst = n
		}
	}
	if v := headerValue(h, HeaderRetryAfter); v != "" {
		p.retryAfter = v
	}
	p.tool = headerValue(h, HeaderTool)
	if v := headerValue(h, HeaderHangup); v != "" {
		if p.hangup, err = strconv.ParseBool(v); err != nil {
			return p, fmt.Errorf("bad %s %q", HeaderHangup, v)
		}
	}
	headerStatus := 0
	if v := headerValue(h, HeaderStatus); v != "" {
		if headerStatus, err = strconv.Atoi(v); err != nil || headerStatus < 200 || headerStatus > 599 {
			return p, fmt.Errorf("bad %s %q", HeaderStatus, v)
		}
	}
	var failing bool
	failStatus := b.Status
	if headerStatus != 0 {
		failStatus = headerStatus
	}
	switch v := headerValue(h, HeaderFailTimes); {
	case v != "":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return p, fmt.Errorf("bad %s %q", HeaderFailTimes, v)
		}
		failing = s.fails.next(headerValue(h, HeaderFailKey)) < n
	case headerStatus != 0:
		p.status = headerStatus
		return p, nil
	case b.FailTimes > 0:
		failing = st.takeFailure()
	default:
		p.status = b.Status
		return p, nil
	}
	if failing {
		p.status = failStatus
		if p.status < 300 {
			p.status = http.StatusBadGateway
		}
	}
	return p, nil
}

// headerValue is Header.Get for a name already in canonical form, without re-canonicalising.
func headerValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// outcome is filled in while a request is answered and recorded when it ends.
type outcome struct {
	status   int
	complete bool // the whole answer was written
	aborted  bool
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // do not keep huge buffers alive
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

func readBody(r *http.Request, dst []byte) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return dst, nil
	}
	if n := r.ContentLength; n > 0 && n < maxBodySize && int(n) > cap(dst) {
		dst = make([]byte, 0, n+1)
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Body.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// apiKind says which API a path belongs to.
type apiKind int

const (
	apiUnknown apiKind = iota
	apiChat
	apiEmbeddings
	apiModels
	apiMessages
)

func kindOf(path string) (apiKind, string) {
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return apiChat, http.MethodPost
	case strings.HasSuffix(path, "/embeddings"):
		return apiEmbeddings, http.MethodPost
	case strings.HasSuffix(path, "/models"):
		return apiModels, http.MethodGet
	case strings.HasSuffix(path, "/messages"):
		return apiMessages, http.MethodPost
	}
	return apiUnknown, ""
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.stats.enter()
	defer s.stats.leave()

	in := getBuf()
	defer putBuf(in)
	body, readErr := readBody(r, *in)
	*in = body[:0]

	var rec *Record
	if s.records != nil {
		rec = &Record{
			Time: start, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Header: r.Header.Clone(), Body: string(body), Upstream: s.name,
		}
		s.records.add(rec)
	}
	var out outcome
	defer s.finish(r, rec, &out, start)

	kind, method := kindOf(r.URL.Path)
	anthropic := kind == apiMessages
	if readErr != nil {
		return // the client went away while sending
	}
	p, err := s.planFor(r.Header)
	if err != nil {
		s.writeError(w, &out, anthropic, http.StatusBadRequest, "mockllm: "+err.Error(), "")
		return
	}
	if !sleep(r, p.latency) {
		return
	}
	if p.hangup {
		abort(&out)
	}
	if p.status >= 300 {
		s.writeError(w, &out, anthropic, p.status, "mockllm: injected status "+strconv.Itoa(p.status), p.retryAfter)
		return
	}
	if kind == apiUnknown {
		s.writeError(w, &out, false, http.StatusNotFound, "mockllm: no API at "+r.URL.Path, "")
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		s.writeError(w, &out, anthropic, http.StatusMethodNotAllowed, "mockllm: use "+method, "")
		return
	}
	status := http.StatusOK
	if p.status != 0 {
		status = p.status
	}
	switch kind {
	case apiModels:
		s.writeBody(w, &out, status, p.breakAfter, "application/json", modelsBody)
		return
	case apiEmbeddings:
		s.serveEmbeddings(w, &out, status, p, body)
		return
	}
	info, err := scanRequest(body)
	if err != nil {
		s.writeError(w, &out, anthropic, http.StatusBadRequest, "mockllm: request body: "+err.Error(), "")
		return
	}
	if len(info.model) == 0 {
		info.model = defaultModel
	}
	u := usage{prompt: max(1, len(body)/4), completion: p.chunks}
	id := s.ids.Add(1)
	switch {
	case kind == apiChat && info.stream:
		s.streamChat(w, r, &out, status, p, info, u, id)
	case kind == apiChat:
		s.writeComplete(w, &out, status, p, func(b []byte, pad int) []byte {
			return appendChatCompletion(b, id, start.Unix(), info.model, p.chunks, pad, u)
		})
	case info.stream:
		s.streamMessages(w, r, &out, status, p, info, u, id)
	default:
		s.writeComplete(w, &out, status, p, func(b []byte, pad int) []byte {
			return appendMessage(b, id, info.model, p.chunks, pad, u)
		})
	}
}

// finish records how a request ended; it runs deferred, also while an abort panic unwinds.
func (s *Server) finish(r *http.Request, rec *Record, out *outcome, start time.Time) {
	cancelled := !out.complete && !out.aborted && r.Context().Err() != nil
	if cancelled {
		s.stats.cancelled.Add(1)
	}
	if out.aborted {
		s.stats.aborted.Add(1)
	}
	if out.status >= 300 {
		s.stats.errors.Add(1)
	}
	d := time.Since(start)
	if rec != nil {
		s.records.finish(rec, func(rec *Record) {
			rec.Status, rec.Done, rec.Cancelled, rec.Aborted, rec.Duration = out.status, true, cancelled, out.aborted, d
		})
	}
	if s.logger != nil {
		s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", out.status), slog.Duration("duration", d),
			slog.Bool("cancelled", cancelled), slog.Bool("aborted", out.aborted))
	}
}

// sleep waits d unless the client leaves first; it reports whether the client is still there.
func sleep(r *http.Request, d time.Duration) bool {
	ctx := r.Context()
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// abort breaks the connection: net/http closes it (HTTP/1) or resets the stream (HTTP/2)
// without finishing the body.
func abort(out *outcome) {
	out.aborted = true
	panic(http.ErrAbortHandler)
}

// writeComplete sends a non-streaming JSON answer built by build, padded to p.bodySize.
func (s *Server) writeComplete(w http.ResponseWriter, out *outcome, status int, p plan, build func(b []byte, pad int) []byte) {
	buf := getBuf()
	defer putBuf(buf)
	b := build((*buf)[:0], 0)
	if pad := p.bodySize - len(b); pad > 0 {
		b = build(b[:0], pad)
	}
	*buf = b[:0]
	s.writeBody(w, out, status, p.breakAfter, "application/json", b)
}

// writeBody sends b with a Content-Length, or only its first breakAfter bytes and then aborts.
func (s *Server) writeBody(w http.ResponseWriter, out *outcome, status, breakAfter int, contentType string, b []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeHeader(contentType)
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	out.status = status
	if breakAfter >= 0 && breakAfter < len(b) {
		_, _ = w.Write(b[:breakAfter])
		_ = http.NewResponseController(w).Flush()
		abort(out)
	}
	if _, err := w.Write(b); err == nil {
		out.complete = true
	}
}

var (
	jsonCT        = []string{"application/json"}
	eventStreamCT = []string{"text/event-stream"}
	noCache       = []string{"no-cache"}
)

func contentTypeHeader(ct string) []string {
	switch ct {
	case "application/json":
		return jsonCT
	case "text/event-stream":
		return eventStreamCT
	}
	return []string{ct}
}

// writeError sends an OpenAI-shaped (or, for the Messages API, Anthropic-shaped) error.
func (s *Server) writeError(w http.ResponseWriter, out *outcome, anthropic bool, status int, msg, retryAfter string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	buf := getBuf()
	defer putBuf(buf)
	var b []byte
	if anthropic {
		b = append((*buf)[:0], `{"type":"error","error":{"type":`...)
		b = appendJSONString(b, anthropicErrorType(status))
		b = append(b, `,"message":`...)
		b = appendJSONString(b, msg)
		b = append(b, "}}"...)
	} else {
		b = append((*buf)[:0], `{"error":{"message":`...)
		b = appendJSONString(b, msg)
		b = append(b, `,"type":`...)
		b = appendJSONString(b, openAIErrorType(status))
		b = append(b, `,"code":`...)
		b = strconv.AppendInt(b, int64(status), 10)
		b = append(b, "}}"...)
	}
	*buf = b[:0]
	s.writeBody(w, out, status, -1, "application/json", b)
}

func openAIErrorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

func anthropicErrorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status == 529 || status == http.StatusServiceUnavailable:
		return "overloaded_error"
	case status >= 500:
		return "api_error"
	}
	return "invalid_request_error"
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// writer sends a stream's events, flushing each, and remembers a failed write.
type streamWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	r   *http.Request
	err error
}

func (s *Server) startStream(w http.ResponseWriter, r *http.Request, out *outcome, status int) *streamWriter {
	h := w.Header()
	h["Content-Type"] = eventStreamCT
	h["Cache-Control"] = noCache
	w.WriteHeader(status)
	out.status = status
	sw := &streamWriter{w: w, rc: http.NewResponseController(w), r: r}
	sw.err = sw.rc.Flush()
	return sw
}

func (sw *streamWriter) send(b []byte) bool {
	if sw.err != nil {
		return false
	}
	if _, sw.err = sw.w.Write(b); sw.err == nil {
		sw.err = sw.rc.Flush()
	}
	return sw.err == nil
}

// wait sleeps d before the next chunk; false when the client left.
func (sw *streamWriter) wait(d time.Duration) bool {
	return sw.err == nil && sleep(sw.r, d)
}

// sendChunks drives the content chunks of a stream: TTFT before the first, gap between the
// others, abort when breakAfter chunks went out. chunk(i, b) appends event i to b.
func sendChunks(sw *streamWriter, out *outcome, p plan, buf *[]byte, chunk func(i int, b []byte) []byte) bool {
	for i := 0; i < p.chunks; i++ {
		if p.breakAfter == i {
			abort(out)
		}
		d := p.gap
		if i == 0 {
			d = p.ttft
		}
		if !sw.wait(d) {
			return false
		}
		*buf = chunk(i, (*buf)[:0])
		if !sw.send(*buf) {
			return false
		}
	}
	if p.breakAfter == p.chunks {
		abort(out)
	}
	if p.chunks == 0 {
		return sw.wait(p.ttft)
	}
	return true
}

var (
	defaultModel = []byte(`"mock-model"`)
	modelsBody   = []byte(`{"object":"list","data":[` +
		`{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mockllm"},` +
		`{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mockllm"},` +
		`{"id":"claude-3-5-haiku-latest","object":"model","created":1700000000,"owned_by":"mockllm"},` +
		`{"id":"text-embedding-3-small","object":"model","created":1700000000,"owned_by":"mockllm"}]}`)
)

// words are the content chunks: chunk 0 is "Hello", the next ones cycle through the rest.
var words = [...]string{"Hello", " from", " mockllm", ",", " a", " fake", " upstream", " for",
	" tests", " and", " benchmarks", "."}

func word(i int) string {
	if i == 0 {
		return words[0]
	}
	return words[1+(i-1)%(len(words)-1)]
}

// appendContent appends the JSON-safe text of n chunks followed by pad padding bytes.
func appendContent(b []byte, n, pad int) []byte {
	for i := 0; i < n; i++ {
		b = append(b, word(i)...)
	}
	const filler = " lorem ipsum dolor sit amet"
	for pad > 0 {
		k := min(pad, len(filler))
		b = append(b, filler[:k]...)
		pad -= k
	}
	return b
}

type usage struct{ prompt, completion int }
