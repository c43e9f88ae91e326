package config

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	"github.com/llmproxy-go/llmproxy/proxy/telemetry"
)

// keyHash is the configuration's hash of key.
func keyHash(key string) string { return validate.FormatKeyHash(sha256.Sum256([]byte(key))) }

func consumersYAML(rpm int, withB bool) string {
	y := baseYAML + fmt.Sprintf(`
consumers:
  - name: team-a
    keys:
      - {id: k1, hash: "%s"}
      - {id: old, hash: "%s", expires_at: "2001-01-01T00:00:00Z"}
      - {id: off, hash: "%s", disabled: true}
    models: ["gpt-4o*"]
    forwards: [f]
    limits: {requests_per_minute: %d, budget: {usd: 1.5, period: week}}
    labels: {team: search, cost_center: cc1}
`, keyHash("llmp-a1"), keyHash("llmp-a-old"), keyHash("llmp-a-off"), rpm)
	if withB {
		y += fmt.Sprintf(`  - name: team-b
    keys: [{id: k1, hash: "%s"}]
`, keyHash("llmp-b1"))
	}
	return y + `
pricing:
  - {model: "gpt-4o-mini*", input_per_million: 0.15, output_per_million: 0.6}
  - {model: "gpt-4o*", input_per_million: 2.5, output_per_million: 10}
`
}

func TestConsumers(t *testing.T) {
	a, h, reg := testApplier(t, nil)
	if err := a.Apply("1", decode(t, consumersYAML(2, true))); err != nil {
		t.Fatal(err)
	}
	rt := h.Load()
	k := rt.ConsumerKey("llmp-a1")
	if k == nil || k.Consumer.Name != "team-a" || k.ID != "k1" || k.Disabled || k.Expired(time.Now()) {
		t.Fatalf("key llmp-a1: %+v", k)
	}
	if rt.ConsumerKey("llmp-a2") != nil || rt.ConsumerKey("") != nil {
		t.Error("an unknown key was found")
	}
	if old := rt.ConsumerKey("llmp-a-old"); old == nil || !old.Expired(time.Now()) {
		t.Errorf("expired key: %+v", old)
	}
	if off := rt.ConsumerKey("llmp-a-off"); off == nil || !off.Disabled {
		t.Errorf("disabled key: %+v", off)
	}
	c := k.Consumer
	if !c.MayUse("f") || c.MayUse("other") || !rt.ConsumerKey("llmp-b1").Consumer.MayUse("other") {
		t.Error("forward allow-list")
	}
	if !c.MayAsk("gpt-4o-mini") || c.MayAsk("claude-3") || !c.MayAsk("") {
		t.Error("model allow-list")
	}
	if l := c.Limiter.Limits(); l.RequestsPerMinute != 2 || l.BudgetMicros != 1_500_000 || l.Period.String() != "week" {
		t.Errorf("limits %+v", l)
	}
	if rt.ConsumerKey("llmp-b1").Consumer.Limiter != nil {
		t.Error("a consumer without limits has a limiter")
	}
	// The first matching price: 1000 prompt and 500 completion tokens of gpt-4o-mini.
	if got := rt.Price("gpt-4o-mini-2024", 1000, 500); got != 450 {
		t.Errorf("price = %d micro-USD; want 450", got)
	}
	if got := rt.Price("claude-3", 1000, 500); got != 0 {
		t.Errorf("unpriced model costs %d", got)
	}

	// A new revision keeps what the consumer used, even with new limits.
	ctx := context.Background()
	for range 2 {
		if ad := c.Limiter.Admit(ctx); !ad.OK {
			t.Fatalf("admission: %+v", ad)
		}
	}
	if err := a.Apply("2", decode(t, consumersYAML(3, true))); err != nil {
		t.Fatal(err)
	}
	c2 := h.Load().ConsumerKey("llmp-a1").Consumer
	if ad := c2.Limiter.Admit(ctx); !ad.OK || ad.Requests.Remaining != 0 {
		t.Fatalf("third request under the new limit of 3: %+v", ad)
	}
	if ad := c2.Limiter.Admit(ctx); ad.OK {
		t.Fatal("the counts were lost across revisions")
	}

	// Metrics: per consumer, model values bounded; labels in the info metric only.
	m := rt.Metrics
	c2.Record("gpt-4o", 200, 10, 5, 75)
	for i := range telemetry.ConsumerModelLabels + 5 {
		c2.Record(fmt.Sprintf("model-%d", i), 404, 0, 0, 0)
	}
	if v := testutil.ToFloat64(m.ConsumerRequests.WithLabelValues("team-a", "gpt-4o", "200")); v != 1 {
		t.Errorf("requests{gpt-4o,200} = %v", v)
	}
	if v := testutil.ToFloat64(m.ConsumerRequests.WithLabelValues("team-a", telemetry.UsageOther, "404")); v != 6 {
		t.Errorf("requests{other,404} = %v; want 6 (models past the bound)", v)
	}
	if v := testutil.ToFloat64(m.ConsumerSpend.WithLabelValues("team-a", "gpt-4o")); v != 75e-6 {
		t.Errorf("spend = %v", v)
	}
	info := `
# HELP llmproxy_consumer_info Labels of each consumer (value 1); join on consumer.
# TYPE llmproxy_consumer_info gauge
llmproxy_consumer_info{consumer="team-a",cost_center="cc1",team="search"} 1
llmproxy_consumer_info{consumer="team-b",cost_center="",team=""} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(info), "llmproxy_consumer_info"); err != nil {
		t.Error(err)
	}

	// A consumer removed takes its series with it.
	if err := a.Apply("3", decode(t, strings.Replace(consumersYAML(3, false), "labels: {team: search, cost_center: cc1}", "", 1))); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.ConsumerRequests); n != telemetry.ConsumerModelLabels+1 {
		t.Errorf("%d request series; want team-a's %d", n, telemetry.ConsumerModelLabels+1)
	}
	if h.Load().ConsumerKey("llmp-b1") != nil {
		t.Error("a removed consumer's key still works")
	}
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(`
# HELP llmproxy_consumer_info Labels of each consumer (value 1); join on consumer.
# TYPE llmproxy_consumer_info gauge
llmproxy_consumer_info{consumer="team-a"} 1
`), "llmproxy_consumer_info"); err != nil {
		t.Error(err)
	}
	reg.mu.Lock()
	n := len(reg.st.consumers)
	reg.mu.Unlock()
	if n != 1 {
		t.Errorf("registry keeps %d consumers; want 1", n)
	}
}

// BenchmarkConsumerKey measures identifying a consumer: one SHA-256 and one map lookup.
func BenchmarkConsumerKey(b *testing.B) {
	reg := NewRegistry(nil, nil)
	y := baseYAML + "consumers:\n"
	for i := range 1000 {
		y += fmt.Sprintf("  - {name: c%d, keys: [{id: k, hash: \"%s\"}]}\n", i, keyHash(fmt.Sprintf("llmp-key-%d-0123456789abcdefghijklmnopqrstu", i)))
	}
	c, err := configfile.Decode("bench.yaml", []byte(y))
	if err != nil {
		b.Fatal(err)
	}
	rt, err := Compile(c, reg, Options{Env: env})
	if err != nil {
		b.Fatal(err)
	}
	key := "llmp-key-500-0123456789abcdefghijklmnopqrstu"
	b.ReportAllocs()
	for b.Loop() {
		if rt.ConsumerKey(key) == nil {
			b.Fatal("not found")
		}
	}
}
