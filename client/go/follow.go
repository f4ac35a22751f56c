package connbudget

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// shareSQL is the protocol's query (docs/protocol.md, section 3).
const shareSQL = "SELECT set_config('connbudget.demand', $1, false), current_setting('connbudget.share')"

// probeInterval is how often a pool looks again for connbudget on a
// server that has none.
const probeInterval = 30 * time.Second

// intervalLocked is the refresh interval: the server's (1 s before it
// said), or 30 s where it has no connbudget.
func (b *Budget) intervalLocked() time.Duration {
	if b.st.Status == "no-extension" {
		return probeInterval
	}
	return time.Duration(b.serverMS) * time.Millisecond
}

// limitLocked is the most connections the pool may hold now: its share
// within its own maximum; one before the first answer; a fixed size where
// there is no share. database/sql cannot hold 0 connections (0 is "no
// limit"): with a share of 0 the pool holds one, and connects beyond it
// are refused by the server and retried as backpressure.
func (b *Budget) limitLocked() int {
	switch {
	case b.st.Status == "no-extension" || b.st.Status == "other":
		if b.poolMax > 0 {
			return b.poolMax
		}
		return 10
	case b.poolMax > 0:
		return maxOf(minOf(b.st.Share, b.poolMax), 1)
	}
	return maxOf(b.st.Share, 1)
}

// demandLocked is what the pool could use: the busiest moment (in use plus
// waiting) of this refresh interval and the 5 before, plus 25% headroom
// (at least 1), at least the pool's minimum and its part of the
// application's, at most its maximum. It rises at once and falls only when
// a busy moment has left the window, so a steady pool reports a steady
// number.
func (b *Budget) demandLocked() int {
	busy := maxOf(0, b.peaks[:]...)
	demand := maxOf(busy+maxOf((busy*25+99)/100, 1), b.opts.MinSize, b.st.MinSize)
	if b.poolMax > 0 {
		return minOf(demand, b.poolMax)
	}
	return demand
}

// run refreshes when it is time (docs/protocol.md, section 2): at once,
// then when each refresh says; and samples the pool's use and keeps its
// size, often: every 100 ms, 4 times per refresh interval when that is
// shorter, and right after each refresh.
func (b *Budget) run(ctx context.Context) {
	defer b.done.Done()
	for next := time.Now(); ctx.Err() == nil; {
		b.mu.Lock()
		every := minOf(b.intervalLocked()/4, 100*time.Millisecond, time.Until(next))
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if !time.Now().Before(next) {
			next = time.Now().Add(b.refresh(ctx))
		}
		s, now := b.db.Stats(), time.Now()
		b.mu.Lock()
		b.sampleLocked(s, now)
		b.mu.Unlock()
	}
}

// sampleLocked notes how busy the pool is, whose stats are s, and keeps
// it within its limit. database/sql does not show its waiting callers,
// only how many waits ended and how long they took: the waits that ended
// since the last sample, spread over its time, are the callers that
// waited on average (at least one, at most one per wait).
//
// database/sql closes idle connections beyond MaxIdleConns at once and,
// while it holds more than MaxOpenConns, closes the ones that come back
// instead of keeping them, so no caller fails because the pool shrank.
// While it holds too many, only as many idle connections are kept as fit
// beside those in use (none: 0 or less).
func (b *Budget) sampleLocked(s sql.DBStats, now time.Time) {
	waiters := 0
	if n := s.WaitCount - b.prev.WaitCount; n > 0 {
		waited, dt := s.WaitDuration-b.prev.WaitDuration, now.Sub(b.prevAt)+time.Nanosecond // never 0
		waiters = int(minOf(maxOf(int64((waited+dt-1)/dt), 1), n))
	}
	if now.Sub(b.rotated) >= b.intervalLocked() {
		b.now, b.rotated = (b.now+1)%len(b.peaks), now
		b.peaks[b.now] = 0
	}
	if busy := s.InUse + waiters; busy > b.peaks[b.now] {
		b.peaks[b.now] = busy
	}
	b.prev, b.prevAt = s, now
	limit, idle := b.limitLocked(), b.limitLocked()
	if s.OpenConnections > limit {
		idle = limit - s.InUse
	}
	if limit != s.MaxOpenConnections {
		b.db.SetMaxOpenConns(limit) // which lowers MaxIdleConns with it, never raises it
	}
	b.db.SetMaxIdleConns(idle)
}

// publishPeriod is how long the server takes to publish an allocation
// that knows a changed demand: a tenth of the refresh interval, from 10 ms
// to 1 s.
func publishPeriod(interval time.Duration) time.Duration {
	return minOf(maxOf(interval/10, 10*time.Millisecond), time.Second)
}

// refresh reports the demand and reads the share on one of the pool's own
// connections, waiting at most one refresh interval for one (when none
// comes free, the pool is saturated: this refresh is skipped and counted).
// It returns the time until the next refresh.
func (b *Budget) refresh(ctx context.Context) time.Duration {
	b.mu.Lock()
	interval, demand := b.intervalLocked(), b.demandLocked()
	b.mu.Unlock()
	sh, err := askShare(ctx, b.db, demand, interval)
	b.mu.Lock()
	defer b.mu.Unlock()
	if ctx.Err() != nil {
		return 0 // closing: whatever happened is not the server's answer
	}
	return b.takeLocked(sh, err, demand)
}

// askShare runs the protocol's query on a connection of db, waiting for
// one for at most interval. err is what went wrong, or what was wrong with
// the answer (errAnswer).
func askShare(ctx context.Context, db *sql.DB, demand int, interval time.Duration) (share, error) {
	borrow, cancel := context.WithTimeout(ctx, interval)
	conn, err := db.Conn(borrow)
	cancel()
	if err != nil {
		return share{}, err
	}
	defer conn.Close()
	// not cancelled by Close: lib/pq closes the socket of a query whose
	// context ends, and the pool would then fail to close it again
	query, cancel := context.WithTimeout(context.Background(), interval+time.Second)
	defer cancel()
	rows, err := conn.QueryContext(query, shareSQL, strconv.Itoa(demand))
	if err != nil {
		return share{}, err
	}
	defer rows.Close()
	var set, text sql.NullString
	n := 0
	for ; rows.Next(); n++ {
		if err := rows.Scan(&set, &text); err != nil {
			return share{}, err
		}
	}
	if err := rows.Err(); err != nil {
		return share{}, err
	}
	if n != 1 {
		return share{}, fmt.Errorf("%w: the share query answered %d rows, not 1", errAnswer, n)
	} else if !text.Valid {
		return share{}, fmt.Errorf("%w: connbudget.share is NULL", errAnswer)
	}
	return parseShare(text.String)
}

// takeLocked takes in what a refresh found (an error, or a share sh for
// demand) and returns the time until the next refresh. An answer that is
// not one is an error, never a size: the pool keeps its last good share
// (before one, a single connection).
func (b *Budget) takeLocked(sh share, err error, demand int) time.Duration {
	lo, hi := 90, 110 // the next refresh, in percent of the interval
	was, first := b.st.Status, b.st.Share < 0
	if err == nil {
		b.st.Status, b.st.Refreshes, b.lastBad = sh.status, b.st.Refreshes+1, nil
	}
	switch state := sqlState(err); {
	case errors.Is(err, context.DeadlineExceeded) || state == "53300":
		b.st.SkippedRefreshes++
	case errors.Is(err, errAnswer):
		b.failLocked(&b.st.Errors.Answer, "%v; ignored, the pool stays within %d connections", err, b.limitLocked())
	case state == "42704" || state == "42602":
		// no connbudget.share: no connbudget, or one older than 1.2 (no
		// protocol 2). A fixed size, and a look again now and then.
		b.st.Status = "no-extension"
		b.failLocked(&b.st.Errors.NoExtension, "the server has no connbudget 1.2 or later (%v); the pool has a fixed size of %d", err, b.limitLocked())
	case err != nil:
		b.failLocked(&b.st.Errors.Query, "no share: %v", err)
	case sh.status == "other" && was != "other":
		b.logf("the server does not govern the pool (its application has no row in connbudget.application_limits): a fixed size of %d", b.limitLocked())
	case sh.status == "refused":
		// the rules changed under the pool: asked again in 10 intervals
		if b.st.Errors.Refused++; was != "refused" {
			b.logf("the server no longer gives the pool a share (%+.128q); it stays within %d connections", sh.text, b.limitLocked())
		}
		lo, hi = 1000, 1100
	case sh.status == "ok":
		changed := !first && demand != b.st.Demand
		b.st.Share, b.st.MinSize, b.st.Budget = sh.maxSize, sh.minSize, sh.budget
		b.st.Allocation, b.st.Pods, b.st.Demand, b.serverMS = sh.allocation, sh.pods, demand, sh.refreshMS
		switch {
		case changed:
			// the answer is the allocation from before the new demand: ask
			// again once the server has published one that knows it
			return publishPeriod(b.intervalLocked())
		case first:
			// the second refresh at a random phase, so that pools started
			// together do not refresh in step
			lo, hi = 10, 100
		case sh.maxSize == 0:
			lo, hi = 100, 120
		}
	}
	// (status left: handed back on another connection of this pool
	// session; the next report brings it back.) The interval scaled by a
	// factor drawn uniformly from [lo, hi] percent:
	return b.intervalLocked() / 100 * time.Duration(lo+b.rng.Intn(hi-lo+1))
}

// failLocked counts an error and logs it, once until the kind of error
// changes or a good answer comes.
func (b *Budget) failLocked(count *uint64, format string, args ...any) {
	if *count++; count != b.lastBad {
		b.logf(format, args...)
	}
	b.lastBad = count
}

// share is one answer of the server, checked.
type share struct {
	text, status                        string
	maxSize, minSize, budget, refreshMS int
	allocation, pods                    int // -1: not said
}

// errAnswer marks an answer that is not one: never a size.
var errAnswer = errors.New("not a share")

// badAnswer is the error of a share that is not one, which it shows
// quoted, at most 128 characters of it, with anything but printable ASCII
// escaped, so that an answer cannot forge or flood log lines.
func badAnswer(text, format string, args ...any) error {
	return fmt.Errorf("connbudget.share is %+.128q, %w: "+format, append([]any{text, errAnswer}, args...)...)
}

// parseNumber reads a number as every number from a server is read: the
// whole of text a base-10 integer (digits after an optional '-'; no '+',
// no space, nothing before or after) within [lo, hi].
func parseNumber(text string, lo, hi int64) (int64, bool) {
	v, err := strconv.ParseInt(text, 10, 64)
	return v, err == nil && !strings.HasPrefix(text, "+") && v >= lo && v <= hi
}

// parseShare checks connbudget.share (docs/protocol.md, sections 4 and 9):
// at most 4096 bytes of words key=value one space apart; words it does
// not know are skipped; a known word twice, a word without '=', a number
// that is not a complete integer in its range, an unknown status, or a
// status "ok" without max_size, min_size, budget and refresh_ms in order,
// is an error.
func parseShare(text string) (share, error) {
	sh := share{text: text, allocation: -1, pods: -1}
	// the numbers and their ranges (section 4): sizes within the most
	// backends PostgreSQL allows, intervals within the range of
	// connbudget.refresh_interval
	numbers := map[string]struct {
		field  *int
		lo, hi int64
	}{"protocol": {nil, 2, 1000}, "max_size": {&sh.maxSize, 0, 262143}, "min_size": {&sh.minSize, 0, 262143},
		"budget": {&sh.budget, 0, 262143}, "allocation": {&sh.allocation, 0, 262143}, "pods": {&sh.pods, 0, 1000000},
		"refresh_ms": {&sh.refreshMS, 10, 3600000}}
	seen := map[string]bool{}
	for _, word := range strings.Split(text, " ") {
		key, value, ok := strings.Cut(word, "=")
		number, known := numbers[key]
		switch {
		case !ok || key == "" || len(text) > 4096:
			return sh, badAnswer(text, "not words key=value")
		case !known && key != "status":
			continue // a later version's word
		case seen[key]:
			return sh, badAnswer(text, "%s twice", key)
		}
		seen[key] = true
		v, ok := parseNumber(value, number.lo, number.hi)
		switch {
		case key == "status" && value != "ok" && value != "other" && value != "left" && value != "refused":
			return sh, badAnswer(text, "no status this client knows")
		case key == "status":
			sh.status = value
		case !ok:
			return sh, badAnswer(text, "%s is not an integer in [%d, %d]", key, number.lo, number.hi)
		case number.field != nil:
			*number.field = int(v)
		}
	}
	switch {
	case sh.status == "":
		return sh, badAnswer(text, "no status")
	case sh.status != "ok":
	case !seen["max_size"] || !seen["min_size"] || !seen["budget"] || !seen["refresh_ms"]:
		return sh, badAnswer(text, "a share without max_size, min_size, budget and refresh_ms")
	case sh.minSize > sh.maxSize || sh.maxSize > sh.budget:
		return sh, badAnswer(text, "not min_size <= max_size <= budget")
	}
	return sh, nil
}
