package connbudget

// Tests against the real server of what the adapter makes of answers that
// are not the usual ones: hostile or malformed shares, a server without
// connbudget, a share refused after the rules changed, and connect errors
// that are not refusals. See
// server_test.go for what they need.
//
// The hostile answers come from the server itself: a pool that connects
// with search_path=hostile,pg_catalog has the protocol's unqualified
// current_setting() call resolved to hostile.current_setting(), which
// answers what the row of the pod in hostile.answers says (a share text,
// NULL, none or several rows, or an error with a given SQLSTATE), and the
// real setting for a pod without a row.

import (
	"database/sql"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
)

var hostileOnce sync.Once

const hostileSQL = `
CREATE SCHEMA IF NOT EXISTS hostile;
CREATE TABLE IF NOT EXISTS hostile.answers (
	pod text PRIMARY KEY, share text, copies int NOT NULL DEFAULT 1, sqlstate text);
GRANT USAGE ON SCHEMA hostile TO PUBLIC;
GRANT SELECT ON hostile.answers TO PUBLIC;
CREATE OR REPLACE FUNCTION hostile.current_setting(name text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
	a hostile.answers;
BEGIN
	SELECT * INTO a FROM hostile.answers
	WHERE pod = pg_catalog.current_setting('connbudget.pod', true);
	IF NOT FOUND OR name <> 'connbudget.share' THEN
		RETURN NEXT pg_catalog.current_setting(name);
		RETURN;
	END IF;
	IF a.sqlstate IS NOT NULL THEN
		RAISE EXCEPTION 'hostile answer' USING ERRCODE = a.sqlstate;
	END IF;
	FOR i IN 1..a.copies LOOP
		RETURN NEXT a.share;
	END LOOP;
END $$;`

// hostileDSN is the test server's connection string for a pool whose
// share query the hostile schema answers.
func hostileDSN(t *testing.T) string {
	t.Helper()
	hostileOnce.Do(func() {
		if _, err := admin.Exec(hostileSQL); err != nil {
			t.Fatal(err)
		}
	})
	return dsnFor(testRole()) + " options='-c search_path=hostile,pg_catalog'"
}

// answer makes the server answer pod's share query with share (nil: NULL)
// in copies rows, or with an error of SQLSTATE sqlstate.
func answer(t *testing.T, pod string, share any, copies int, sqlstate any) {
	t.Helper()
	if _, err := admin.Exec(`INSERT INTO hostile.answers VALUES ($1, $2, $3, $4)
		ON CONFLICT (pod) DO UPDATE SET share = excluded.share, copies = excluded.copies, sqlstate = excluded.sqlstate`,
		pod, share, copies, sqlstate); err != nil {
		t.Fatal(err)
	}
}

func realAnswer(t *testing.T, pod string) {
	t.Helper()
	if _, err := admin.Exec(`DELETE FROM hostile.answers WHERE pod = $1`, pod); err != nil {
		t.Fatal(err)
	}
}

// Hostile and malformed answers from the server, read by both drivers:
// each is counted and logged without the server's control bytes, and
// never sizes the pool, which keeps its last good share on the server
// too. A good answer after them is obeyed.
func TestHostileAnswers(t *testing.T) {
	serverOnly(t)
	dsn := hostileDSN(t)
	setLimit(t, "hostile", 4, "")
	for _, drv := range []string{"pq", "pgx"} {
		pod := "hostile-" + drv
		realAnswer(t, pod)
		p := openPodAt(t, dsn, "hostile", pod, drv, Options{}, 0)
		p.work(6, "SELECT pg_sleep(0.005)")
		if within(5*time.Second, func() bool { c, _ := p.onServer(); return c == 4 && p.budget.Stats().Share == 4 }) < 0 {
			t.Fatalf("%s: the pod never held its share of 4: %+v", drv, p.budget.Stats())
		}
		const big = " min_size=0 budget=40 refresh_ms=200"
		for _, c := range []struct {
			name   string
			share  any
			copies int
		}{
			{"NULL", nil, 1},
			{"not a number", "protocol=2 status=ok max_size=abc" + big, 1},
			{"a control byte", "protocol=2 status=ok max_size=30\t" + big, 1},
			{"a newline", "status=ok max_size=30\nstatus=ok" + big, 1},
			{"out of range", "protocol=2 status=ok max_size=99999999999" + big, 1},
			{"above the budget", "protocol=2 status=ok max_size=41" + big, 1},
			{"no status", "protocol=2 max_size=30" + big, 1},
			{"two rows", "protocol=2 status=ok max_size=30" + big, 2},
			{"no row", "protocol=2 status=ok max_size=30" + big, 0},
			{"words missing", "protocol=2 status=ok max_size=30", 1},
		} {
			before := p.budget.Stats().Errors.Answer
			answer(t, pod, c.share, c.copies, nil)
			if within(2*time.Second, func() bool { return p.budget.Stats().Errors.Answer > before }) < 0 {
				t.Errorf("%s: %s: not counted as an answer that is not one: %+v", drv, c.name, p.budget.Stats())
			}
			if s := p.budget.Stats(); s.Share != 4 || s.Limit != 4 || s.Status != "ok" {
				t.Errorf("%s: %s: the pool took a size from it: %+v", drv, c.name, s)
			}
			if conns, _ := p.onServer(); conns > 4 {
				t.Errorf("%s: %s: the pod holds %d connections on the server, its share is 4", drv, c.name, conns)
			}
		}
		p.logMu.Lock()
		for _, line := range p.logs {
			if strings.ContainsAny(line, "\t\n\x00") {
				t.Errorf("%s: a log line carries the server's control bytes: %q", drv, line)
			}
		}
		p.logMu.Unlock()
		// a good answer is obeyed: the pod shrinks to it on the server
		answer(t, pod, "protocol=2 status=ok max_size=2 min_size=0 budget=40 refresh_ms=200 future=word", 1, nil)
		took := within(3*time.Second, func() bool { c, _ := p.onServer(); return c == 2 && p.budget.Stats().Limit == 2 })
		if took < 0 || took > 2*interval+interval*11/10 {
			c, _ := p.onServer()
			t.Errorf("%s: a share of 2: the pod holds %d after %v: %+v", drv, c, took, p.budget.Stats())
		}
		p.close()
		p.noFailures()
	}
}

// A server without connbudget (not preloaded; test/adapters/go.sh starts
// one beside the test server): the pool uses its fixed size, says so once,
// and serves every request.
func TestServerWithoutConnbudget(t *testing.T) {
	serverOnly(t)
	dsn := os.Getenv("CONNBUDGET_TEST_NOEXT_DSN")
	if dsn == "" {
		t.Skip("needs CONNBUDGET_TEST_NOEXT_DSN, a server without connbudget")
	}
	other, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	p := openPodAt(t, dsn, "noext", "noext-a", "pq", Options{}, 3)
	p.work(8, "SELECT pg_sleep(0.005)")
	held := func() (n int) {
		other.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'noext'`).Scan(&n)
		return n
	}
	most := 0
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		if n := held(); n > most {
			most = n
		}
	}
	s := p.budget.Stats()
	if s.Status != "no-extension" || s.Limit != 3 || s.Errors.NoExtension != 1 || most != 3 {
		t.Errorf("%+v; at most %d connections on the server, want the fixed size 3", s, most)
	}
	if s.RefreshInterval != probeInterval {
		t.Errorf("looks for connbudget again every %v, want %v", s.RefreshInterval, probeInterval)
	}
	p.close()
	p.noFailures()
	if within(2*time.Second, func() bool { return held() == 0 }) < 0 {
		t.Errorf("%d connections left on the server after Close", held())
	}
}

// The rules change under a governed pool (its role may no longer claim its
// application): the share says status=refused, and the pool keeps its
// last share and says so.
func TestShareRefusedWhenTheRulesChange(t *testing.T) {
	serverOnly(t)
	setLimit(t, "turncoat", 3, "")
	p := openPod(t, "turncoat", "turncoat-a", "pq", Options{})
	p.work(3, "SELECT pg_sleep(0.005)")
	if within(5*time.Second, func() bool { return p.budget.Stats().Share == 3 }) < 0 {
		t.Fatalf("never had its share: %+v", p.budget.Stats())
	}
	p.stopWork()
	setLimit(t, "turncoat", 3, "{cbgo_nobody}")
	if within(5*time.Second, func() bool { return p.budget.Stats().Status == "refused" }) < 0 {
		t.Fatalf("the share never said refused: %+v", p.budget.Stats())
	}
	if s := p.budget.Stats(); s.Limit != 3 || s.Errors.Refused == 0 {
		t.Errorf("%+v, want the last share 3 kept and the refusal counted", s)
	}
}

// A connect error that is not a refusal (a wrong password) is the
// driver's own error, at once, not retried.
func TestWrongPasswordIsNotARefusal(t *testing.T) {
	serverOnly(t)
	if os.Getenv("CONNBUDGET_TEST_PASSWORD") == "" {
		t.Skip("the test server trusts every role")
	}
	setLimit(t, "intruder", 3, "")
	base := strings.Replace(dsnFor(testRole()), "password='", "password='wrong", 1)
	p := openPodAt(t, base, "intruder", "intruder-a", "pq", Options{}, 0)
	start := time.Now()
	err := p.db.Ping()
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) || pqErr.Code != "28P01" || strings.Contains(err.Error(), "connbudget") {
		t.Errorf("err = %v, want the driver's 28P01", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v: retried", took)
	}
	if s := p.budget.Stats(); s.RefusedConnects != 0 || s.PermanentRefusals != 0 {
		t.Errorf("%+v", s)
	}
}
