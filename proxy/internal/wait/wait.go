// Package wait is for tests that wait on a condition with a deadline instead of sleeping
// for luck.
package wait

import (
	"runtime"
	"testing"
	"time"
)

// Deadline is how long For waits.
const Deadline = 5 * time.Second

// For polls cond until it holds, failing t when it does not within Deadline; what names the
// condition in the failure.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(200 * time.Microsecond)
	}
}
