package mockllm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Client calls a mockllm's admin endpoints, for tests and benchmarks.
// Its zero value is not usable: set BaseURL. It is safe for concurrent use.
type Client struct {
	// BaseURL is the mockllm's root, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// Requests returns the recorded requests with Seq > since, oldest first.
func (c *Client) Requests(ctx context.Context, since uint64) ([]Record, error) {
	var out []Record
	err := c.do(ctx, http.MethodGet, "/_mock/requests?since="+strconv.FormatUint(since, 10), nil, &out)
	return out, err
}

// ClearRequests forgets the recorded requests.
func (c *Client) ClearRequests(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/_mock/requests", nil, nil)
}

// Stats returns the counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var out Stats
	err := c.do(ctx, http.MethodGet, "/_mock/stats", nil, &out)
	return out, err
}

// ResetStats zeroes the counters.
func (c *Client) ResetStats(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/_mock/stats", nil, nil)
}

// SetBehaviour posts a behaviour change: raw JSON such as `{"status":503}`, applied on top of the
// startup behaviour.
func (c *Client) SetBehaviour(ctx context.Context, rawJSON string) error {
	return c.do(ctx, http.MethodPost, "/_mock/behaviour", strings.NewReader(rawJSON), nil)
}

// ResetBehaviour returns the server to its startup behaviour.
func (c *Client) ResetBehaviour(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/_mock/behaviour", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("build mockllm request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("call mockllm %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read mockllm %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("call mockllm %s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode mockllm %s %s: %w", method, path, err)
		}
	}
	return nil
}
