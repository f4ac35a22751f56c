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
// The protocol it follows is docs/protocol.md of connbudget.
package connbudget

import (
	"context"
	cryptorand "crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/rand"
	"sync"
	"time"
)

// Options configure a Budget. Only ApplicationName is required.
type Options struct {
	// ApplicationName is the application the pool belongs to, its row in
	// connbudget.application_limits: 1 to 63 bytes of printable ASCII.
	ApplicationName string
	// Pod is the pod's id, 1 to 63 bytes of printable ASCII. Default: the
	// value of the environment variable PodEnv names, else the host name
	// (in Kubernetes, the pod's name).
	Pod    string
	PodEnv string
	// MinSize is the pool's own minimum: the demand it reports is never
	// below it, and it keeps that many idle connections. Default 0.
	MinSize int
	// MaxSize is the pool's own maximum: the pool never holds more, whatever
	// its share. Default: the pool's MaxOpenConns when Follow is called
	// (0 there: as large as the share).
	MaxSize int
	// MaxIdle bounds the idle connections kept. Default: the pool's size.
	MaxIdle int
	// FixedSize is the pool's size where the server has no connbudget or
	// does not govern the pool. Default: MaxSize, else 10.
	FixedSize int
	// RefreshInterval overrides the interval the server states (refresh_ms).
	RefreshInterval time.Duration
	// ConnectWait is how long a connect refused with 53300 is retried when
	// the caller's context has no deadline. Default 30 s.
	ConnectWait time.Duration
	// Logf receives what the Budget has to say: a share it could not read,
	// a server without connbudget, a refusal. Default: log.Printf.
	Logf func(format string, args ...any)
}

// Stats are a Budget's own numbers. A Budget is also an expvar.Var
// (expvar.Publish("connbudget", budget)) that shows them as JSON.
type Stats struct {
	ApplicationName string
	Pod             string
	PoolSession     string
	// Status is "starting" (no answer yet), "ok", "other" (not governed: a
	// fixed size), "left", "refused" (governed no more: the last share
	// stands) or "no-extension" (a fixed size).
	Status   string
	Protocol int // 2, or 1 for connbudget 1.0 and 1.1; 0 before an answer
	// Share, MinSize, Budget, Allocation and Pods are the server's last good
	// answer (-1 before one): the pool's max_size and min_size, the budget,
	// the application's allocation and live pods.
	Share, MinSize, Budget, Allocation, Pods int
	RefreshInterval                          time.Duration
	Limit                                    int // MaxOpenConns now
	Demand                                   int // the demand last reported
	Refreshes                                uint64
	// SkippedRefreshes: no connection of the pool came free within a
	// refresh interval (the pool was saturated) or none could be opened.
	SkippedRefreshes uint64
	// Errors counts what went wrong by kind: answer-shape, answer-null,
	// answer-text, answer-range, answer-order (an answer that is not one),
	// query (the refresh query failed), connect (no connection to refresh
	// with), no-extension, refused (the share said so).
	Errors map[string]uint64
	// ClosedSurplus counts connections closed because the pool held more
	// than its size: idle ones at once, the others as they came back.
	ClosedSurplus uint64
	// RefusedConnects counts connects refused with 53300, PermanentRefusals
	// those refused with 42501 or 53400.
	RefusedConnects   uint64
	PermanentRefusals uint64
}

// A Budget makes one database/sql pool follow its share of the server's
// connection budget. Its methods are safe for concurrent use.
type Budget struct {
	opts              Options
	app, pod, session string
	rng               *rand.Rand // under mu

	mu       sync.Mutex
	db       *sql.DB
	userMax  int
	closed   bool
	status   string
	protocol int
	sh       share // the last good share
	haveSh   bool
	serverMS int // refresh_ms the server last stated

	// the demand: the busiest moment of this interval and the 5 before
	peaks        [5]int
	peakNext     int
	intervalPeak int
	rotated      time.Time
	lastDemand   int
	reported     bool
	holding      int // connections the refresh holds, not in use by callers
	prev         sql.DBStats
	prevAt       time.Time

	stats      Stats
	lastBad    string // the kind of error logged last (each is logged once)
	permErr    *RefusedError
	permUntil  time.Time
	refusedLog bool

	resizeMu    sync.Mutex
	appliedMax  int
	appliedIdle int

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New checks the options and makes a Budget with a new pool session. It
// connects to nothing: build the pool's connector from DSN and Connector,
// then call Follow.
func New(opts Options) (*Budget, error) {
	if err := checkID("application name", opts.ApplicationName); err != nil {
		return nil, err
	}
	if opts.MinSize < 0 || opts.MaxSize < 0 || opts.MaxIdle < 0 || opts.FixedSize < 0 ||
		opts.RefreshInterval < 0 || opts.ConnectWait < 0 {
		return nil, errors.New("connbudget: sizes and durations must not be negative")
	}
	if opts.MaxSize > 0 && opts.MinSize > opts.MaxSize {
		return nil, fmt.Errorf("connbudget: MinSize %d is above MaxSize %d", opts.MinSize, opts.MaxSize)
	}
	if opts.RefreshInterval > 0 && opts.RefreshInterval < minRefreshMS*time.Millisecond {
		opts.RefreshInterval = minRefreshMS * time.Millisecond
	}
	if opts.ConnectWait == 0 {
		opts.ConnectWait = 30 * time.Second
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	pod := opts.Pod
	if pod == "" {
		var err error
		if pod, err = defaultPod(opts.PodEnv); err != nil {
			return nil, err
		}
	}
	if err := checkID("pod", pod); err != nil {
		return nil, err
	}
	session, err := newPoolSession()
	if err != nil {
		return nil, err
	}
	var seed [8]byte
	if _, err := cryptorand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("connbudget: no random seed: %w", err)
	}
	b := &Budget{
		opts: opts, app: opts.ApplicationName, pod: pod, session: session,
		rng:    rand.New(rand.NewSource(int64(binary.LittleEndian.Uint64(seed[:])))),
		status: "starting", appliedIdle: -1,
	}
	b.stats.Errors = map[string]uint64{}
	return b, nil
}

// Follow makes db follow its share until Close: from now on the Budget
// sets db's MaxOpenConns and MaxIdleConns. db must connect through this
// Budget's Connector (or with its DSN). Until the server's first answer,
// which Follow asks for at once, db holds at most one connection.
func (b *Budget) Follow(db *sql.DB) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errors.New("connbudget: Follow after Close")
	}
	if b.db != nil {
		b.mu.Unlock()
		return errors.New("connbudget: this Budget already follows a pool")
	}
	b.db = db
	b.userMax = b.opts.MaxSize
	if b.userMax == 0 {
		b.userMax = db.Stats().MaxOpenConnections
	}
	b.prev, b.prevAt, b.rotated = db.Stats(), time.Now(), time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.mu.Unlock()

	b.resize()
	b.done.Add(2)
	go b.sampleLoop(ctx)
	go b.refreshLoop(ctx)
	return nil
}

// Close hands the pool's share back to the server (SET connbudget.demand =
// 'leave'; with connbudget 1.0 and 1.1 a demand of 0), so that the other
// pods are given it within a publish period, then closes the pool.
func (b *Budget) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	db, protocol, status := b.db, b.protocol, b.status
	wait := b.intervalLocked()
	b.mu.Unlock()
	if db == nil {
		return nil
	}
	b.cancel()
	b.done.Wait()

	if protocol != 0 && status != statusNoExtension && status != statusOther {
		if wait < time.Second {
			wait = time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		conn, err := db.Conn(ctx)
		if err == nil {
			if protocol == 2 {
				_, err = conn.ExecContext(ctx, "SET connbudget.demand = 'leave'")
			} else {
				_, err = conn.ExecContext(ctx, "SELECT connbudget.pool_share(0)")
			}
			conn.Close()
		}
		cancel()
		if err != nil {
			b.opts.Logf("connbudget: pod %q of %q could not hand its share back (%v); the server frees it when the pod's lease ends", b.pod, b.app, err)
		}
	}
	return db.Close()
}

// Stats returns the Budget's numbers now.
func (b *Budget) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Errors = make(map[string]uint64, len(b.stats.Errors))
	for k, v := range b.stats.Errors {
		s.Errors[k] = v
	}
	s.ApplicationName, s.Pod, s.PoolSession = b.app, b.pod, b.session
	s.Status, s.Protocol = b.status, b.protocol
	s.Share, s.MinSize, s.Budget, s.Allocation, s.Pods = -1, -1, -1, -1, -1
	if b.haveSh {
		s.Share, s.MinSize, s.Budget = b.sh.maxSize, b.sh.minSize, b.sh.budget
		s.Allocation, s.Pods = b.sh.allocation, b.sh.pods
	}
	s.RefreshInterval = b.intervalLocked()
	s.Limit = b.limitLocked()
	s.Demand = b.lastDemand
	return s
}

// String shows Stats as JSON, which makes a Budget an expvar.Var.
func (b *Budget) String() string {
	out, err := json.Marshal(b.Stats())
	if err != nil {
		return "{}"
	}
	return string(out)
}
