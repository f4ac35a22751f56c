package connbudget

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"
)

// The protocol's queries (docs/protocol.md, sections 3 and 5).
const (
	shareSQL     = "SELECT set_config('connbudget.demand', $1, false), current_setting('connbudget.share')"
	poolShareSQL = "SELECT max_size, min_size, budget, refresh_ms FROM connbudget.pool_share($1::int)"
	// how often a pool looks again for an extension it did not find
	probeInterval = 30 * time.Second
)

// jitter is d scaled by a factor drawn uniformly from [lo, hi] percent.
func (b *Budget) jitterLocked(d time.Duration, lo, hi int) time.Duration {
	pct := lo + b.rng.Intn(hi-lo+1)
	return d / 100 * time.Duration(pct)
}

// intervalLocked is the refresh interval: the configured one, else the
// server's, else 1 s before the server said; 30 s where it has no
// connbudget.
func (b *Budget) intervalLocked() time.Duration {
	switch {
	case b.opts.RefreshInterval > 0:
		return b.opts.RefreshInterval
	case b.status == statusNoExtension:
		return probeInterval
	case b.serverMS > 0:
		return time.Duration(b.serverMS) * time.Millisecond
	}
	return time.Second
}

// limitLocked is the most connections the pool may hold now: its share
// within its own maximum; one before the first answer; a fixed size where
// there is no share. database/sql cannot hold 0 connections (0 is "no
// limit"): with a share of 0 the pool holds one, and connects beyond it
// are refused by the server and retried as backpressure.
func (b *Budget) limitLocked() int {
	var limit int
	switch {
	case b.status == statusNoExtension || b.status == statusOther:
		limit = b.opts.FixedSize
		if limit == 0 {
			limit = b.userMax
		}
		if limit == 0 {
			limit = 10
		}
	case !b.haveSh:
		limit = 1
	default:
		limit = b.sh.maxSize
		if b.userMax > 0 && b.userMax < limit {
			limit = b.userMax
		}
	}
	if limit < 1 {
		limit = 1
	}
	return limit
}

// demandLocked is what the pool could use: the busiest moment (in use plus
// waiting) of this refresh interval and the 5 before, plus 25% headroom
// (at least 1), at least the pool's minimum and its part of the
// application's, at most its maximum. It rises at once and falls only when
// a busy moment has left the window, so a steady pool reports a steady
// number.
func (b *Budget) demandLocked() int {
	busy := b.intervalPeak
	for _, p := range b.peaks {
		if p > busy {
			busy = p
		}
	}
	headroom := (busy*25 + 99) / 100
	if headroom < 1 {
		headroom = 1
	}
	demand := busy + headroom
	if demand < b.opts.MinSize {
		demand = b.opts.MinSize
	}
	if b.haveSh && demand < b.sh.minSize {
		demand = b.sh.minSize
	}
	if b.userMax > 0 && demand > b.userMax {
		demand = b.userMax
	}
	return demand
}

// sampleLoop samples the pool's use and keeps its size, often: every
// 100 ms, or 4 times per refresh interval when that is shorter.
func (b *Budget) sampleLoop(ctx context.Context) {
	defer b.done.Done()
	for {
		b.mu.Lock()
		every := b.intervalLocked() / 4
		b.mu.Unlock()
		if every > 100*time.Millisecond {
			every = 100 * time.Millisecond
		}
		if every < 10*time.Millisecond {
			every = 10 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		b.sample()
		b.resize()
	}
}

// sample notes how busy the pool is. database/sql does not show its
// waiting callers, only how many waits ended and how long they took: the
// waits that ended since the last sample, spread over its time, are the
// callers that waited on average (at most one per wait).
func (b *Budget) sample() {
	s := b.db.Stats()
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	waiters := 0
	if n := s.WaitCount - b.prev.WaitCount; n > 0 {
		dt := now.Sub(b.prevAt)
		if dt <= 0 {
			dt = time.Millisecond
		}
		waited := s.WaitDuration - b.prev.WaitDuration
		waiters = int((waited + dt - 1) / dt)
		if waiters < 1 {
			waiters = 1
		}
		if int64(waiters) > n {
			waiters = int(n)
		}
	}
	if busy := s.InUse - b.holding + waiters; busy > b.intervalPeak {
		b.intervalPeak = busy
	}
	// connections gone while the pool held more than its size: surplus
	// closed (idle ones by SetMaxIdleConns, the others as they came back)
	if limit := b.stats.Limit; b.prev.OpenConnections > limit && s.OpenConnections < b.prev.OpenConnections {
		floor := s.OpenConnections
		if floor < limit {
			floor = limit
		}
		b.stats.ClosedSurplus += uint64(b.prev.OpenConnections - floor)
	}
	b.prev, b.prevAt = s, now
}

// resize sets the pool to its limit. database/sql closes idle connections
// beyond MaxIdleConns at once and, while it holds more than MaxOpenConns,
// closes the ones that come back instead of keeping them, so no caller
// fails because the pool shrank. While it holds too many, only as many
// idle connections are kept as fit beside those in use.
func (b *Budget) resize() {
	b.resizeMu.Lock()
	defer b.resizeMu.Unlock()
	b.mu.Lock()
	db, limit := b.db, b.limitLocked()
	b.stats.Limit = limit
	b.mu.Unlock()
	if limit != b.appliedMax {
		// SetMaxOpenConns lowers MaxIdleConns with it, never raises it
		db.SetMaxOpenConns(limit)
		b.appliedMax, b.appliedIdle = limit, -1
	}
	s := db.Stats()
	idle := limit
	if b.opts.MaxIdle > 0 && b.opts.MaxIdle < idle {
		idle = b.opts.MaxIdle
	}
	if idle < b.opts.MinSize {
		idle = b.opts.MinSize
		if idle > limit {
			idle = limit
		}
	}
	if s.OpenConnections > limit && limit-s.InUse < idle {
		idle = limit - s.InUse
		if idle < 0 {
			idle = 0
		}
	}
	if idle != b.appliedIdle {
		db.SetMaxIdleConns(idle)
		b.appliedIdle = idle
	}
}

// refreshLoop refreshes when it is time (docs/protocol.md, section 2): at
// once, then when each refresh says.
func (b *Budget) refreshLoop(ctx context.Context) {
	defer b.done.Done()
	for next := time.Duration(0); ; {
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		next = b.refresh(ctx)
	}
}

// publishPeriod is how long the server takes to publish an allocation
// that knows a changed demand: a tenth of the refresh interval, from 10 ms
// to 1 s.
func publishPeriod(interval time.Duration) time.Duration {
	p := interval / 10
	if p < 10*time.Millisecond {
		p = 10 * time.Millisecond
	}
	if p > time.Second {
		p = time.Second
	}
	return p
}

// refresh reports the demand and reads the share on one of the pool's own
// connections, borrowed for at most one refresh interval (when none comes
// free, the pool is saturated: this refresh is skipped and counted), and
// resizes the pool. It returns the time until the next refresh.
func (b *Budget) refresh(ctx context.Context) time.Duration {
	b.mu.Lock()
	interval, demand := b.intervalLocked(), b.demandLocked()
	b.mu.Unlock()

	borrow, cancel := context.WithTimeout(ctx, interval)
	conn, err := b.db.Conn(borrow)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		var refused *RefusedError
		b.mu.Lock()
		defer b.mu.Unlock()
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &refused) && !refused.Permanent) {
			b.stats.SkippedRefreshes++
		} else {
			b.failLocked("connect", "no connection to refresh the share with: %v", err)
		}
		return b.jitterLocked(interval, 90, 110)
	}
	b.mu.Lock()
	b.holding++
	b.mu.Unlock()
	// not cancelled by Close: lib/pq closes the socket of a query whose
	// context ends, and the pool would then fail to close it again
	query, cancel := context.WithTimeout(context.Background(), interval+time.Second)
	sh, protocol, err := askShare(query, conn, demand)
	cancel()
	conn.Close()

	b.mu.Lock()
	b.holding--
	if ctx.Err() != nil {
		b.mu.Unlock()
		return 0 // closing: whatever the query did is not the server's answer
	}
	next := b.takeLocked(sh, protocol, sqlState(err), err, demand)
	b.mu.Unlock()
	b.resize()
	return next
}

// askShare runs the protocol's query on conn: protocol 2, or 1 where the
// server does not know 2 (connbudget 1.1 or older, or none). err is the
// query's error or what was wrong with the answer (an *answerError).
func askShare(ctx context.Context, conn *sql.Conn, demand int) (sh share, protocol int, err error) {
	values, err := queryOneRow(ctx, conn, shareSQL, 2, strconv.Itoa(demand))
	if err == nil {
		if !values[1].Valid {
			return sh, 2, badAnswer(badNull, "connbudget.share is NULL")
		}
		sh, err = parseShare(values[1].String)
		return sh, 2, err
	}
	if state := sqlState(err); state != "42704" && state != "42602" {
		return sh, 2, err
	}
	if values, err = queryOneRow(ctx, conn, poolShareSQL, 4, demand); err != nil {
		return sh, 1, err
	}
	sh, err = parsePoolShare(values)
	return sh, 1, err
}

// queryOneRow runs query and reads its answer, which must be one row of
// ncol columns, as text.
func queryOneRow(ctx context.Context, conn *sql.Conn, query string, ncol int, arg any) ([]sql.NullString, error) {
	rows, err := conn.QueryContext(ctx, query, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if len(cols) != ncol {
		return nil, badAnswer(badShape, "the share query answered %d columns, not %d", len(cols), ncol)
	}
	values := make([]sql.NullString, ncol)
	dest := make([]any, ncol)
	for i := range values {
		dest[i] = &values[i]
	}
	n := 0
	for ; rows.Next(); n++ {
		if n == 0 {
			if err := rows.Scan(dest...); err != nil {
				return nil, badAnswer(badText, "the share query answered what is not text: %v", err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if n != 1 {
		return nil, badAnswer(badShape, "the share query answered %d rows, not 1", n)
	}
	return values, nil
}

// takeLocked takes in what a refresh found (err and its SQLSTATE state, or
// a share sh in protocol protocol for demand) and returns the time until
// the next refresh. An answer that is not one is an error, never a size:
// the pool keeps its last good share (before one, a single connection).
func (b *Budget) takeLocked(sh share, protocol int, state string, err error, demand int) time.Duration {
	interval := b.intervalLocked()
	var bad *answerError
	switch {
	case errors.As(err, &bad):
		b.protocol = protocol
		b.failLocked(bad.kind, "%v; ignored, the pool stays within %d connections", err, b.limitLocked())
		return b.jitterLocked(interval, 90, 110)
	case state == "42883" || state == "3F000" || state == "55000":
		// no usable connbudget here: a fixed size, looked for again now and then
		b.stats.Errors["no-extension"]++
		if b.status != statusNoExtension {
			b.status = statusNoExtension
			b.opts.Logf("connbudget: the server has no usable connbudget extension (%v); pod %q of %q uses a fixed size of %d", err, b.pod, b.app, b.limitLocked())
		}
		b.protocol = 0
		return b.jitterLocked(b.intervalLocked(), 90, 110)
	case err != nil:
		b.failLocked("query", "reading the share failed: %v", err)
		return b.jitterLocked(interval, 90, 110)
	}
	b.protocol = protocol
	b.stats.Refreshes++
	b.lastBad = ""
	switch sh.status {
	case statusOther:
		if b.status != statusOther {
			b.opts.Logf("connbudget: the server does not govern pod %q of %q (no row in connbudget.application_limits, and connbudget.unconfigured_applications = other): a fixed size of %d", b.pod, b.app, b.limitLocked())
		}
		b.status = statusOther
		return b.jitterLocked(interval, 90, 110)
	case statusLeft:
		// handed back on another connection of this pool session: the
		// next report brings it back
		b.status = statusLeft
		return b.jitterLocked(interval, 90, 110)
	case statusRefused:
		b.stats.Errors["refused"]++
		if b.status != statusRefused {
			b.opts.Logf("connbudget: the server no longer gives pod %q of %q a share (%s %s); the pool stays within %d connections", b.pod, b.app, sh.sqlstate, sh.reason, b.limitLocked())
		}
		b.status = statusRefused
		return b.jitterLocked(interval, 1000, 1100)
	}
	changed := b.reported && demand != b.lastDemand
	first := !b.reported
	b.status, b.sh, b.haveSh, b.serverMS = statusOK, sh, true, sh.refreshMS
	b.lastDemand, b.reported = demand, true
	interval = b.intervalLocked()
	if now := time.Now(); now.Sub(b.rotated) >= interval/10*9 {
		b.peaks[b.peakNext] = b.intervalPeak
		b.peakNext = (b.peakNext + 1) % len(b.peaks)
		b.intervalPeak = b.prev.InUse - b.holding
		b.rotated = now
	}
	switch {
	case changed:
		// the answer is the allocation from before the new demand: ask
		// again once the server has published one that knows it
		return publishPeriod(interval)
	case first:
		// the second refresh at a random phase, so that pools started
		// together do not refresh in step
		return b.jitterLocked(interval, 10, 100)
	case sh.maxSize == 0:
		return b.jitterLocked(interval, 100, 120)
	}
	return b.jitterLocked(interval, 90, 110)
}

// failLocked counts an error of a kind and logs it, once until the kind
// changes or a good answer comes.
func (b *Budget) failLocked(kind, format string, args ...any) {
	b.stats.Errors[kind]++
	if kind != b.lastBad {
		b.opts.Logf("connbudget: pod %q of %q: "+format, append([]any{b.pod, b.app}, args...)...)
	}
	b.lastBad = kind
}
