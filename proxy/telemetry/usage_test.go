package telemetry

import (
	"fmt"
	"sync"
	"testing"
)

func collect(t *UsageTable) map[string]UsageCounts {
	out := map[string]UsageCounts{}
	t.Collect(func(name string, d UsageCounts) {
		c := out[name]
		c.Requests += d.Requests
		c.Errors += d.Errors
		c.PromptTokens += d.PromptTokens
		c.CompletionTokens += d.CompletionTokens
		out[name] = c
	})
	return out
}

func TestUsageTableDeltas(t *testing.T) {
	tb := NewUsageTable(0)
	tb.Record("gpt-4o", false, 10, 5)
	tb.Record("gpt-4o", true, 3, -1)
	tb.Record("", false, 0, 0)
	got := collect(tb)
	want := map[string]UsageCounts{
		"gpt-4o": {Requests: 2, Errors: 1, PromptTokens: 13, CompletionTokens: 5},
		"":       {Requests: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("first collect: got %v; want %v", got, want)
	}
	if got := collect(tb); len(got) != 0 {
		t.Fatalf("collect without traffic: got %v; want nothing", got)
	}
	tb.Record("gpt-4o", false, 1, 1)
	if got := collect(tb); fmt.Sprint(got) != fmt.Sprint(map[string]UsageCounts{"gpt-4o": {Requests: 1, PromptTokens: 1, CompletionTokens: 1}}) {
		t.Fatalf("second collect: got %v; want only the new request", got)
	}
}

func TestUsageTableLimitCountsOverflowAsOther(t *testing.T) {
	tb := NewUsageTable(2)
	for _, m := range []string{"a", "b", "c", "d", "a"} {
		tb.Record(m, false, 1, 0)
	}
	got := collect(tb)
	want := map[string]UsageCounts{
		"a":        {Requests: 2, PromptTokens: 2},
		"b":        {Requests: 1, PromptTokens: 1},
		UsageOther: {Requests: 2, PromptTokens: 2},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v; want %v", got, want)
	}
	if tb.Len() != 2 {
		t.Fatalf("Len %d; want 2", tb.Len())
	}
}

func TestUsageTableRetiresIdleNames(t *testing.T) {
	tb := NewUsageTable(2)
	tb.Record("a", false, 0, 0)
	tb.Record("b", false, 0, 0)
	collect(tb)
	for range usageIdleCollections - 1 {
		tb.Record("b", false, 0, 0)
		collect(tb)
	}
	tb.Record("b", false, 0, 0)
	collect(tb) // "a" idle for usageIdleCollections collections: retired
	if tb.Len() != 1 {
		t.Fatalf("Len %d after a's idle collections; want 1 (a retired)", tb.Len())
	}
	tb.Record("c", false, 0, 0) // takes a's room instead of counting as other
	if got := collect(tb); got["c"].Requests != 1 || got[UsageOther].Requests != 0 {
		t.Fatalf("after retiring a: got %v; want c counted under its own name", got)
	}
}

func TestUsageTableConcurrentRecordsAreAllCounted(t *testing.T) {
	tb := NewUsageTable(8)
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	total := map[string]UsageCounts{}
	var mu sync.Mutex
	stop := make(chan struct{})
	collected := make(chan struct{})
	go func() { // the reporter, collecting while requests are recorded
		defer close(collected)
		for {
			got := collect(tb)
			mu.Lock()
			for k, v := range got {
				c := total[k]
				c.Requests += v.Requests
				total[k] = c
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				tb.Record(fmt.Sprintf("m%d", (w+i)%12), false, 0, 0)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-collected
	for k, v := range collect(tb) {
		c := total[k]
		c.Requests += v.Requests
		total[k] = c
	}
	var sum uint64
	for _, v := range total {
		sum += v.Requests
	}
	if sum != workers*each {
		t.Fatalf("counted %d requests; want %d (%v)", sum, workers*each, total)
	}
}

// BenchmarkUsageTableRecord is the request path's cost of per-model counting.
func BenchmarkUsageTableRecord(b *testing.B) {
	tb := NewUsageTable(0)
	models := []string{"gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama3"}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tb.Record(models[i%len(models)], false, 120, 30)
			i++
		}
	})
}
