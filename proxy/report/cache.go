package report

import (
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
	"github.com/llmproxy-go/llmproxy/proxy/config"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// cacheTotals are one group's running cache counts at the previous report.
type cacheTotals struct{ hits, misses uint64 }

// cacheSource reports, per upstream group whose response cache is in use, the hits and
// misses since the previous report, read from the llmproxy_cache_{hits,misses}_total
// counters the request path keeps anyway.
type cacheSource struct {
	holder  *config.Holder
	metrics *telemetry.Metrics
	last    map[string]cacheTotals
}

// Caches returns the Source of the caches section: one entry per group of holder's
// current runtime that serves from a cache, with the counts of m since the last report.
func Caches(holder *config.Holder, m *telemetry.Metrics) Source {
	return &cacheSource{holder: holder, metrics: m, last: map[string]cacheTotals{}}
}

func (s *cacheSource) Collect(r *reportv1.ProxyReport) {
	rt := s.holder.Load()
	if rt == nil {
		return
	}
	seen := make(map[string]bool, len(s.last))
	for _, g := range rt.Groups {
		if g.Cache == nil {
			continue
		}
		cur := cacheTotals{
			hits:   counter(s.metrics.CacheHits.WithLabelValues(g.Name)),
			misses: counter(s.metrics.CacheMisses.WithLabelValues(g.Name)),
		}
		prev := s.last[g.Name]
		s.last[g.Name] = cur
		seen[g.Name] = true
		r.Caches = append(r.Caches, &reportv1.CacheCounts{
			Group:  g.Name,
			Hits:   sub(cur.hits, prev.hits),
			Misses: sub(cur.misses, prev.misses),
		})
	}
	for name := range s.last {
		if !seen[name] {
			delete(s.last, name)
		}
	}
}
