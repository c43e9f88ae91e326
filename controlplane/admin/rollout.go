package admin

import (
	"context"
	"fmt"
	"strings"
	"time"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

const (
	// answerMargin is kept between the end of a wait for the fleet and the caller's own
	// deadline, so that the answer can still reach it.
	answerMargin = 250 * time.Millisecond
	// fleetPollInterval is how often a Fleet that is not a FleetWatcher is re-read.
	fleetPollInterval = 100 * time.Millisecond
)

// rollout waits until every proxy connected to this control plane has applied revision
// rev (or a later one) or refused it, at most wait (and never past ctx's deadline), and
// reports where rev stands. It wakes on fleet changes (FleetWatcher), not on a timer.
// Proxies that connect or disconnect meanwhile are counted as they are when it answers.
func (s *Server) rollout(ctx context.Context, rev uint64, wait time.Duration) *adminv1.Rollout {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Add(-answerMargin).Before(deadline) {
		deadline = d.Add(-answerMargin)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		var (
			changed <-chan struct{}  // a FleetWatcher's next change
			poll    <-chan time.Time // or the next re-read of another Fleet
			proxies []*adminv1.ProxyStatus
		)
		if w, ok := s.fleet.(FleetWatcher); ok {
			changed = w.Changed() // before reading, so no change is missed
		} else if s.fleet != nil {
			poll = time.After(fleetPollInterval)
		}
		if s.fleet != nil {
			proxies = s.fleet.Proxies()
		}
		r := rolloutOf(rev, proxies)
		if len(r.Lagging) == 0 {
			return summarize(r)
		}
		select {
		case <-changed:
		case <-poll:
		case <-timer.C:
			r.TimedOut = true
			return summarize(r)
		case <-ctx.Done():
			r.TimedOut = true
			return summarize(r)
		}
	}
}

// rolloutOf sorts the connected proxies by where they stand with rev: applied (acked rev
// or later), refused (NACKed rev or later without having applied it) or lagging.
func rolloutOf(rev uint64, proxies []*adminv1.ProxyStatus) *adminv1.Rollout {
	r := &adminv1.Rollout{Revision: rev}
	for _, p := range proxies {
		if !p.GetConnected() {
			continue
		}
		r.Proxies++
		switch {
		case p.GetAckedRevision() >= rev:
			r.Applied++
		case p.GetLastNackRevision() >= rev:
			r.Refused = append(r.Refused, &adminv1.ProxyRefusal{
				NodeId: p.GetNodeId(), Revision: p.GetLastNackRevision(), Error: p.GetLastNackError(),
			})
		default:
			r.Lagging = append(r.Lagging, p.GetNodeId())
		}
	}
	return r
}

// summarize sets r's one-line summary, e.g. `applied on 2 of 3 proxies; refused by p3
// (revision 7): …; not yet applied on p4`.
func summarize(r *adminv1.Rollout) *adminv1.Rollout {
	var b strings.Builder
	fmt.Fprintf(&b, "applied on %d of %d proxies", r.GetApplied(), r.GetProxies())
	for _, n := range r.GetRefused() {
		fmt.Fprintf(&b, "; refused by %s (revision %d): %s", n.GetNodeId(), n.GetRevision(), n.GetError())
	}
	if len(r.GetLagging()) > 0 {
		fmt.Fprintf(&b, "; not yet applied on %s", strings.Join(r.GetLagging(), ", "))
	}
	r.Summary = b.String()
	return r
}
