#!/usr/bin/env bash
# bench/adapters/go.sh -- the Go adapter's benchmark (client/go):
#
#   (a) overhead: a database/sql pool of 8 connections that follows a
#       steady share of 8 against the same pool without the adapter (both
#       open and warm), a `SELECT 1` loop with 8 workers, in rotated order
#       (with/without, then without/with, ...), with lib/pq and with pgx;
#       the median of the pairs' ratios (goal: at least 0.97); then the
#       two side by side, as many runs, which a busy machine slows alike;
#   (b) convergence, in refresh intervals: a pod busy at the application's
#       cap of 8, a second pod joins (how long the first stays above its
#       share, and until both hold 4), then leaves (until the first holds
#       8 again).
#
# Run it from the tree, as root (it installs the Debian packages that are
# missing, builds and installs the extension if it is not installed, and
# runs as the postgres user) or as a user that is not root:
#
#   bash bench/adapters/go.sh
#
# It starts a throwaway cluster with the settings below and removes it;
# given one (PGHOST, PGPORT, PGUSER a superuser, and CB_CLUSTER_DIR, as
# test/lib/with-cluster.sh exports them) it uses that. It prints the
# results and a markdown table.
#
# cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=2000
#
# Environment: CB_BENCH_RUNS (pairs per driver, default 15),
# CB_BENCH_SECONDS (seconds per run, default 1), CB_BENCH_ROUNDS (rounds of
# (b), default 5), PG_CONFIG.
set -euo pipefail

src=${CB_SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# shellcheck source=test/lib/setup.sh
source "$src/test/lib/setup.sh"
# shellcheck source=SCRIPTDIR/lib.sh
source "$src/bench/adapters/lib.sh"
adapter_bench_as_postgres "$src/bench/adapters/go.sh" golang-go golang-github-lib-pq-dev golang-github-jackc-pgx-v4-dev

adapter_bench_setup "$src/bench/adapters/go.sh" go cbgo

# the adapter, and the benchmark beside it, in a GOPATH (no network)
mkdir -p "$work/gopath/src/github.com/connbudget/connbudget/client/go" "$work/gopath/src/cbbench"
cp -R "$src/client/go/." "$work/gopath/src/github.com/connbudget/connbudget/client/go/"
export GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" GOCACHE="$work/cache" GOFLAGS='' GOPROXY=off
cat >"$work/gopath/src/cbbench/main.go" <<'EOF'
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	connbudget "github.com/connbudget/connbudget/client/go"
	"github.com/jackc/pgx/v4/stdlib"
	"github.com/lib/pq"
)

const interval = 200 * time.Millisecond // connbudget.refresh_interval above

var admin *sql.DB

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pool opens a pool of 8 connections of pod pod; with follow, it follows
// its share, which is steady at 8 (its minimum) when steady is set.
func pool(drv, pod string, follow, steady bool) (*sql.DB, *connbudget.Budget) {
	opts := connbudget.Options{ApplicationName: "bench", Pod: pod, Logf: func(string, ...any) {}}
	if steady {
		opts.MinSize = 8
	}
	budget, err := connbudget.New(opts)
	check(err)
	dsn, err := budget.DSN(fmt.Sprintf("host=%s port=%s user=cbgo dbname=%s sslmode=disable",
		os.Getenv("PGHOST"), os.Getenv("PGPORT"), os.Getenv("PGDATABASE")))
	check(err)
	var base driver.Connector
	if drv == "pq" {
		base, err = pq.NewConnector(dsn)
	} else {
		base, err = stdlib.GetDefaultDriver().(driver.DriverContext).OpenConnector(dsn)
	}
	check(err)
	if !follow {
		db := sql.OpenDB(base)
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(8)
		return db, nil
	}
	db := sql.OpenDB(budget.Connector(base))
	db.SetMaxOpenConns(8)
	check(budget.Follow(db))
	for steady && budget.Stats().Limit != 8 {
		time.Sleep(10 * time.Millisecond)
	}
	return db, budget
}

// rate runs `SELECT 1` with 8 workers for d and returns queries per
// second.
func rate(db *sql.DB, d time.Duration) float64 {
	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var one int
			for {
				select {
				case <-stop:
					return
				default:
				}
				check(db.QueryRowContext(context.Background(), "SELECT 1").Scan(&one))
				n.Add(1)
			}
		}()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// overhead runs the pool that follows its share and the same pool without
// the adapter, both open and warm, one after the other in rotated order
// (with/without, then without/with, ...), and returns the medians of their
// rates and of the pairs' ratios; then both at once, and returns the median
// ratio of those runs.
func overhead(drv string, runs int, d time.Duration) (with, without, ratio, side float64) {
	followed, budget := pool(drv, "bench-"+drv, true, true)
	plain, _ := pool(drv, "bench-plain-"+drv, false, true)
	rate(followed, time.Second)
	rate(plain, time.Second)
	var ws, wos, ratios []float64
	for i := 0; i < runs; i++ {
		var w, wo float64
		if i%2 == 0 {
			w, wo = rate(followed, d), rate(plain, d)
		} else {
			wo, w = rate(plain, d), rate(followed, d)
		}
		ws, wos, ratios = append(ws, w), append(wos, wo), append(ratios, w/wo)
	}
	// side by side: both at once, so that whatever else the machine does
	// slows both alike
	var sides []float64
	for i := 0; i < runs; i++ {
		var w, wo float64
		var both sync.WaitGroup
		both.Add(2)
		go func() { defer both.Done(); w = rate(followed, d) }()
		go func() { defer both.Done(); wo = rate(plain, d) }()
		both.Wait()
		sides = append(sides, w/wo)
	}
	fmt.Printf("%s: ratios of the pairs:", drv)
	for _, r := range ratios {
		fmt.Printf(" %.3f", r)
	}
	fmt.Printf("\n%s: side by side:", drv)
	for _, r := range sides {
		fmt.Printf(" %.3f", r)
	}
	fmt.Printf("\n%s: median ratio %.3f (goal: at least 0.97); side by side %.3f\n", drv, median(ratios), median(sides))
	side = median(sides)
	if s := budget.Stats(); s.Share < 8 || s.Limit != 8 || s.Refreshes < uint64(runs) {
		log.Fatalf("the share was not steady at 8: %+v", s)
	}
	check(budget.Close())
	check(plain.Close())
	return median(ws), median(wos), median(ratios), side
}

func podOnServer(app, pod string) (connections, share int) {
	connections, share = -1, -1
	admin.QueryRow(`SELECT connections, share FROM connbudget.pods WHERE application_name = $1 AND pod = $2`,
		app, pod).Scan(&connections, &share)
	return
}

func busy(db *sql.DB, stop chan struct{}, wg *sync.WaitGroup) {
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := db.ExecContext(ctx, "SELECT pg_sleep(0.005)")
				cancel()
				check(err)
			}
		}()
	}
}

func intervals(d time.Duration) float64 { return float64(d) / float64(interval) }

func convergence(rounds int) (above, join, leave []float64) {
	_, err := admin.Exec(`INSERT INTO connbudget.application_limits (application_name, max_connections)
		VALUES ('bench', 8) ON CONFLICT (application_name) DO UPDATE SET max_connections = 8`)
	check(err)
	a, budgetA := pool("pq", "conv-a", true, false)
	stopA := make(chan struct{})
	var wgA sync.WaitGroup
	busy(a, stopA, &wgA)
	for c, _ := podOnServer("bench", "conv-a"); c != 8; c, _ = podOnServer("bench", "conv-a") {
		time.Sleep(10 * time.Millisecond)
	}
	for r := 0; r < rounds; r++ {
		b, budgetB := pool("pgx", "conv-b", true, false)
		stopB := make(chan struct{})
		var wgB sync.WaitGroup
		busy(b, stopB, &wgB)
		joined := time.Now()
		var over time.Time
		longest, both := time.Duration(0), time.Duration(-1)
		for time.Since(joined) < 10*interval {
			ca, sa := podOnServer("bench", "conv-a")
			cb, sb := podOnServer("bench", "conv-b")
			now := time.Now()
			if ca > sa && over.IsZero() {
				over = now
			} else if ca <= sa && !over.IsZero() {
				if d := now.Sub(over); d > longest {
					longest = d
				}
				over = time.Time{}
			}
			if both < 0 && ca == 4 && sa == 4 && cb == 4 && sb == 4 {
				both = now.Sub(joined)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !over.IsZero() {
			longest = time.Since(over)
		}
		close(stopB)
		wgB.Wait()
		left := time.Now()
		check(budgetB.Close())
		back := time.Duration(-1)
		for time.Since(left) < 10*interval {
			if c, _ := podOnServer("bench", "conv-a"); c == 8 {
				back = time.Since(left)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Printf("round %d: pod a above its share for at most %.2f intervals; both at 4 after %.2f; a back at 8 after %.2f after b left\n",
			r+1, intervals(longest), intervals(both), intervals(back))
		above, join, leave = append(above, intervals(longest)), append(join, intervals(both)), append(leave, intervals(back))
		time.Sleep(3 * interval)
	}
	close(stopA)
	wgA.Wait()
	check(budgetA.Close())
	return above, join, leave
}

// worst is the largest of v, or -1 if a round never converged.
func worst(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		if x < 0 {
			return -1
		}
		if x > m {
			m = x
		}
	}
	return m
}

func main() {
	var err error
	admin, err = sql.Open("postgres", "sslmode=disable application_name=bench-admin")
	check(err)
	runs, seconds, rounds := env("CB_BENCH_RUNS", 15), env("CB_BENCH_SECONDS", 1), env("CB_BENCH_ROUNDS", 5)
	_, err = admin.Exec(`INSERT INTO connbudget.application_limits (application_name, max_connections)
		VALUES ('bench', NULL) ON CONFLICT (application_name) DO UPDATE SET max_connections = NULL`)
	check(err)

	fmt.Printf("== (a) overhead: 8 connections, 8 workers, SELECT 1, %d pairs of %d s runs in rotated order\n", runs, seconds)
	table := "| driver | with the adapter (q/s, median) | without (q/s, median) | median ratio of the pairs | side by side |\n|---|---|---|---|---|\n"
	for _, drv := range []string{"pq", "pgx"} {
		w, wo, r, side := overhead(drv, runs, time.Duration(seconds)*time.Second)
		table += fmt.Sprintf("| %s | %.0f | %.0f | %.3f | %.3f |\n", map[string]string{"pq": "lib/pq", "pgx": "pgx v4 stdlib"}[drv], w, wo, r, side)
	}

	fmt.Printf("\n== (b) convergence: cap 8, pod a busy, pod b joins and leaves, %d rounds (refresh interval %v)\n", rounds, interval)
	above, join, leave := convergence(rounds)
	table += "\n| convergence, in refresh intervals (median / worst of the rounds) | |\n|---|---|\n"
	table += fmt.Sprintf("| pod b joins: pod a above its share, at most | %.2f / %.2f |\n", median(above), worst(above))
	table += fmt.Sprintf("| pod b joins: both hold their share of 4 | %.2f / %.2f |\n", median(join), worst(join))
	table += fmt.Sprintf("| pod b leaves: pod a holds 8 again | %.2f / %.2f |\n", median(leave), worst(leave))
	fmt.Printf("\n%s", table)
}
EOF
cd "$work/gopath/src/cbbench"
go build -o "$work/cbbench" .
echo "== $(nproc) cores, $(uptime | sed 's/.*load average/load average/'), $(date -u +%Y-%m-%d)"
"$work/cbbench"
