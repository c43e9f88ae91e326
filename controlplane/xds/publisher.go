package xds

import (
	"context"
	"fmt"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/store"
)

// Run publishes the store's current revision, then every newer revision the
// store reports, until ctx is done (it returns nil) or the store's watch
// closes. It is the one goroutine that calls SetSnapshot: a burst of
// commits during a fan-out is coalesced into one snapshot of the latest
// revision. A revision that cannot be loaded is retried with backoff; one
// that cannot be translated is logged and skipped (the next one replaces
// it). Revision 0, an empty store, is not published: proxies wait for the
// first real configuration.
func (s *Server) Run(ctx context.Context, st store.Store) error {
	watch := st.Watch(ctx) // before the first Load, so no commit is missed
	pending, notified := true, time.Now()
	const minRetry, maxRetry = 500 * time.Millisecond, 15 * time.Second
	retry, retryIn := (*time.Timer)(nil), minRetry
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		if pending {
			if err := s.publishLatest(ctx, st, notified); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.log.Error("cannot publish the store's revision; retrying", "err", err, "retry_in", retryIn)
				retry = time.NewTimer(retryIn)
				retryIn = min(retryIn*2, maxRetry)
			} else {
				retryIn = minRetry
			}
			pending = false
		}
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			return nil
		case rev, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errWatchClosed
			}
			if rev > s.Revision() {
				pending, notified = true, time.Now()
			}
		case <-retryC:
			retry, pending = nil, true
		}
	}
}

// publishLatest loads the latest revision and publishes it when newer than
// the published one.
func (s *Server) publishLatest(ctx context.Context, st store.Store, notified time.Time) error {
	rev, cfg, err := st.Load(ctx)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	if rev == 0 || rev <= s.Revision() {
		return nil
	}
	if err := s.Publish(ctx, rev, cfg); err != nil {
		if ctx.Err() != nil {
			return err
		}
		// A config the snapshot cannot represent will not get better by
		// retrying; the next revision replaces it.
		s.log.Error("cannot publish revision; skipped", "revision", rev, "err", err)
		return nil
	}
	s.metrics.pushLatency.Observe(time.Since(notified).Seconds())
	s.log.Info("published config", "revision", rev)
	return nil
}
