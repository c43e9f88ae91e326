package forward

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// Retry policy (a group's http_client.retry): only what retry_on lists is retried, and
// only while the client is still there and nothing of the answer has been written to it
// (a retry is decided before relaying starts). Backoff is exponential from initial, capped
// by max_backoff, with equal jitter (half fixed, half random). The next attempt goes to
// another ready member when there is one; a Retry-After of the answer is honoured (up to
// max_backoff) when the retry goes to the same upstream.

// retryReason reports whether p retries a's outcome, and the reason label of
// llmproxy_retries_total (a status code, connect_error, reset or timeout).
func retryReason(p *config.RetryPolicy, a *attempt) (reason string, retry bool) {
	if a.err != nil {
		switch a.kind {
		case kindConnect:
			return config.UpstreamErrConnect, p.ConnectError
		case kindReset:
			return config.UpstreamErrReset, p.Reset
		case kindTimeout:
			return config.UpstreamErrTimeout, p.Timeout
		}
		return "", false
	}
	if p.RetryStatus(a.resp.StatusCode) {
		return strconv.Itoa(a.resp.StatusCode), true
	}
	return "", false
}

// retryDelay is the wait before retry number n+1 (n from 0): the backoff, or the
// answer's Retry-After (capped by max_backoff) when it is longer and the retry goes to
// the same member.
func retryDelay(p *config.RetryPolicy, n int, retryAfter time.Duration, sameMember bool) time.Duration {
	d := backoff(p, n)
	if sameMember && retryAfter > d {
		d = min(retryAfter, p.MaxBackoff)
	}
	return d
}

// backoff is the delay before retry number n+1 (n from 0): initial·2ⁿ capped by
// max_backoff, with equal jitter.
func backoff(p *config.RetryPolicy, n int) time.Duration {
	d := p.Initial
	for i := 0; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date; 0 when absent
// or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// sleep waits d or until ctx is done; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
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
