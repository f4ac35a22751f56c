package connbudget

// Tests against a real server with connbudget preloaded, run by
// test/adapters/go.sh. They need CONNBUDGET_TEST_SERVER=1, the libpq
// environment of a superuser (PGHOST, PGPORT, PGUSER, PGDATABASE),
// CONNBUDGET_TEST_ROLE (a LOGIN role that is not a superuser: superusers
// are never refused), and for the restart test PG_BINDIR and
// CB_CLUSTER_DIR. The server's refresh interval is 200 ms.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4/stdlib"
	"github.com/lib/pq"
)

const interval = 200 * time.Millisecond // connbudget.refresh_interval of the test cluster

// slack is what measuring adds to a deadline: the sampler's own queries
// and a busy machine's scheduling.
const slack = 150 * time.Millisecond

var admin *sql.DB

func serverOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("CONNBUDGET_TEST_SERVER") == "" {
		t.Skip("needs a server: run test/adapters/go.sh (CONNBUDGET_TEST_SERVER=1)")
	}
	if admin == nil {
		var err error
		if admin, err = sql.Open("postgres", "application_name=connbudget-go-test sslmode=disable"); err != nil {
			t.Fatal(err)
		}
	}
}

// setLimit gives application app a cap of max connections (-1: none) and
// only the roles in roles ("": any).
func setLimit(t *testing.T, app string, max int, roles string) {
	t.Helper()
	var cap any
	if max >= 0 {
		cap = max
	}
	var allowed any
	if roles != "" {
		allowed = roles
	}
	if _, err := admin.Exec(`INSERT INTO connbudget.application_limits (application_name, max_connections, roles)
		VALUES ($1, $2, $3) ON CONFLICT (application_name)
		DO UPDATE SET max_connections = excluded.max_connections, roles = excluded.roles`, app, cap, allowed); err != nil {
		t.Fatal(err)
	}
}

// podOnServer is what connbudget.pods says of a pod: its governed
// connections and its share; found is false when the pod is not live.
func podOnServer(app, pod string) (connections, share int, found bool) {
	err := admin.QueryRow(`SELECT connections, share FROM connbudget.pods
		WHERE application_name = $1 AND pod = $2`, app, pod).Scan(&connections, &share)
	return connections, share, err == nil
}

// within polls cond every 5 ms for up to limit; it returns how long cond
// took to hold, or -1.
func within(limit time.Duration, cond func() bool) time.Duration {
	start := time.Now()
	for time.Since(start) < limit {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return -1
}

// testRole is the LOGIN role the pools connect as, which is not a
// superuser (superusers are never refused).
func testRole() string {
	if role := os.Getenv("CONNBUDGET_TEST_ROLE"); role != "" {
		return role
	}
	return "cbgo"
}

// dsnFor is a connection string of the test server for role, with the
// password of CONNBUDGET_TEST_PASSWORD (the cluster asks every role but
// the superuser for one, scram-sha-256).
func dsnFor(role string) string {
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable password='%s'",
		os.Getenv("PGHOST"), os.Getenv("PGPORT"), role, os.Getenv("PGDATABASE"), os.Getenv("CONNBUDGET_TEST_PASSWORD"))
}

// A testPod is a pool of its own pod that follows its share, with workers
// that keep it busy.
type testPod struct {
	t      *testing.T
	app    string
	pod    string
	budget *Budget
	conn   driver.Connector // the pool's connector
	db     *sql.DB
	stop   chan struct{}
	wg     sync.WaitGroup
	done   atomic.Int64
	failed atomic.Int64
	last   atomic.Value
	logMu  sync.Mutex
	logs   []string
}

// openPod opens a pool of pod of application app on the test server with
// driver drv ("pq" or "pgx") that follows its share.
func openPod(t *testing.T, app, pod, drv string, opts Options) *testPod {
	t.Helper()
	return openPodAt(t, dsnFor(testRole()), app, pod, drv, opts, 0)
}

// openPodAt is openPod on the server of connection string base, with a
// pool of at most maxOpen connections of its own (0: no maximum).
func openPodAt(t *testing.T, base, app, pod, drv string, opts Options, maxOpen int) *testPod {
	t.Helper()
	p := &testPod{t: t, app: app, pod: pod, stop: make(chan struct{})}
	opts.ApplicationName, opts.Pod = app, pod
	opts.Logf = func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		p.logMu.Lock()
		p.logs = append(p.logs, line)
		p.logMu.Unlock()
		t.Logf("%s: %s", pod, line)
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := b.DSN(base)
	if err != nil {
		t.Fatal(err)
	}
	var connector driver.Connector
	switch drv {
	case "pq":
		connector, err = pq.NewConnector(dsn)
	case "pgx":
		// pgx v4.15 (Debian 12); from v4.16 on also stdlib.GetConnector(config)
		connector, err = stdlib.GetDefaultDriver().(driver.DriverContext).OpenConnector(dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	p.budget, p.conn = b, b.Connector(connector)
	p.db = sql.OpenDB(p.conn)
	p.db.SetMaxOpenConns(maxOpen)
	if err := b.Follow(p.db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// work starts n workers running query in a loop, each with a deadline of
// 10 s.
func (p *testPod) work(n int, query string) {
	for i := 0; i < n; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-p.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := p.db.ExecContext(ctx, query)
				cancel()
				if err != nil {
					p.failed.Add(1)
					p.last.Store(err.Error())
					time.Sleep(10 * time.Millisecond)
				} else {
					p.done.Add(1)
				}
			}
		}()
	}
}

func (p *testPod) stopWork() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

func (p *testPod) close() {
	p.stopWork()
	if err := p.budget.Close(); err != nil {
		p.t.Errorf("%s: Close: %v", p.pod, err)
	}
}

func (p *testPod) onServer() (connections, share int) {
	connections, share, _ = podOnServer(p.app, p.pod)
	return connections, share
}

func (p *testPod) noFailures() {
	p.t.Helper()
	if n := p.failed.Load(); n != 0 {
		p.t.Errorf("%s: %d of %d requests failed, the last with: %v", p.pod, n, n+p.done.Load(), p.last.Load())
	}
}

// The pool's identity reaches the server: application, pod (with a space,
// a backslash and a quote in it) and pool session, with both drivers.
func TestIdentityReachesTheServer(t *testing.T) {
	serverOnly(t)
	for _, drv := range []string{"pq", "pgx"} {
		pod := `web 7\x'9-` + drv
		p := openPod(t, "ident", pod, drv, Options{})
		var session, app string
		if err := p.db.QueryRow("SELECT current_setting('connbudget.pool_session'), current_setting('application_name')").Scan(&session, &app); err != nil {
			t.Fatal(err)
		}
		if s := p.budget.Stats(); session != s.PoolSession || app != "ident" {
			t.Errorf("%s: the server sees pool session %q of application %q, want %q of ident", drv, session, app, s.PoolSession)
		}
		if within(2*time.Second, func() bool { c, _ := p.onServer(); return c >= 1 }) < 0 {
			t.Errorf("%s: connbudget.pods shows no connection of pod %q", drv, pod)
		}
		p.close()
	}
}

// 1. A pod follows its share down when a second pod joins, within 2
// refresh intervals, and up again when it leaves.
func TestFollowsItsShareUpAndDown(t *testing.T) {
	serverOnly(t)
	setLimit(t, "follow", 8, "")
	a := openPod(t, "follow", "follow-a", "pq", Options{})
	a.work(12, "SELECT pg_sleep(0.005)")
	if within(5*time.Second, func() bool { c, _ := a.onServer(); return c == 8 }) < 0 {
		c, s := a.onServer()
		t.Fatalf("pod a alone holds %d connections (share %d), want the application's cap 8; %+v", c, s, a.budget.Stats())
	}

	// from pod b's first connect on, every time pod a holds more than its
	// share on the server, it is back within it in 2 refresh intervals
	b := openPod(t, "follow", "follow-b", "pgx", Options{})
	b.work(12, "SELECT pg_sleep(0.005)")
	joined := time.Now()
	var over time.Time
	longest, converged := time.Duration(0), time.Duration(-1)
	for time.Since(joined) < 3*time.Second {
		ca, sa := a.onServer()
		cb, sb := b.onServer()
		now := time.Now()
		if ca > sa && over.IsZero() {
			over = now
		}
		if ca <= sa && !over.IsZero() {
			if d := now.Sub(over); d > longest {
				longest = d
			}
			over = time.Time{}
		}
		if converged < 0 && ca == 4 && sa == 4 && cb == 4 && sb == 4 {
			converged = now.Sub(joined)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !over.IsZero() {
		longest = time.Since(over)
	}
	// on a busy machine pod b's connects may take longer: how soon both
	// hold 4 is a figure, that they do is the check
	for converged < 0 && time.Since(joined) < 15*time.Second {
		ca, sa := a.onServer()
		cb, sb := b.onServer()
		if ca == 4 && sa == 4 && cb == 4 && sb == 4 {
			converged = time.Since(joined)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("pod b joined: pod a was above its share for at most %v (%.1f refresh intervals); both held their share of 4 after %v (%.1f refresh intervals)",
		longest, float64(longest)/float64(interval), converged, float64(converged)/float64(interval))
	if longest > 2*interval+slack {
		t.Errorf("pod a held more than its share for %v, want at most 2 refresh intervals (%v)", longest, 2*interval)
	}
	if converged < 0 {
		ca, sa := a.onServer()
		cb, sb := b.onServer()
		t.Errorf("the pods hold %d (share %d) and %d (share %d) 15 s after pod b joined, want 4 each", ca, sa, cb, sb)
	}

	if s := a.budget.Stats(); s.Share != 4 || s.Limit != 4 {
		t.Errorf("pod a: %+v; want share and limit 4", s)
	}

	b.close()
	took := within(5*time.Second, func() bool { c, _ := a.onServer(); return c == 8 })
	t.Logf("pod b left: pod a holds 8 again after %v (%.1f refresh intervals)", took, float64(took)/float64(interval))
	if took < 0 || took > 3*interval {
		c, s := a.onServer()
		t.Errorf("pod a holds %d connections with a share of %d %v after pod b left; want 8 within 3 refresh intervals", c, s, took)
	}
	a.noFailures()
	b.noFailures()
}

// overShare samples pods a and b of app on the server every 5 ms for d and
// returns the longest time pod a held more than its share.
func overShare(a *testPod, d time.Duration) time.Duration {
	var over time.Time
	longest := time.Duration(0)
	for start := time.Now(); time.Since(start) < d; time.Sleep(5 * time.Millisecond) {
		c, s := a.onServer()
		now := time.Now()
		if c > s && over.IsZero() {
			over = now
		} else if c <= s && !over.IsZero() {
			if now.Sub(over) > longest {
				longest = now.Sub(over)
			}
			over = time.Time{}
		}
	}
	if !over.IsZero() && time.Since(over) > longest {
		longest = time.Since(over)
	}
	return longest
}

// When the share drops below what a pool holds, its idle connections close
// at once, even while others are in use (database/sql alone would keep
// them until those came back), and the ones in use close as they return.
func TestIdleSurplusClosesAtOnce(t *testing.T) {
	serverOnly(t)
	setLimit(t, "idle", 8, "")
	a := openPod(t, "idle", "idle-a", "pq", Options{})
	a.work(10, "SELECT pg_sleep(0.01)")
	if within(5*time.Second, func() bool { c, _ := a.onServer(); return c == 8 }) < 0 {
		t.Fatalf("pod a never held 8: %+v", a.budget.Stats())
	}
	a.stopWork()
	// 4 connections in use for 3 s, 4 idle
	var long sync.WaitGroup
	for i := 0; i < 4; i++ {
		long.Add(1)
		go func() {
			defer long.Done()
			if _, err := a.db.Exec("SELECT pg_sleep(3)"); err != nil {
				t.Errorf("a long query failed: %v", err)
			}
		}()
	}
	b := openPod(t, "idle", "idle-b", "pq", Options{})
	b.work(12, "SELECT pg_sleep(0.005)")
	longest := overShare(a, 2*time.Second)
	c, s := a.onServer()
	t.Logf("pod b joined: pod a, 4 connections in use and 4 idle, was above its share for at most %v (%.1f refresh intervals); now %d of %d",
		longest, float64(longest)/float64(interval), c, s)
	if longest > 2*interval+slack || c > s || s != 4 {
		t.Errorf("pod a holds %d with a share of %d, and was above its share for %v: its idle connections did not close at once", c, s, longest)
	}
	long.Wait()
	b.noFailures()
}

// 2. A pool whose workers keep it busy never holds more than its share,
// sampled on the server every 10 ms, and still uses all of it.
func TestNeverAboveItsShareWhileBusy(t *testing.T) {
	serverOnly(t)
	setLimit(t, "busy", 6, "")
	a := openPod(t, "busy", "busy-a", "pq", Options{})
	b := openPod(t, "busy", "busy-b", "pgx", Options{})
	a.work(16, "SELECT pg_sleep(0.002)")
	b.work(16, "SELECT pg_sleep(0.002)")
	if within(5*time.Second, func() bool {
		ca, sa := a.onServer()
		cb, sb := b.onServer()
		return ca == 3 && cb == 3 && sa == 3 && sb == 3
	}) < 0 {
		t.Fatalf("the pods never settled at 3 connections each: a %+v, b %+v", a.budget.Stats(), b.budget.Stats())
	}
	samples, over, maxA, maxB := 0, 0, 0, 0
	for start := time.Now(); time.Since(start) < 2*time.Second; time.Sleep(10 * time.Millisecond) {
		rows, err := admin.Query(`SELECT pod, connections, share FROM connbudget.pods WHERE application_name = 'busy'`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var pod string
			var c, s int
			if err := rows.Scan(&pod, &c, &s); err != nil {
				t.Fatal(err)
			}
			if c > s {
				over++
				t.Logf("pod %s holds %d connections, its share is %d", pod, c, s)
			}
			if pod == "busy-a" && c > maxA {
				maxA = c
			}
			if pod == "busy-b" && c > maxB {
				maxB = c
			}
		}
		rows.Close()
		samples++
	}
	if over != 0 {
		t.Errorf("%d of %d samples found a pod above its share", over, samples)
	}
	if maxA != 3 || maxB != 3 {
		t.Errorf("at most %d and %d connections, want each pod to use its share of 3", maxA, maxB)
	}
	for _, p := range []*testPod{a, b} {
		// the pool's own metrics keep working beside the adapter's
		if ds := p.db.Stats(); ds.MaxOpenConnections != 3 || ds.OpenConnections > 3 || ds.InUse+ds.Idle != ds.OpenConnections || ds.WaitCount == 0 {
			t.Errorf("%s: database/sql's stats: %+v", p.pod, ds)
		}
		s := p.budget.Stats()
		if s.Share != 3 || s.Limit != 3 || s.Demand <= 3 || s.Refreshes < 5 {
			t.Errorf("%s: %+v; want share and limit 3, a demand above it", p.pod, s)
		}
		p.noFailures()
	}
	t.Logf("%d samples; pod a: %+v", samples, a.budget.Stats())
}

// 3. Close hands the share back: the other pod's share grows within about
// a publish period and a refresh interval, and the closed pod leaves
// connbudget.pods at once, not a pod_ttl later.
func TestCloseHandsTheShareBack(t *testing.T) {
	serverOnly(t)
	setLimit(t, "leave", 8, "")
	a := openPod(t, "leave", "leave-a", "pq", Options{})
	b := openPod(t, "leave", "leave-b", "pq", Options{})
	a.work(12, "SELECT pg_sleep(0.005)")
	b.work(12, "SELECT pg_sleep(0.005)")
	if within(5*time.Second, func() bool {
		ca, _ := a.onServer()
		cb, _ := b.onServer()
		return ca == 4 && cb == 4 && a.budget.Stats().Share == 4
	}) < 0 {
		t.Fatalf("the pods never settled at 4 each: a %+v, b %+v", a.budget.Stats(), b.budget.Stats())
	}
	b.stopWork()
	start := time.Now()
	b.close()
	closing := time.Since(start)
	grown := within(3*time.Second, func() bool { return a.budget.Stats().Share == 8 })
	gone := within(3*time.Second, func() bool { _, _, found := podOnServer("leave", "leave-b"); return !found })
	t.Logf("Close took %v; pod a's share was 8 %v later, pod b gone from connbudget.pods after %v", closing, grown, gone)
	if limit := publishPeriod(interval) + interval*11/10 + 100*time.Millisecond + slack; grown < 0 || grown > limit {
		t.Errorf("pod a's share grew to 8 after %v (%+v), want within a publish period and a refresh interval (%v)", grown, a.budget.Stats(), limit)
	}
	if gone < 0 || gone > 500*time.Millisecond {
		t.Errorf("pod b still in connbudget.pods %v after Close, want gone at once (its lease is 2 s)", gone)
	}
	if within(3*time.Second, func() bool { c, _ := a.onServer(); return c == 8 }) < 0 {
		t.Errorf("pod a never held its new share of 8: %+v", a.budget.Stats())
	}
	a.noFailures()
	b.noFailures()
}

// 4. A connect refused with 53300 does not fail requests that can wait:
// the application is full while another pod holds its cap, then released.
// 42501 is permanent: returned at once, and not asked again for 10 refresh
// intervals.
func TestRefusedConnectsWaitForRoom(t *testing.T) {
	serverOnly(t)
	setLimit(t, "capped", 2, "")
	for _, drv := range []string{"pq", "pgx"} {
		holder, err := sql.Open("postgres", dsnFor(testRole())+" application_name=capped options='-c connbudget.pod=holder'")
		if err != nil {
			t.Fatal(err)
		}
		var held []*sql.Conn
		for i := 0; i < 2; i++ {
			conn, err := holder.Conn(context.Background())
			if err == nil {
				err = conn.PingContext(context.Background())
			}
			if err != nil {
				t.Fatalf("the holder's connection %d: %v", i, err)
			}
			held = append(held, conn)
		}
		p := openPod(t, "capped", "waiter-"+drv, drv, Options{})
		release := time.Now().Add(4 * time.Second)
		// still refused at the caller's deadline: the refusal, 53300, through
		// which the driver's error and the pace the server states are found.
		// Asked of the pool's connector itself: a request in database/sql's
		// queue waits for a connect that database/sql opens without a
		// deadline, and ends with its context's error, as any wait there.
		ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
		conn, err := p.conn.Connect(ctx)
		cancel()
		if conn != nil {
			conn.Close()
		}
		if sqlState(err) != "53300" || !strings.Contains(err.Error(), "backpressure") {
			t.Fatalf("%s: a connect with a deadline of 800 ms while the application is full: %v, want the refusal 53300", drv, err)
		}
		var pqErr *pq.Error
		var pgErr *pgconn.PgError
		if drv == "pq" && !errors.As(err, &pqErr) || drv == "pgx" && !errors.As(err, &pgErr) {
			t.Errorf("%s: the driver's error is not found through %T", drv, err)
		}
		if pace, lease := refusalPace(err); pace != interval || lease != 2*time.Second {
			t.Errorf("%s: the refusal states a pace of %v and a lease of %v, want %v and 2s (%v)", drv, pace, lease, interval, err)
		}
		go func() {
			time.Sleep(time.Until(release))
			for _, c := range held {
				c.Close()
			}
			holder.Close()
		}()
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				defer cancel()
				_, errs[i] = p.db.ExecContext(ctx, "SELECT pg_sleep(0.05)")
			}(i)
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: request %d failed: %v", drv, i, err)
			}
		}
		s := p.budget.Stats()
		t.Logf("%s: 3 requests done %v after the application had room again; %d connects refused", drv, time.Since(release), s.RefusedConnects)
		if s.RefusedConnects == 0 || time.Now().Before(release) {
			t.Errorf("%s: the pool's connects were never refused (%+v)", drv, s)
		}
		p.close()
	}

	setLimit(t, "locked", -1, "{cbgo_nobody}")
	var refusedBefore int
	admin.QueryRow("SELECT coalesce((SELECT refused FROM connbudget.applications WHERE application_name = 'locked'), 0)").Scan(&refusedBefore)
	p := openPod(t, "locked", "locked-a", "pq", Options{})
	start := time.Now()
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := p.db.ExecContext(ctx, "SELECT 1")
		cancel()
		var pqErr *pq.Error
		if !strings.Contains(err.Error(), "until the limits change") || !errors.As(err, &pqErr) || pqErr.Code != "42501" {
			t.Fatalf("request %d: %v, want a permanent refusal wrapping the *pq.Error 42501", i, err)
		}
	}
	took := time.Since(start)
	var refusedAfter int
	admin.QueryRow("SELECT refused FROM connbudget.applications WHERE application_name = 'locked'").Scan(&refusedAfter)
	if took > 500*time.Millisecond || refusedAfter-refusedBefore != 1 {
		t.Errorf("5 requests took %v and the server refused %d connects, want at once and 1 (asked again only after 10 refresh intervals)",
			took, refusedAfter-refusedBefore)
	}
	if s := p.budget.Stats(); s.PermanentRefusals != 1 {
		t.Errorf("PermanentRefusals = %d, want 1", s.PermanentRefusals)
	}
}

// pgx's error is found through the refusal too.
func TestRefusalWrapsPgxsError(t *testing.T) {
	serverOnly(t)
	setLimit(t, "locked", -1, "{cbgo_nobody}")
	p := openPod(t, "locked", "locked-pgx", "pgx", Options{})
	_, err := p.db.Exec("SELECT 1")
	var pgErr *pgconn.PgError
	if !strings.Contains(err.Error(), "until the limits change") || !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("err = %v, want a permanent refusal wrapping a *pgconn.PgError 42501", err)
	}
}

// 5. The server restarts under the pool (pg_ctl restart -m fast): the pool
// recovers, the adapter keeps refreshing, and the pod is back on the
// server with its share.
func TestServerRestart(t *testing.T) {
	serverOnly(t)
	dir, bindir := os.Getenv("CB_CLUSTER_DIR"), os.Getenv("PG_BINDIR")
	if dir == "" || bindir == "" {
		t.Skip("needs CB_CLUSTER_DIR and PG_BINDIR")
	}
	setLimit(t, "restart", 6, "")
	p := openPod(t, "restart", "restart-a", "pq", Options{})
	p.work(4, "SELECT pg_sleep(0.005)")
	if within(5*time.Second, func() bool { c, _ := p.onServer(); return c >= 1 && p.budget.Stats().Refreshes >= 2 }) < 0 {
		t.Fatalf("the pod never came up: %+v", p.budget.Stats())
	}
	before := p.budget.Stats()
	out, err := exec.Command(filepath.Join(bindir, "pg_ctl"), "-D", filepath.Join(dir, "data"),
		"-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "-m", "fast", "restart").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_ctl restart: %v\n%s", err, out)
	}
	back := within(15*time.Second, func() bool {
		c, s, found := podOnServer("restart", "restart-a")
		st := p.budget.Stats()
		return found && c >= 1 && s >= 1 && st.Share == s && st.Refreshes >= before.Refreshes+2
	})
	if back < 0 {
		c, s, found := podOnServer("restart", "restart-a")
		t.Fatalf("after the restart: pod on the server %v (%d connections, share %d), adapter %+v", found, c, s, p.budget.Stats())
	}
	failedThen := p.failed.Load()
	doneThen := p.done.Load()
	time.Sleep(time.Second)
	if f := p.failed.Load() - failedThen; f != 0 || p.done.Load() == doneThen {
		t.Errorf("a second after recovering, %d requests failed (%v) and %d succeeded", f, p.last.Load(), p.done.Load()-doneThen)
	}
	s := p.budget.Stats()
	t.Logf("recovered %v after the restart: %d requests failed meanwhile; refreshes %d -> %d, errors %v",
		back, failedThen, before.Refreshes, s.Refreshes, s.Errors)
	if s.Status != "ok" {
		t.Errorf("after the restart: %+v, want status ok", s)
	}
}
