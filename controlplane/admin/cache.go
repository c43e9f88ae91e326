package admin

import (
	"context"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// PurgeCache increments the group's cache epoch (upstream_groups[].cache.epoch) in a new
// revision and answers it. Every proxy folds the epoch into its cache keys, so once it has
// applied the revision it no longer finds anything stored before, in memory or in Redis,
// without a scan. A group without a cache block gets one holding only the epoch (the cache
// stays as it was: disabled by default), so entries from an earlier enabled period cannot
// come back.
func (s *Server) PurgeCache(ctx context.Context, req *adminv1.PurgeCacheRequest) (*adminv1.PurgeCacheResponse, error) {
	name := req.GetName()
	w, err := newWrite("PurgeCache", req)
	if err != nil {
		return nil, err
	}
	if w.message == "" {
		w.message = "purge the response cache of upstream group " + name
	}
	var epoch uint64
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		i := upstreamGroups.find(next, name)
		if i < 0 {
			return pathRewrite{}, notFound("upstream group", name)
		}
		g := next.UpstreamGroups[i]
		if g.Cache == nil {
			g.Cache = &configv1.Cache{}
		}
		g.Cache.Epoch++
		epoch = g.Cache.Epoch
		return pathRewrite{}, nil
	})
	if err != nil {
		return nil, err
	}
	setHeaders(ctx, r.rev, 0)
	return &adminv1.PurgeCacheResponse{Revision: r.rev, Epoch: epoch, DryRun: r.dryRun, Diff: r.diff, Fleet: r.fleet}, nil
}

// keepCacheEpochs stops a write from lowering a group's cache epoch, which would make
// entries from before a purge reachable again: every group of next keeps at least the
// epoch of the group of the same name in cur. (A group deleted and created again starts
// over at its new config's epoch.)
func keepCacheEpochs(next, cur *configv1.Config) {
	var old map[string]uint64
	for _, g := range cur.GetUpstreamGroups() {
		if e := g.GetCache().GetEpoch(); e > 0 {
			if old == nil {
				old = map[string]uint64{}
			}
			old[g.GetName()] = e
		}
	}
	for _, g := range next.GetUpstreamGroups() {
		if e := old[g.GetName()]; e > g.GetCache().GetEpoch() {
			if g.Cache == nil {
				g.Cache = &configv1.Cache{}
			}
			g.Cache.Epoch = e
		}
	}
}
