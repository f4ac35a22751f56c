package connbudget

import (
	"testing"
	"time"
)

func TestBackoffCeiling(t *testing.T) {
	pace, lease := 100*time.Millisecond, 3*time.Second
	for attempt, want := range []time.Duration{100, 200, 200, 200} {
		if got := backoffCeiling(pace, lease, attempt); got != want*time.Millisecond {
			t.Errorf("attempt %d: ceiling %v, want %v", attempt, got, want*time.Millisecond)
		}
	}
	if got := backoffCeiling(time.Second, 3*time.Second, 5); got != 1500*time.Millisecond {
		t.Errorf("a lease shorter than 4 paces: ceiling %v, want half the lease", got)
	}
	if got := backoffCeiling(time.Second, time.Second, 3); got != time.Second {
		t.Errorf("a lease shorter than twice the pace: ceiling %v, want the pace", got)
	}
}

// The pace of a refusal, from the fields of the server's error (the real
// drivers' errors are read in TestRefusedConnectsWaitForRoom).
func TestStatedPace(t *testing.T) {
	const hint11 = "Shrink the pools. Pools re-read their share every 1000 ms (connbudget.refresh_interval)."
	for _, c := range []struct {
		where, hint, message string
		pace, lease          time.Duration
	}{
		{"connbudget: retry_ms=200 lease_ms=3000 protocol=2", "", "", 200 * time.Millisecond, 3 * time.Second},
		{"", hint11, "", time.Second, 0},
		{"connbudget: retry_ms=300 lease_ms=900 protocol=2", hint11, "", 300 * time.Millisecond, 900 * time.Millisecond},
		{"", "", "sorry, too many clients already", 0, 0},
		{"", "", "FATAL: connbudget: retry_ms=40 lease_ms=1", 40 * time.Millisecond, 0},
		{"connbudget: retry_ms=abc lease_ms=3000", "", "", 0, 3 * time.Second},
		{"connbudget: retry_ms=5 protocol=2", "", "", 0, 0},
		{"connbudget: retry_ms=99999999999 protocol=2", "", "", 0, 0},
		{"connbudget: retry_ms=-200 protocol=2", "", "", 0, 0},
		{"connbudget: retry_ms=200x lease_ms=1", "", "", 0, 0},
		{"connbudget: retry_ms=+200", "", "", 0, 0},
		{"", "Pools re-read their share every 1000 ms (something else).", "", 0, 0},
	} {
		pace, lease := statedPace(c.where, c.hint, c.message)
		if pace != c.pace || lease != c.lease {
			t.Errorf("statedPace(%q, %q, %q) = %v, %v; want %v, %v", c.where, c.hint, c.message, pace, lease, c.pace, c.lease)
		}
	}
}
