package connbudget

import (
	"fmt"
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

// whereError is an error with a context field, as *pq.Error and
// *pgconn.PgError have.
type whereError struct{ Where, Message string }

func (e *whereError) Error() string { return e.Message }

// The pace of a refusal, from the context field of the server's error, or
// from its message (the real drivers' errors are read in
// TestRefusedConnectsWaitForRoom).
func TestRefusalPace(t *testing.T) {
	for _, c := range []struct {
		where, message string
		pace, lease    time.Duration
	}{
		{"connbudget: retry_ms=200 lease_ms=3000 protocol=2", "", 200 * time.Millisecond, 3 * time.Second},
		{"", "sorry, too many clients already", 0, 0},
		{"", "FATAL: connbudget: retry_ms=40 lease_ms=1", 40 * time.Millisecond, 0},
		{"connbudget: retry_ms=abc lease_ms=3000", "", 0, 3 * time.Second},
		{"connbudget: retry_ms=5 protocol=2", "", 0, 0},
		{"connbudget: retry_ms=99999999999 protocol=2", "", 0, 0},
		{"connbudget: retry_ms=-200 protocol=2", "", 0, 0},
		{"connbudget: retry_ms=200x lease_ms=1", "", 0, 0},
		{"connbudget: retry_ms=+200", "", 0, 0},
		{"connbudget: not_retry_ms=200", "", 0, 0},
	} {
		err := fmt.Errorf("wrapped: %w", &whereError{c.where, c.message})
		if pace, lease := refusalPace(err); pace != c.pace || lease != c.lease {
			t.Errorf("refusalPace(%q, %q) = %v, %v; want %v, %v", c.where, c.message, pace, lease, c.pace, c.lease)
		}
	}
}
