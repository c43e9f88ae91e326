package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// Usage query bounds.
const (
	DefaultUsageWindow = time.Hour
	MaxUsageWindow     = 31 * 24 * time.Hour
	// MaxUsagePoints bounds the points of one entry's time series.
	MaxUsagePoints = 1440
)

// rollupKey is one pending rollup row.
type rollupKey struct {
	dimension string
	minute    int64 // Unix seconds
	name      string
}

// Flush adds the pending rollups to the store. On failure they are kept for the next
// flush (up to a bound). Safe for concurrent use; flushes run one at a time.
func (r *Reports) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	pending := r.pending
	r.pending = make(map[rollupKey]*store.UsageCounts, len(pending))
	r.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	rows := make([]store.UsageRow, 0, len(pending))
	for k, c := range pending {
		rows = append(rows, store.UsageRow{Dimension: k.dimension, Minute: time.Unix(k.minute, 0).UTC(), Name: k.name, UsageCounts: *c})
	}
	err := r.opts.Store.AddUsage(ctx, rows)
	if err == nil {
		return nil
	}
	r.mu.Lock()
	for k, c := range pending {
		r.addLocked(k, *c)
	}
	r.mu.Unlock()
	return fmt.Errorf("flush usage: %w", err)
}

// UsageQuery is a checked usage request.
type UsageQuery struct {
	By     string
	Window time.Duration
	Step   time.Duration // 0: no time series
}

// ParseUsageQuery checks a usage request, reporting every fault as a
// *validate.FieldError naming the request field (errors.Join).
func ParseUsageQuery(req *adminv1.GetUsageRequest) (UsageQuery, error) {
	q := UsageQuery{By: req.GetBy(), Window: DefaultUsageWindow}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &validate.FieldError{Path: field, Kind: validate.ErrInvalid, Msg: fmt.Sprintf(format, args...)})
	}
	switch q.By {
	case store.UsageByConsumer, store.UsageByModel, store.UsageByUpstream:
	case "":
		bad("by", "required: consumer, model or upstream")
	default:
		bad("by", "%q: want consumer, model or upstream", q.By)
	}
	if w := req.GetWindow(); w != "" {
		d, err := parseSpan(w)
		switch {
		case err != nil:
			bad("window", "%v", err)
		case d < time.Minute || d > MaxUsageWindow:
			bad("window", "%q out of range: at least 1m, at most 31d", w)
		default:
			q.Window = d.Truncate(time.Minute)
		}
	}
	if s := req.GetStep(); s != "" {
		d, err := parseSpan(s)
		switch {
		case err != nil:
			bad("step", "%v", err)
		case d < time.Minute || d%time.Minute != 0:
			bad("step", "%q: want a whole number of minutes, at least 1m", s)
		case d > q.Window:
			bad("step", "%q is longer than the window %s", s, q.Window)
		case int(q.Window/d) > MaxUsagePoints:
			bad("step", "%q gives %d points over the window; at most %d", s, int(q.Window/d), MaxUsagePoints)
		default:
			q.Step = d
		}
	}
	return q, errors.Join(errs...)
}

// parseSpan reads a Go duration ("90m", "1h30m") or a whole number of days ("7d").
func parseSpan(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q: want a duration such as 15m, 1h or 7d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want a duration such as 15m, 1h or 7d", s)
	}
	return d, nil
}

// Usage answers a usage request: it checks it (faults are *validate.FieldError, see
// ParseUsageQuery), flushes this replica's pending rollups, then sums the stored ones over
// the window: the window/1m minutes up to and including the current one. It satisfies
// admin.FleetReports.
func (r *Reports) Usage(ctx context.Context, req *adminv1.GetUsageRequest) (*adminv1.GetUsageResponse, error) {
	q, err := ParseUsageQuery(req)
	if err != nil {
		return nil, err
	}
	if err := r.Flush(ctx); err != nil {
		r.log.Warn("usage query: pending counts not flushed; answering from the store", "err", err)
	}
	now := r.now().UTC()
	end := now.Truncate(time.Minute).Add(time.Minute)
	start := end.Add(-q.Window)
	rows, err := r.opts.Store.QueryUsage(ctx, q.By, start, end)
	if err != nil {
		return nil, err
	}
	return aggregate(q, start, end, rows), nil
}

// aggregate sums rows (of one dimension, within [start, end)) per name and, with a step,
// per step.
func aggregate(q UsageQuery, start, end time.Time, rows []store.UsageRow) *adminv1.GetUsageResponse {
	type entry struct {
		sum    store.UsageCounts
		points []store.UsageCounts
	}
	var nPoints int
	if q.Step > 0 {
		nPoints = int((end.Sub(start) + q.Step - 1) / q.Step)
	}
	byName := map[string]*entry{}
	var total store.UsageCounts
	for _, row := range rows {
		e := byName[row.Name]
		if e == nil {
			e = &entry{}
			if nPoints > 0 {
				e.points = make([]store.UsageCounts, nPoints)
			}
			byName[row.Name] = e
		}
		e.sum.Add(row.UsageCounts)
		total.Add(row.UsageCounts)
		if nPoints > 0 {
			if i := int(row.Minute.Sub(start) / q.Step); i >= 0 && i < nPoints {
				e.points[i].Add(row.UsageCounts)
			}
		}
	}
	resp := &adminv1.GetUsageResponse{
		By:        q.By,
		StartTime: timestamppb.New(start),
		EndTime:   timestamppb.New(end),
		Total:     usageEntry("", total),
	}
	for name, e := range byName {
		ue := usageEntry(name, e.sum)
		for i, p := range e.points {
			ue.Points = append(ue.Points, &adminv1.UsagePoint{
				Time:             timestamppb.New(start.Add(time.Duration(i) * q.Step)),
				Requests:         p.Requests,
				Errors:           p.Errors,
				PromptTokens:     p.PromptTokens,
				CompletionTokens: p.CompletionTokens,
			})
		}
		resp.Entries = append(resp.Entries, ue)
	}
	slices.SortFunc(resp.Entries, func(a, b *adminv1.UsageEntry) int {
		return cmp.Or(
			cmp.Compare(b.GetPromptTokens()+b.GetCompletionTokens(), a.GetPromptTokens()+a.GetCompletionTokens()),
			cmp.Compare(b.GetRequests(), a.GetRequests()),
			cmp.Compare(a.GetName(), b.GetName()),
		)
	})
	return resp
}

func usageEntry(name string, c store.UsageCounts) *adminv1.UsageEntry {
	return &adminv1.UsageEntry{
		Name:             name,
		Requests:         c.Requests,
		Errors:           c.Errors,
		PromptTokens:     c.PromptTokens,
		CompletionTokens: c.CompletionTokens,
	}
}
