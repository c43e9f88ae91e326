// Package reportwire is the wire contract of proxy reports (llmproxy.report.v1) that the
// control plane and the proxies share: the size bounds of one report and the check the
// control plane applies to every report it receives. Proxies bound their reports with the
// same constants, so the two sides cannot drift apart. It is a leaf: it imports only the
// generated protobufs.
package reportwire

import (
	"errors"
	"fmt"
	"time"

	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// Size bounds of one report.
const (
	// MaxUpstreams is the most upstreams one report lists.
	MaxUpstreams = 1024
	// MaxModels, MaxConsumers and MaxCaches bound the other sections.
	MaxModels    = 256
	MaxConsumers = 256
	MaxCaches    = 256
	// MaxNameBytes bounds every name (node id, upstream, model, consumer, group).
	MaxNameBytes = 256
)

// Bounds of a proxy's report interval (ProxyReport.report_interval), so that the control
// plane's freshness rule (three intervals) stays meaningful.
const (
	MinInterval = 100 * time.Millisecond
	MaxInterval = 10 * time.Minute
)

// Check reports every way r breaks the contract, each error naming the field
// (errors.Join), or nil.
func Check(r *reportv1.ProxyReport) error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	name := func(path, n string, required bool) {
		switch {
		case required && n == "":
			bad(path, "required")
		case len(n) > MaxNameBytes:
			bad(path, "%d bytes, at most %d", len(n), MaxNameBytes)
		}
	}
	name("node_id", r.GetNodeId(), true)
	if d := r.GetReportInterval(); d != nil {
		if iv := d.AsDuration(); iv < MinInterval || iv > MaxInterval {
			bad("report_interval", "%s out of range [%s, %s]", iv, MinInterval, MaxInterval)
		}
	} else {
		bad("report_interval", "required")
	}
	if d := r.GetInterval(); d == nil || d.AsDuration() <= 0 {
		bad("interval", "required, positive")
	}
	count := func(path string, n, most int) {
		if n > most {
			bad(path, "%d entries, at most %d", n, most)
		}
	}
	count("upstreams", len(r.GetUpstreams()), MaxUpstreams)
	count("models", len(r.GetModels()), MaxModels)
	count("consumers", len(r.GetConsumers()), MaxConsumers)
	count("caches", len(r.GetCaches()), MaxCaches)
	if len(errs) > 0 {
		return errors.Join(errs...) // entries are not looked at when a section is oversized
	}
	for i, u := range r.GetUpstreams() {
		name(fmt.Sprintf("upstreams[%d].name", i), u.GetName(), true)
	}
	for i, m := range r.GetModels() {
		name(fmt.Sprintf("models[%d].name", i), m.GetName(), false)
	}
	for i, c := range r.GetConsumers() {
		name(fmt.Sprintf("consumers[%d].name", i), c.GetName(), true)
	}
	for i, c := range r.GetCaches() {
		name(fmt.Sprintf("caches[%d].group", i), c.GetGroup(), true)
	}
	return errors.Join(errs...)
}
