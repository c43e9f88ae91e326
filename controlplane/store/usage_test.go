package store

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func usageRow(dim, name string, minute time.Time, req, errs, prompt, completion uint64) UsageRow {
	return UsageRow{Dimension: dim, Minute: minute, Name: name, UsageCounts: UsageCounts{req, errs, prompt, completion}}
}

func TestUsageRollupsAddUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openStore(t, b.newDSN(t), options{})
		t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
		err := s.AddUsage(t.Context(), []UsageRow{
			usageRow(UsageByModel, "gpt-4o", t0.Add(10*time.Second), 2, 1, 100, 20),
			usageRow(UsageByModel, "gpt-4o", t0.Add(50*time.Second), 1, 0, 10, 2), // same minute
			usageRow(UsageByModel, "llama", t0.Add(time.Minute), 5, 0, 0, 0),
			usageRow(UsageByUpstream, "openai", t0, 3, 1, 110, 22),
		})
		if err != nil {
			t.Fatalf("AddUsage: %v", err)
		}
		// A second writer (another replica) adds to the same minute.
		if err := s.AddUsage(t.Context(), []UsageRow{usageRow(UsageByModel, "gpt-4o", t0, 1, 0, 1, 1)}); err != nil {
			t.Fatalf("AddUsage: %v", err)
		}
		got, err := s.QueryUsage(t.Context(), UsageByModel, t0, t0.Add(time.Hour))
		if err != nil {
			t.Fatalf("QueryUsage: %v", err)
		}
		want := []UsageRow{
			usageRow(UsageByModel, "gpt-4o", t0, 4, 1, 111, 23),
			usageRow(UsageByModel, "llama", t0.Add(time.Minute), 5, 0, 0, 0),
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("QueryUsage:\n got %v\nwant %v", got, want)
		}
		// The window is [from, to): the second minute only.
		got, err = s.QueryUsage(t.Context(), UsageByModel, t0.Add(time.Minute), t0.Add(2*time.Minute))
		if err != nil || len(got) != 1 || got[0].Name != "llama" {
			t.Fatalf("QueryUsage of the second minute: %v, %v; want llama only", got, err)
		}
		if err := s.PruneUsage(t.Context(), t0.Add(time.Minute)); err != nil {
			t.Fatalf("PruneUsage: %v", err)
		}
		got, err = s.QueryUsage(t.Context(), UsageByModel, t0, t0.Add(time.Hour))
		if err != nil || len(got) != 1 || got[0].Name != "llama" {
			t.Fatalf("after pruning the first minute: %v, %v; want llama only", got, err)
		}
		if got, _ := s.QueryUsage(t.Context(), UsageByUpstream, t0, t0.Add(time.Hour)); len(got) != 0 {
			t.Fatalf("upstream rows of a pruned minute: %v", got)
		}
	})
}

// TestUsageConcurrentWriters: two stores on one database (two replicas) adding to the
// same keys at once lose nothing.
func TestUsageConcurrentWriters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn := b.newDSN(t)
		stores := []Store{openStore(t, dsn, options{}), openStore(t, dsn, options{})}
		t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
		const writes = 20
		var wg sync.WaitGroup
		errs := make(chan error, 2*writes)
		for i := range 2 * writes {
			s := stores[i%2]
			wg.Go(func() {
				// Keys in opposite orders from the two writers.
				rows := []UsageRow{usageRow(UsageByModel, "a", t0, 1, 0, 0, 0), usageRow(UsageByModel, "b", t0, 1, 0, 0, 0)}
				if i%2 == 1 {
					rows[0], rows[1] = rows[1], rows[0]
				}
				errs <- s.AddUsage(t.Context(), rows)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("AddUsage: %v", err)
			}
		}
		for _, s := range stores {
			got, err := s.QueryUsage(t.Context(), UsageByModel, t0, t0.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0].Requests != 2*writes || got[1].Requests != 2*writes {
				t.Fatalf("after %d concurrent adds per key: %v; want %d each, from either store", 2*writes, got, 2*writes)
			}
		}
	})
}
