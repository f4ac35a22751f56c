package connbudget

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"reflect"
	"time"
)

// A RefusedError is a connect the server refused: with SQLSTATE 53300
// (too_many_connections: backpressure) when it was still refused at the
// caller's deadline (Err is then the last refusal), or at once with 42501 (the role may not claim the
// application, or the pod belongs to another role) or 53400 (the role
// holds connbudget.max_pods_per_role pods, or the pod table is full),
// which do not change by themselves. errors.As finds it, and through it
// the driver's own error (*pq.Error, *pgconn.PgError).
type RefusedError struct {
	SQLState  string // 53300, 42501 or 53400
	Permanent bool   // 42501 or 53400: asked again only every 10 refresh intervals
	Err       error  // the driver's error
}

func (e *RefusedError) Error() string {
	if e.Permanent {
		return fmt.Sprintf("connbudget: the server refuses this pool's connections (SQLSTATE %s, permanent until the limits change): %v", e.SQLState, e.Err)
	}
	return fmt.Sprintf("connbudget: the server refused connections until the deadline (SQLSTATE %s, backpressure): %v", e.SQLState, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Connector wraps the driver's connector so that the pool's connects
// follow the budget: a connect refused with 53300 is retried within the
// caller's deadline (or Options.ConnectWait when its context has none),
// first after up to the pace the server states in the refusal, then with
// exponential backoff and full jitter, up to twice that pace; 42501 and 53400 are returned at
// once as a *RefusedError, and connects after one fail at once with the
// same error for 10 refresh intervals, so that the server is not
// hammered. Open the pool with sql.OpenDB on it.
//
// base must connect with this Budget's identity: build it from DSN (or
// StartupOptions).
func (b *Budget) Connector(base driver.Connector) driver.Connector {
	return &connector{b: b, base: base}
}

type connector struct {
	b    *Budget
	base driver.Connector
}

func (c *connector) Driver() driver.Driver { return c.base.Driver() }

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	b := c.b
	if err := b.permanentRefusal(); err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(b.opts.ConnectWait)
	}
	var refusal error // the last 53300
	for attempt := 0; ; attempt++ {
		conn, err := c.base.Connect(ctx)
		if err == nil {
			return conn, nil
		}
		state := sqlState(err)
		switch {
		case state == "42501" || state == "53400":
			return nil, b.notePermanent(&RefusedError{SQLState: state, Permanent: true, Err: err})
		case state == "53300":
			refusal = err
		case refusal != nil && (ctx.Err() != nil || timedOut(err)):
			// the caller's deadline came while this connect waited for room
			// (a driver may see its dial time out a moment before ctx ends)
			return nil, &RefusedError{SQLState: "53300", Err: refusal}
		default:
			return nil, err
		}
		pace, lease := b.noteRefused(err)
		delay := b.randDuration(backoffCeiling(pace, lease, attempt))
		left := time.Until(deadline)
		if left <= 0 {
			return nil, &RefusedError{SQLState: state, Err: err}
		}
		if delay > left {
			delay = left
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, &RefusedError{SQLState: state, Err: err}
		case <-timer.C:
		}
	}
}

// backoffCeiling bounds the wait before a connect refused attempt+1 times
// is tried again, which is drawn uniformly from [0, ceiling] (full
// jitter): pace*2^attempt, at most twice the pace (so that a pool waiting
// for room retries about once per pace, as the server asks), and at most
// half the time the server keeps the pod's claim on the budget (lease), so
// that the retry comes before the other pods grow back into the room made
// for it.
func backoffCeiling(pace, lease time.Duration, attempt int) time.Duration {
	limit := 2 * pace
	if lease/2 < limit {
		limit = lease / 2
	}
	if limit < pace {
		limit = pace
	}
	ceiling := pace
	for i := 0; i < attempt && ceiling < limit; i++ {
		ceiling *= 2
	}
	if ceiling > limit {
		ceiling = limit
	}
	return ceiling
}

// sqlState is the SQLSTATE of a server's error, from any driver whose
// error has a SQLState method (lib/pq, pgx) or a string field Code.
func sqlState(err error) string {
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		return s.SQLState()
	}
	return errorField(err, "Code")
}

// errorField is the string field name (Where, Hint) of the first error in
// err's chain that has one: *pq.Error and *pgconn.PgError both name the
// error's context field Where and its hint Hint.
func errorField(err error, name string) string {
	for ; err != nil; err = errors.Unwrap(err) {
		v := reflect.ValueOf(err)
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			if v.IsNil() {
				break
			}
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct {
			if f := v.FieldByName(name); f.IsValid() && f.Kind() == reflect.String {
				return f.String()
			}
		}
	}
	return ""
}

// refusalPace is the pace a 53300 refusal states, from the driver's
// error's fields: see statedPace.
func refusalPace(err error) (pace, lease time.Duration) {
	return statedPace(errorField(err, "Where"), errorField(err, "Hint"), err.Error())
}

// statedPace reads the pace of a refusal from its context field where
// ("connbudget: retry_ms=200 lease_ms=3000 protocol=2", connbudget 1.2),
// else from the refresh interval at the end of its hint (connbudget 1.1),
// else from its message; zero when it states none.
func statedPace(where, hint, message string) (pace, lease time.Duration) {
	ms := statedMS(where, "connbudget: retry_ms=", "")
	if ms == 0 {
		ms = statedMS(hint, "re-read their share every ", " ms (connbudget.refresh_interval)")
	}
	if ms == 0 {
		ms = statedMS(message, "connbudget: retry_ms=", "")
	}
	leaseMS := statedMS(where, " lease_ms=", "")
	return time.Duration(ms) * time.Millisecond, time.Duration(leaseMS) * time.Millisecond
}

// noteRefused counts a connect refused with 53300 and returns the pace to
// retry at (what the refusal states, else the refresh interval; a
// configured interval first) and how long the server keeps the pod's claim.
func (b *Budget) noteRefused(err error) (pace, lease time.Duration) {
	stated, lease := refusalPace(err)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.RefusedConnects++
	pace = stated
	if pace == 0 || b.opts.RefreshInterval > 0 {
		pace = b.intervalLocked()
	}
	if lease < pace {
		lease = 3 * pace
	}
	if !b.refusedLog {
		b.refusedLog = true
		b.opts.Logf("connbudget: pod %q of %q: connects refused with 53300 (backpressure: the budget or the application is full); retried within each caller's deadline", b.pod, b.app)
	}
	return pace, lease
}

// notePermanent counts a refusal that will not change by itself, logs it
// once per SQLSTATE, and keeps it to answer connects with for 10 refresh
// intervals.
func (b *Budget) notePermanent(err *RefusedError) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.PermanentRefusals++
	if b.permErr == nil || b.permErr.SQLState != err.SQLState {
		b.opts.Logf("connbudget: pod %q of %q: %v", b.pod, b.app, err)
	}
	b.permErr = err
	b.permUntil = time.Now().Add(10 * b.intervalLocked())
	return err
}

func (b *Budget) permanentRefusal() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.permErr != nil && time.Now().Before(b.permUntil) {
		return b.permErr
	}
	return nil
}

func (b *Budget) randDuration(ceiling time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Duration(b.rng.Int63n(int64(ceiling) + 1))
}

// timedOut reports whether err is a network timeout, as a dial cut short
// by the caller's deadline is.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
