// A pod of the mixed fleet in Go: a database/sql pool (lib/pq) that follows
// its share through the connbudget adapter (client/go).
//
//	pod APP POD WORKERS LOADFILE STATUSFILE
//
// WORKERS goroutines each take a connection, run a 20 ms query, give it
// back and pause a little; how many of them are busy is read from LOADFILE
// ten times a second. Four times a second the pod writes "share pool_size
// served errors" to STATUSFILE. The server is the libpq environment's
// (PGHOST, PGPORT, PGUSER, PGDATABASE, which lib/pq reads). SIGTERM closes
// the pool, which hands the share back.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"math/rand"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	connbudget "github.com/connbudget/connbudget/client/go"
	"github.com/lib/pq"
)

func readLoad(path string, last int64) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return last
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 32)
	if err != nil {
		return last
	}
	return n
}

func main() {
	if len(os.Args) != 6 {
		log.Fatal("usage: pod APP POD WORKERS LOADFILE STATUSFILE")
	}
	app, podName, loadfile, statusfile := os.Args[1], os.Args[2], os.Args[4], os.Args[5]
	workers, err := strconv.Atoi(os.Args[3])
	if err != nil || workers < 1 {
		log.Fatalf("WORKERS: %q", os.Args[3])
	}
	budget, err := connbudget.New(connbudget.Options{ApplicationName: app, Pod: podName})
	if err != nil {
		log.Fatal(err)
	}
	dsn, err := budget.DSN("sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		log.Fatal(err)
	}
	db := sql.OpenDB(budget.Connector(connector))
	db.SetMaxOpenConns(workers)
	if err := budget.Follow(db); err != nil {
		log.Fatal(err)
	}

	var load, served, failed atomic.Int64
	load.Store(readLoad(loadfile, 0))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(index int64) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(index))
			for ctx.Err() == nil {
				if index >= load.Load() {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				qctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := db.ExecContext(qctx, "SELECT pg_sleep(0.02)")
				cancel()
				if err != nil {
					if failed.Add(1) == 1 {
						log.Printf("%s: query failed: %v", podName, err)
					}
				} else {
					served.Add(1)
				}
				time.Sleep(time.Duration(rnd.Intn(10)) * time.Millisecond)
			}
		}(int64(i))
	}

	ticker := time.NewTicker(100 * time.Millisecond)
	for tick := 0; ctx.Err() == nil; tick++ {
		select {
		case <-ctx.Done():
		case <-ticker.C:
			load.Store(readLoad(loadfile, load.Load()))
			if tick%2 == 0 {
				s := budget.Stats()
				line := fmt.Sprintf("%d %d %d %d\n", s.Share, s.Limit, served.Load(), failed.Load())
				if os.WriteFile(statusfile+".tmp", []byte(line), 0o644) == nil {
					_ = os.Rename(statusfile+".tmp", statusfile)
				}
			}
		}
	}
	ticker.Stop()
	wg.Wait()
	if err := budget.Close(); err != nil {
		log.Printf("%s: close: %v", podName, err)
	}
}
