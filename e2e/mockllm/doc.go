// Package mockllm is a fake OpenAI- and Anthropic-compatible upstream for demos, tests and
// benchmarks. A *Server is an http.Handler; the mockllm binary (e2e/cmd/mockllm) serves one.
//
// # API endpoints
//
// Paths are matched by suffix, so any base path works (/v1/chat/completions,
// /openai/v1/chat/completions and /openai/deployments/x/chat/completions all reach the same
// handler):
//
//	POST …/chat/completions   OpenAI chat completion; "stream": true answers text/event-stream
//	POST …/embeddings         OpenAI embeddings (one 8-dimensional vector per input)
//	GET  …/models             OpenAI model list
//	POST …/messages           Anthropic Messages; "stream": true answers the Anthropic SSE events
//
// Any other path answers 404 with an error JSON (and is recorded like every API request).
// The answer echoes the request's "model" (default "mock-model"). Prompt tokens are
// len(body)/4 (at least 1); completion tokens equal the number of content chunks, one word each,
// so a streamed and a non-streamed answer to the same request carry the same text and usage.
//
// OpenAI streams send one chat.completion.chunk per content chunk (the first also carries
// "role":"assistant"), then a chunk with "finish_reason":"stop", then — only when the request
// has "stream_options":{"include_usage":true}, as the real API does — a chunk with empty
// "choices" and "usage", then "data: [DONE]"; with include_usage every other chunk carries
// "usage":null, as the real API's do. Anthropic streams send message_start,
// content_block_start, one content_block_delta per chunk, content_block_stop, message_delta
// (with usage) and message_stop.
//
// # Request headers (contract)
//
// Each header overrides the server-wide Behaviour for one request. Durations are Go durations
// ("150ms", "2s"); a bare integer means milliseconds. A malformed value answers 400.
//
//	X-Mock-Latency      delay before the response headers are written
//	X-Mock-TTFT         streams: delay between the headers and the first content chunk
//	                    (Anthropic's message_start and content_block_start go out with the headers)
//	X-Mock-Chunk-Gap    streams: delay between content chunks
//	X-Mock-Chunks       number of content chunks (words), default 5; 0 is allowed
//	X-Mock-Status       answer with this status: ≥300 gives an error JSON (OpenAI shape
//	                    {"error":{"message","type","code"}}; on …/messages the Anthropic shape
//	                    {"type":"error","error":{"type","message"}}); a 2xx only sets the status
//	X-Mock-Retry-After  copied into Retry-After on an error answer
//	X-Mock-Fail-Times   N: the first N requests carrying the same X-Mock-Fail-Key (default "")
//	X-Mock-Fail-Key     fail with X-Mock-Status (502 when absent or not an error), later ones
//	                    succeed; for retry tests. Counters are per key and live until
//	                    DELETE /_mock/behaviour.
//	X-Mock-Break-After  N: streams abort the connection abruptly after N content chunks (0: right
//	                    after the headers); non-streaming answers abort after N body bytes.
//	                    No terminating chunk, no [DONE]: a mid-stream upstream failure.
//	X-Mock-Body-Size    pad a non-streaming answer's content to about N bytes in total
//	X-Mock-Reasoning    N: streams send N reasoning chunks before the content (OpenAI: deltas
//	                    with "reasoning_content", as DeepSeek and vLLM send them; Anthropic: a
//	                    thinking block with thinking_delta events and a signature_delta)
//	X-Mock-Tool         NAME: streams end with a call of tool NAME with the arguments
//	                    {"city":"Paris"}, sent in two pieces (OpenAI: tool_calls deltas and
//	                    finish_reason "tool_calls"; Anthropic: a tool_use block with
//	                    input_json_delta events and stop_reason "tool_use"). Usage is unchanged.
//	X-Mock-Hangup       true: read the request, then close the connection without any answer
//	                    (an upstream lost after the request was written)
//
// Every response, admin ones included, carries X-Mock-Upstream: <Options.Name>.
//
// # Admin endpoints (not recorded, not affected by Behaviour)
//
//	GET    /_mock/health      200 {"status":"ok","name":…}
//	GET    /_mock/behaviour   current server-wide Behaviour as JSON
//	POST   /_mock/behaviour   set it: the JSON fields given (see Behaviour) are applied on top of
//	                          the startup Options.Behaviour, so each POST is idempotent, e.g.
//	                          {"status":503,"latency":"100ms"} or {"fail_times":2,"status":502}
//	DELETE /_mock/behaviour   back to the startup Behaviour; fail-key counters cleared
//	GET    /_mock/requests    recorded requests as a JSON array of Record, oldest first;
//	                          ?since=N returns only those with seq > N
//	DELETE /_mock/requests    forget the recorded requests (seq keeps counting)
//	GET    /_mock/stats       Stats: requests, in_flight, max_in_flight, cancelled, …,
//	                          connections (accepted since start)
//	DELETE /_mock/stats       zero the counters (max_in_flight restarts from the current in_flight)
//	POST   /_mock/fixed       one chat completion built at startup, whatever the request (its
//	                          body is read and dropped): the least work a net/http server can do
//	                          for an answer, the benchmark's floor for anything net/http serves
//
// ("behavior" is accepted as well.) Every API request is recorded at arrival, with its method,
// path, raw query, headers and body, in a ring of the last Options.MaxRecords; when it ends the
// record gets its status and whether it completed, was cancelled by the client (the request
// context ended before the answer was complete) or was aborted on purpose (X-Mock-Break-After,
// X-Mock-Hangup).
// Client is a small Go client for these endpoints.
//
// # Performance
//
// The request JSON is scanned without reflection for "model", "stream" and
// "stream_options.include_usage"; answers are built by appending into pooled buffers; nothing is
// logged per request unless Options.Logger is set.
package mockllm
