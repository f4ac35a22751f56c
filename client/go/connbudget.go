// Package connbudget sizes a database/sql pool from the PostgreSQL
// server's connection budget, as computed by the connbudget extension.
//
// The server knows its connection budget, every application's limits and
// every live pod, and tells each pod's pools their fair share. A Budget
// gives the pool its identity at connect time (DSN), reports the pool's
// demand and reads its share on one of the pool's own connections every
// refresh interval, resizes the pool to the share (SetMaxOpenConns,
// SetMaxIdleConns), retries connects the server refuses as backpressure
// (Connector), and hands the share back on Close:
//
//	budget, err := connbudget.New(connbudget.Options{ApplicationName: "api"})
//	dsn, err := budget.DSN(os.Getenv("DATABASE_URL"))
//	base, err := pq.NewConnector(dsn)
//	db := sql.OpenDB(budget.Connector(base))
//	db.SetMaxOpenConns(20)
//	err = budget.Follow(db)
//	defer budget.Close()
//
// Create the Budget in the process that uses the pool: each Budget is a
// pool session of its own (a random id), so that the processes of a
// pre-fork server split their pod's share instead of each taking all of it;
// a Budget made before a fork would be one session in two processes.
//
// It speaks protocol 2 of connbudget 1.2 and later (docs/protocol.md); a
// server without it gets a pool of a fixed size.
package connbudget

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	mathrand "math/rand"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Options configure a Budget. Only ApplicationName is required. The
// pool's own maximum is its MaxOpenConns when Follow is called (0: as
// large as the share); it is also the pool's size where the server gives
// it no share (10 when it is 0).
type Options struct {
	// ApplicationName is the application the pool belongs to, its row in
	// connbudget.application_limits: 1 to 63 bytes of printable ASCII.
	ApplicationName string
	// Pod is the pod's id, 1 to 63 bytes of printable ASCII. Default: the
	// host name, which in Kubernetes is the pod's name.
	Pod string
	// MinSize is the pool's own minimum: the demand it reports is never
	// below it. Default 0.
	MinSize int
	// Logf receives what the Budget has to say: a share it could not read,
	// a server without connbudget, a refusal. Default: log.Printf.
	Logf func(format string, args ...any)
}

// Stats are a Budget's own numbers. Publish them with expvar, for example:
//
//	expvar.Publish("connbudget", expvar.Func(func() any { return budget.Stats() }))
type Stats struct {
	ApplicationName, Pod, PoolSession string
	// Status is "starting" (no answer yet), "ok", "other" (not governed: a
	// fixed size), "left", "refused" (governed no more: the last share
	// stands) or "no-extension" (a fixed size).
	Status string
	// Share, MinSize, Budget, Allocation and Pods are the server's last good
	// share (-1 before one): the pool's max_size and min_size, the budget,
	// the application's allocation and live pods.
	Share, MinSize, Budget, Allocation, Pods int
	RefreshInterval                          time.Duration
	// Limit is the pool's MaxOpenConns, Demand the demand last reported.
	Limit, Demand int
	// SkippedRefreshes: no connection of the pool came free within a
	// refresh interval (the pool was saturated) or the server refused one.
	Refreshes, SkippedRefreshes uint64
	// Errors count what went wrong: answers that are not one, refreshes
	// that got no answer, answers of a server without connbudget 1.2, and
	// shares that said the pool is refused.
	Errors struct{ Answer, Query, NoExtension, Refused uint64 }
	// RefusedConnects counts connects refused with 53300, PermanentRefusals
	// those refused with 42501 or 53400.
	RefusedConnects, PermanentRefusals uint64
}

// A Budget makes one database/sql pool follow its share of the server's
// connection budget. Its methods are safe for concurrent use.
type Budget struct {
	opts Options

	mu       sync.Mutex
	rng      *mathrand.Rand
	db       *sql.DB
	poolMax  int // the pool's own maximum, 0 for none
	closed   bool
	st       Stats
	serverMS int     // the refresh_ms of the last good share
	lastBad  *uint64 // the Errors count of the error logged last
	// the demand: the busiest moments of this refresh interval (peaks[now])
	// and the 5 before
	peaks   [6]int
	now     int
	rotated time.Time
	prev    sql.DBStats
	prevAt  time.Time
	// a refusal that does not change by itself, and until when connects
	// are answered with it instead of asking the server
	permErr   error
	permUntil time.Time

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New checks the options and makes a Budget with a new pool session. It
// connects to nothing: build the pool's connector from DSN and Connector,
// then call Follow.
func New(opts Options) (*Budget, error) {
	if opts.Pod == "" {
		opts.Pod, _ = os.Hostname()
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	for what, id := range map[string]string{"application name": opts.ApplicationName, "pod": opts.Pod} {
		if len(id) < 1 || len(id) > 63 || strings.IndexFunc(id, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			// the server refuses other pod ids (22023), and stores an
			// application_name with other bytes replaced
			return nil, fmt.Errorf("connbudget: %s %q is not 1 to 63 bytes of printable ASCII", what, id)
		}
	}
	// a random pool session, and the jitter's seed
	var random [8]byte
	if _, err := rand.Read(random[:]); err != nil {
		return nil, fmt.Errorf("connbudget: no random pool session id: %w", err)
	}
	return &Budget{opts: opts, serverMS: 1000, rng: mathrand.New(mathrand.NewSource(int64(binary.LittleEndian.Uint64(random[:])))),
		st: Stats{ApplicationName: opts.ApplicationName, Pod: opts.Pod, PoolSession: hex.EncodeToString(random[:]),
			Status: "starting", Share: -1, MinSize: -1, Budget: -1, Allocation: -1, Pods: -1}}, nil
}

// StartupOptions is the value of the options startup parameter that gives
// the server this pool's pod and pool session:
//
//	-c connbudget.pod=<pod> -c connbudget.pool_session=<session>
//
// DSN adds it to a connection string; set it yourself where you build the
// driver's configuration in code (pgx: ConnConfig.RuntimeParams["options"],
// after any options of your own). The server splits the options at
// spaces, with a backslash taking the next byte as it is.
func (b *Budget) StartupOptions() string {
	escape := strings.NewReplacer(`\`, `\\`, ` `, `\ `)
	return "-c connbudget.pod=" + escape.Replace(b.opts.Pod) + " -c connbudget.pool_session=" + b.st.PoolSession
}

// keyword is one key=value of a libpq connection string, as libpq reads
// it: spaces around '=', the value in single quotes or up to the next
// space, a backslash taking the next character (escaped) as it is.
var keyword = regexp.MustCompile(`(?s)^\s*([^=\s]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|((?:[^'\s\\]|\\.)*))\s*`)
var escaped = regexp.MustCompile(`(?s)\\(.)`)

// DSN returns the connection string dsn with this pool's identity added:
// application_name, and connbudget.pod and connbudget.pool_session in
// options (after options dsn already has). dsn is a URL
// (postgres://user@host/db?sslmode=disable) or key=value pairs
// (host=db user=api), as lib/pq and pgx take them; the result has the same
// form. An application_name in dsn is replaced; connbudget settings in its
// options are an error, since they would contradict the pool's own.
func (b *Budget) DSN(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	isURL := err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql")
	var options string
	if isURL {
		options = u.Query().Get("options")
	} else {
		for rest := strings.TrimSpace(dsn); rest != ""; {
			m := keyword.FindStringSubmatch(rest)
			if m == nil {
				return "", errors.New("connbudget: the connection string is neither a URL nor key=value pairs")
			} else if m[1] == "options" {
				options = escaped.ReplaceAllString(m[2]+m[3], "$1")
			}
			rest = rest[len(m[0]):]
		}
	}
	if strings.Contains(options, "connbudget.") {
		return "", fmt.Errorf("connbudget: the connection string's options already set connbudget settings (%q); give the pod as Options.Pod", options)
	}
	options = strings.TrimSpace(options + " " + b.StartupOptions())
	if isURL {
		q := u.Query()
		q.Set("application_name", b.opts.ApplicationName)
		q.Set("options", options)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	// of a keyword given twice, libpq and the drivers take the last
	quote := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return strings.TrimSpace(dsn + " application_name='" + quote.Replace(b.opts.ApplicationName) +
		"' options='" + quote.Replace(options) + "'"), nil
}

// Follow makes db follow its share until Close: from now on the Budget
// sets db's MaxOpenConns and MaxIdleConns. db must connect through this
// Budget's Connector (or with its DSN). Until the server's first answer,
// which Follow asks for at once, db holds at most one connection.
func (b *Budget) Follow(db *sql.DB) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.db != nil {
		return errors.New("connbudget: Follow after Close, or twice")
	}
	b.db, b.prev, b.prevAt, b.rotated = db, db.Stats(), time.Now(), time.Now()
	b.poolMax = b.prev.MaxOpenConnections
	b.sampleLocked(b.prev, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.done.Add(1)
	go b.run(ctx)
	return nil
}

// Close hands the pool's share back to the server (SET connbudget.demand =
// 'leave'), so that the other pods are given it within a publish period,
// then closes the pool.
func (b *Budget) Close() error {
	b.mu.Lock()
	db, closed := b.db, b.closed
	b.closed = true
	b.mu.Unlock()
	if db == nil || closed {
		return nil
	}
	b.cancel()
	b.done.Wait()
	if s := b.Stats(); s.Share >= 0 { // it had a share
		ctx, cancel := context.WithTimeout(context.Background(), s.RefreshInterval+time.Second)
		if _, err := db.ExecContext(ctx, "SET connbudget.demand = 'leave'"); err != nil {
			b.logf("could not hand the share back (%v); the server frees it when the pod's lease ends", err)
		}
		cancel()
	}
	return db.Close()
}

// Stats returns the Budget's numbers now.
func (b *Budget) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.st
	s.RefreshInterval, s.Limit = b.intervalLocked(), b.limitLocked()
	return s
}

// Connector wraps the driver's connector so that the pool's connects
// follow the budget. A connect refused with SQLSTATE 53300
// (too_many_connections) is backpressure: it is retried within the
// caller's context (without a deadline, as long as it takes, as
// database/sql waits for a free connection), after a wait drawn
// from [0, pace], then from [0, twice the pace] (exponential backoff with
// full jitter, capped), at the pace the server states in the refusal.
// 42501 (the role may not claim the application, or the pod belongs to
// another role) and 53400 (the role holds connbudget.max_pods_per_role
// pods, or the pod table is full) do not change by themselves: they are
// returned at once, and connects fail with the same error for 10 refresh
// intervals before the server is asked again. The errors wrap the
// driver's own (*pq.Error, *pgconn.PgError), which errors.As finds.
//
// base must connect with this Budget's identity: build it from DSN (or
// StartupOptions). Open the pool with sql.OpenDB on the result.
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
	b.mu.Lock()
	refused, until := b.permErr, b.permUntil
	b.mu.Unlock()
	if refused != nil && time.Now().Before(until) {
		return nil, refused
	}
	const backpressure = "connbudget: the server refused connections until the caller's deadline (backpressure): %w"
	var refusal error // the last 53300
	deadline, hasDeadline := ctx.Deadline()
	for attempt := 0; ; attempt++ {
		conn, err := c.base.Connect(ctx)
		switch state := sqlState(err); {
		case state == "42501" || state == "53400":
			return nil, b.notePermanent(err)
		case state == "53300":
			refusal = err
		case refusal != nil && (ctx.Err() != nil || hasDeadline && !time.Now().Before(deadline)):
			// the deadline came while this connect waited for room (a driver
			// may see its dial time out a moment before the context ends)
			return nil, fmt.Errorf(backpressure, refusal)
		default:
			return conn, err
		}
		timer := time.NewTimer(b.retryDelay(err, attempt))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf(backpressure, refusal)
		case <-timer.C:
		}
	}
}

// backoffCeiling bounds the wait before a connect refused attempt+1 times
// is tried again: the pace, then twice the pace (so that a pool waiting
// for room retries about once per pace, as the server asks), but no more
// than half the time the server keeps the pod's claim on the budget
// (lease), so that the retry comes before the other pods grow back into
// the room made for it.
func backoffCeiling(pace, lease time.Duration, attempt int) time.Duration {
	if attempt == 0 {
		return pace
	}
	return maxOf(minOf(2*pace, lease/2), pace)
}

// retryDelay counts a connect refused with 53300 and draws the wait before
// the next attempt, at the pace the refusal states (1 s when it states
// none, as PostgreSQL's own refusals do not).
func (b *Budget) retryDelay(refusal error, attempt int) time.Duration {
	pace, lease := refusalPace(refusal)
	if pace == 0 {
		pace = time.Second
	}
	if lease < pace {
		lease = 3 * pace // not stated
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.st.RefusedConnects++; b.st.RefusedConnects == 1 {
		b.logf("connects refused with 53300 (backpressure: the budget or the application is full); retried within each caller's deadline")
	}
	return time.Duration(b.rng.Int63n(int64(backoffCeiling(pace, lease, attempt)) + 1))
}

// notePermanent counts and logs a refusal that will not change by itself,
// and keeps it to answer connects with for 10 refresh intervals.
func (b *Budget) notePermanent(refusal error) error {
	err := fmt.Errorf("connbudget: the server refuses this pool's connections until the limits change: %w", refusal)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.PermanentRefusals++
	b.permErr, b.permUntil = err, time.Now().Add(10*b.intervalLocked())
	b.logf("%v", err)
	return err
}

// sqlState is the SQLSTATE of a server's error, from any driver whose
// error has a SQLState method (lib/pq, pgx).
func sqlState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

// refusalPace is the pace a 53300 refusal states, and how long the server
// keeps the pod's claim on the budget, from its context field, in the
// fixed form "connbudget: retry_ms=200 lease_ms=3000 protocol=2"; zero
// where it states none. *pq.Error and *pgconn.PgError both name the
// context field Where; a driver without one may have it in its message.
func refusalPace(err error) (pace, lease time.Duration) {
	text := err.Error()
	for e := err; e != nil; e = errors.Unwrap(e) {
		if v := reflect.Indirect(reflect.ValueOf(e)); v.Kind() == reflect.Struct && v.FieldByName("Where").Kind() == reflect.String {
			text = v.FieldByName("Where").String() + "\n" + text
			break
		}
	}
	return statedMS(text, "retry_ms"), statedMS(text, "lease_ms")
}

// statedMS is the number of milliseconds text states in its first word
// key=N, read as any number from a server is read: a complete integer from
// 10 to 3600000, else 0.
func statedMS(text, key string) time.Duration {
	if m := regexp.MustCompile(`(?:^|\s)` + key + `=(\S*)`).FindStringSubmatch(text); m != nil {
		if ms, ok := parseNumber(m[1], 10, 3600000); ok {
			return time.Duration(ms) * time.Millisecond
		}
	}
	return 0
}

// logf says something of this pool.
func (b *Budget) logf(format string, args ...any) {
	b.opts.Logf("connbudget: pod %q of %q: "+format, append([]any{b.opts.Pod, b.opts.ApplicationName}, args...)...)
}

func minOf[T ~int | ~int64](first T, rest ...T) T {
	for _, v := range rest {
		if v < first {
			first = v
		}
	}
	return first
}

func maxOf[T ~int | ~int64](first T, rest ...T) T {
	for _, v := range rest {
		if v > first {
			first = v
		}
	}
	return first
}
