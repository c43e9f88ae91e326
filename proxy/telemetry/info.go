package telemetry

import (
	"maps"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// InfoCollector exports one gauge of value 1 per item, labelled with the item's name and
// its free-form labels: an info metric (e.g. llmproxy_consumer_info{consumer,team,...}) to
// join other series on by name. Label names are those of the current items, so they change
// with the configuration; the collector is unchecked (it describes nothing in advance), and
// every series of a scrape has the same label names, the union over the items (empty where
// an item has none). Safe for concurrent use.
type InfoCollector struct {
	name, help, nameLabel string

	mu    sync.Mutex
	desc  *prometheus.Desc
	keys  []string // the free-form label names, sorted
	items []infoItem
}

type infoItem struct {
	name   string
	labels map[string]string
}

// NewInfoCollector returns an empty collector of the metric name whose items are named by
// the label nameLabel.
func NewInfoCollector(name, help, nameLabel string) *InfoCollector {
	return &InfoCollector{name: name, help: help, nameLabel: nameLabel}
}

// Set replaces the items: name → labels. Label names must be valid Prometheus label names
// other than the name label (configuration validation sees to it); others are skipped.
func (c *InfoCollector) Set(items map[string]map[string]string) {
	keys := map[string]bool{}
	list := make([]infoItem, 0, len(items))
	for _, name := range slices.Sorted(maps.Keys(items)) {
		labels := items[name]
		for k := range labels {
			if k != c.nameLabel {
				keys[k] = true
			}
		}
		list = append(list, infoItem{name: name, labels: labels})
	}
	sorted := slices.Sorted(maps.Keys(keys))
	desc := prometheus.NewDesc(c.name, c.help, append([]string{c.nameLabel}, sorted...), nil)
	c.mu.Lock()
	c.desc, c.keys, c.items = desc, sorted, list
	c.mu.Unlock()
}

// Describe describes nothing: the label names depend on the items.
func (c *InfoCollector) Describe(chan<- *prometheus.Desc) {}

// Collect sends one gauge per item.
func (c *InfoCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	desc, keys, items := c.desc, c.keys, c.items
	c.mu.Unlock()
	for _, it := range items {
		values := make([]string, 0, len(keys)+1)
		values = append(values, it.name)
		for _, k := range keys {
			values = append(values, it.labels[k])
		}
		if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, 1, values...); err == nil {
			ch <- m
		}
	}
}
