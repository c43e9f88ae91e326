package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/llmproxy-go/llmproxy/proxy/internal/wait"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, roots, floor uint64
		want               int
	}{
		{4 * mib, 0, 64 * mib, 1500},       // 4 + 4×15 = 64
		{4 * mib, 2 * mib, 64 * mib, 1000}, // 4 + (4+2)×10 = 64: roots count
		{16 * mib, 0, 64 * mib, 300},       // 16 + 16×3 = 64
		{30 * mib, 4 * mib, 64 * mib, 100}, // GOGC=100 reaches the floor by itself
		{100 * mib, 0, 64 * mib, 100},      // above the floor: Go's default
		{1024, 0, 64 * mib, 2000},          // a tiny heap: bounded
		{0, 0, 64 * mib, 2000},
	} {
		if got := Percent(tc.live, tc.roots, tc.floor); got != tc.want {
			t.Errorf("Percent(%d MiB live, %d MiB roots, %d MiB floor) = %d, want %d", tc.live/mib, tc.roots/mib, tc.floor/mib, got, tc.want)
		}
	}
}

// gogc reads GOGC.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink []byte

// collections returns how many collections allocating n bytes of short-lived garbage takes.
func collections(n int) uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n/(64<<10); i++ {
		sink = make([]byte, 64<<10)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

func TestFloorSpacesCollections(t *testing.T) {
	const garbage = 512 << 20
	without := collections(garbage)

	stop := Start(128 << 20)
	runtime.GC() // the tuner runs after a collection
	wait.For(t, "the floor to raise GOGC", func() bool {
		return gogc() > basePercent
	})
	with := collections(garbage)
	stop()
	if p := gogc(); p != basePercent {
		t.Errorf("after stop GOGC is %d, want %d", p, basePercent)
	}
	// 512 MiB of garbage over a near-empty heap: every 4 MiB or so without the floor, about
	// every 128 MiB with it.
	if with > 8 || without < 4*with {
		t.Fatalf("512 MiB of garbage took %d collections with a 128 MiB floor and %d without", with, without)
	}
	t.Logf("512 MiB of garbage: %d collections with a 128 MiB floor, %d without", with, without)
}
