package report

import (
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// Models returns the Source of the models section: the per-model counts of t (the
// runtime's telemetry.Metrics.Models) that changed since the previous report.
func Models(t *telemetry.UsageTable) Source {
	return SourceFunc(func(r *reportv1.ProxyReport) { r.Models = appendUsage(r.Models, t) })
}

// Consumers returns the Source of the consumers section, for a UsageTable keyed by
// consumer name.
func Consumers(t *telemetry.UsageTable) Source {
	return SourceFunc(func(r *reportv1.ProxyReport) { r.Consumers = appendUsage(r.Consumers, t) })
}

func appendUsage(dst []*reportv1.UsageCounts, t *telemetry.UsageTable) []*reportv1.UsageCounts {
	t.Collect(func(name string, d telemetry.UsageCounts) {
		dst = append(dst, &reportv1.UsageCounts{
			Name:             name,
			Requests:         d.Requests,
			Errors:           d.Errors,
			PromptTokens:     d.PromptTokens,
			CompletionTokens: d.CompletionTokens,
		})
	})
	return dst
}
