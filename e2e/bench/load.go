package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// ChatBody is the non-streaming chat completion every load test sends.
var ChatBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}]}`)

// StreamBody is the streaming chat completion of the streaming tests.
var StreamBody = []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to ten."}]}`)

// Latency is a latency distribution summary.
type Latency struct {
	P50      Millis  `json:"p50_ms"`
	P90      Millis  `json:"p90_ms"`
	P99      Millis  `json:"p99_ms"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Rate     float64 `json:"achieved_rate"`
}

// Millis is a duration reported in milliseconds.
type Millis float64

// Ms converts d.
func Ms(d time.Duration) Millis { return Millis(float64(d) / float64(time.Millisecond)) }

// Percentile returns the p-th percentile (0-100) of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// FixedRates sends non-streaming chat completions to each of urls at rate requests/s for d
// in all (open loop) and summarises the latencies of the successful ones. The time is cut in
// rounds slices taken in turn (target 1, 2, …, then again) over connections kept for the
// whole step, so that the load other work puts on a shared machine falls on every target
// alike.
func FixedRates(urls []string, rate int, d time.Duration, rounds int) []Latency {
	type acc struct {
		tr   *http.Transport // kept over the slices: connections stay warm
		lat  []time.Duration
		errs int
		el   time.Duration
	}
	accs := make([]acc, len(urls))
	for i := range urls {
		// The step's connections are closed when it ends: a target that fell behind opened
		// up to 1,000 of them, and idle they would hold its file descriptors (and the
		// harness's) through the idle-stream steps, which need nearly all of them.
		tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
		defer tr.CloseIdleConnections()
		accs[i].tr = tr
	}
	slice := d / time.Duration(rounds)
	for range rounds {
		for i, url := range urls {
			a := &accs[i]
			tgt := vegeta.NewStaticTargeter(vegeta.Target{
				Method: http.MethodPost, URL: url, Body: ChatBody,
				Header: http.Header{"Content-Type": {"application/json"}},
			})
			// An attacker runs one attack: each slice gets its own, over the target's transport.
			atk := vegeta.NewAttacker(vegeta.Client(&http.Client{Transport: a.tr}), vegeta.KeepAlive(true),
				vegeta.Connections(1000), vegeta.Timeout(10*time.Second), vegeta.Workers(64))
			start := time.Now()
			for res := range atk.Attack(tgt, vegeta.ConstantPacer{Freq: rate, Per: time.Second}, slice, "fixed") {
				if res.Error != "" || res.Code != http.StatusOK {
					a.errs++
					continue
				}
				a.lat = append(a.lat, res.Latency)
			}
			a.el += time.Since(start)
		}
	}
	out := make([]Latency, len(urls))
	for i := range accs {
		a := &accs[i]
		slices.Sort(a.lat)
		out[i] = Latency{
			P50: Ms(Percentile(a.lat, 50)), P90: Ms(Percentile(a.lat, 90)), P99: Ms(Percentile(a.lat, 99)),
			Requests: len(a.lat) + a.errs, Errors: a.errs, Rate: float64(len(a.lat)+a.errs) / a.el.Seconds(),
		}
	}
	return out
}

// Saturation is a closed-loop throughput measurement.
type Saturation struct {
	RPS      float64 `json:"rps"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
}

// Saturate runs conc workers that each send the next request to t as soon as the last one
// is answered, for d. Connections are kept alive (over TLS, each handshakes once).
func Saturate(t Target, conc int, d time.Duration) Saturation {
	url := t.URL
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true, TLSClientConfig: t.TLS}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var ok, bad atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(ChatBody))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	return Saturation{RPS: float64(ok.Load()) / el.Seconds(), Requests: ok.Load() + bad.Load(), Errors: bad.Load()}
}

// Stream summarises streamed answers: time to first byte and the gaps between chunks.
type Stream struct {
	TTFB50     Millis `json:"ttfb_p50_ms"`
	TTFB99     Millis `json:"ttfb_p99_ms"`
	Gap50      Millis `json:"gap_p50_ms"`
	Gap99      Millis `json:"gap_p99_ms"`
	Streams    int    `json:"streams"`
	Errors     int    `json:"errors"`
	ChunksSeen int    `json:"chunks"`
}

// Streams opens n streams (conc at a time) whose upstream sends chunks every gap and records
// when each SSE event reaches the client.
func Streams(url string, n, conc, chunks int, gap time.Duration) Stream {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true}}
	var mu sync.Mutex
	var ttfb, gaps []time.Duration
	var errs, seen int
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(StreamBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Mock-Chunks", fmt.Sprint(chunks))
			req.Header.Set("X-Mock-Chunk-Gap", gap.String())
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				if resp != nil {
					resp.Body.Close()
				}
				mu.Lock()
				errs++
				mu.Unlock()
				return
			}
			defer resp.Body.Close()
			var first time.Duration
			var times []time.Duration
			r := bufio.NewReader(resp.Body)
			for {
				line, err := r.ReadBytes('\n')
				if len(line) > 5 && bytes.HasPrefix(line, []byte("data:")) {
					at := time.Since(start)
					if first == 0 {
						first = at
					}
					times = append(times, at)
				}
				if err != nil {
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			seen += len(times)
			if first == 0 {
				errs++
				return
			}
			ttfb = append(ttfb, first)
			for i := 1; i < len(times); i++ {
				gaps = append(gaps, times[i]-times[i-1])
			}
		}()
	}
	wg.Wait()
	slices.Sort(ttfb)
	slices.Sort(gaps)
	return Stream{
		TTFB50: Ms(Percentile(ttfb, 50)), TTFB99: Ms(Percentile(ttfb, 99)),
		Gap50: Ms(Percentile(gaps, 50)), Gap99: Ms(Percentile(gaps, 99)),
		Streams: n, Errors: errs, ChunksSeen: seen,
	}
}

// IdleStreams opens n streams through url whose upstream answers headers at once and then
// stays silent for hold, waits until all are open (openCheck returns the number open at the
// upstream), calls measure, and closes them. It returns how many were opened.
func IdleStreams(ctx context.Context, url string, n int, hold time.Duration, openCheck func() (int, error), measure func()) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dialer := &net.Dialer{}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true, DialContext: dialer.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var opened atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200) // open at most 200 at a time
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(StreamBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Mock-TTFT", hold.String())
			resp, err := client.Do(req)
			<-sem
			if err != nil {
				failed.Add(1)
				return
			}
			opened.Add(1)
			_, _ = io.Copy(io.Discard, resp.Body) // returns when ctx is cancelled
			resp.Body.Close()
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		open, err := openCheck()
		if err == nil && open >= n {
			break
		}
		if failed.Load() > 0 || time.Now().After(deadline) {
			cancel()
			wg.Wait()
			return int(opened.Load()), fmt.Errorf("open %d idle streams: %d open at the upstream, %d failed", n, open, failed.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	measure()
	cancel()
	wg.Wait()
	return int(opened.Load()), nil
}
