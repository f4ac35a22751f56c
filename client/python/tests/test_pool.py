"""The adapter against a real server: every number asserted is sampled on
the server (connbudget.pods, connbudget.applications)."""

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

import connbudget
from conftest import LOGIN_ROLE, pod, pods, wait_until

# What measuring adds to a deadline: the test's own polling and a busy
# machine's scheduling.
SLACK_S = 0.15
# What opening and closing connections adds to it (connects,
# authentication, a busy thread's release), which the protocol does not
# pace.
CONNECT_S = 2.0


def second_pod_joins(admin, app, reporting_pods, refresh_s, show=None):
    """Pod b joins with a demand of 8: within two refresh intervals pod a
    holds no more than its new share, 4 of 8.  Returns pod b."""
    show = show or (lambda: pods(admin, app))
    other = reporting_pods(app, "b", demand=8)
    joined = time.monotonic()
    wait_until(lambda: pod(admin, app, "a")[1] == 4, 2 * refresh_s,
               show=lambda: pods(admin, app))
    wait_until(lambda: pod(admin, app, "a")[0] <= 4,
               2 * refresh_s + SLACK_S - (time.monotonic() - joined), show=show)
    return other


def test_follows_its_share_down_and_up(admin, application, budgets, workers, reporting_pods,
                                       refresh_s):
    app = application(max_connections=8)
    budget = budgets(app, "a")
    busy = workers(budget._pool, 12)
    # alone, it holds the application's whole cap
    wait_until(lambda: pod(admin, app, "a") == (8, 8), 10 * refresh_s + 2,
               show=lambda: pods(admin, app))

    # a second pod joins
    other = second_pod_joins(admin, app, reporting_pods, refresh_s)
    assert budget.stats()["share"] == 4
    assert budget._pool.max_size == 4
    assert budget._pool.get_stats()["connbudget_share"] == 4    # in the pool's own stats

    # it leaves: within two intervals the first has its share of 8 back,
    # and opens the connections it lacks
    other.leave()
    left = time.monotonic()
    wait_until(lambda: budget.stats()["share"] == 8, 2 * refresh_s + SLACK_S,
               show=lambda: (pods(admin, app), budget.stats()))
    wait_until(lambda: pod(admin, app, "a") == (8, 8),
               2 * refresh_s + SLACK_S + CONNECT_S - (time.monotonic() - left),
               show=lambda: pods(admin, app))
    assert busy.errors == []
    stats = budget.stats()
    assert stats["surplus_closed"] >= 4
    assert stats["errors"] == {}

    # the pool's own metrics keep working, the adapter's beside them
    popped = budget._pool.pop_stats()
    assert (popped["pool_max"], popped["connbudget_share"]) == (8, 8)
    assert popped["requests_num"] > 100
    assert popped["connbudget_surplus_closed"] >= stats["surplus_closed"]
    assert popped["connbudget_refreshes"] >= 2
    after = budget._pool.get_stats()       # counters since the pop, as the pool's are
    assert "connbudget_surplus_closed" not in after
    assert after["connbudget_share"] == 8
    assert after.get("requests_num", 0) < popped["requests_num"]


def test_a_pool_with_callers_queued_learns_first_that_its_share_fell(
        admin, application, budgets, workers, reporting_pods, refresh_s):
    # five callers for each connection, each holding it 50 ms: a refresh
    # queued behind them would wait longer than an interval for its turn
    app = application(max_connections=8)
    budget = budgets(app, "a")
    busy = workers(budget._pool, 40, query="SELECT pg_sleep(0.05)")
    wait_until(lambda: pod(admin, app, "a") == (8, 8), 10 * refresh_s + 2,
               show=lambda: pods(admin, app))
    skipped = budget.stats()["refreshes_skipped"]
    # a second pod joins: the next refresh takes the next connection a
    # caller gives back, and the pool is within its new share one query later
    other = second_pod_joins(admin, app, reporting_pods, refresh_s,
                             show=lambda: (pods(admin, app), budget.stats()))
    assert budget.stats()["refreshes_skipped"] == skipped
    other.leave()
    wait_until(lambda: pod(admin, app, "a") == (8, 8), 2 * refresh_s + SLACK_S + CONNECT_S,
               show=lambda: pods(admin, app))
    assert busy.errors == []
    assert budget.stats()["refreshes_skipped"] == skipped


def test_never_holds_more_than_its_share_while_busy(admin, application, budgets, workers,
                                                    reporting_pods, refresh_s):
    app = application(max_connections=8)
    reporting_pods(app, "b", demand=8)
    budget = budgets(app, "a")
    busy = workers(budget._pool, 12)
    # the server would admit 7 (the cap less b's one); its share is 4
    wait_until(lambda: pod(admin, app, "a") == (4, 4), 2 * refresh_s + 2,
               show=lambda: pods(admin, app))
    held = []
    end = time.monotonic() + 10 * refresh_s
    while time.monotonic() < end:
        connections, share = pod(admin, app, "a")
        assert share == 4
        assert connections <= share
        held.append(connections)
        time.sleep(0.01)
    assert max(held) == 4           # and it used what it may hold
    assert busy.errors == []
    assert busy.done > 100
    stats = budget.stats()
    assert (stats["share"], stats["pool_max"]) == (4, 4)
    assert stats["demand"] == 15     # 12 busy plus 25%


def test_a_saturated_pool_still_reports_and_grows(admin, application, budgets, workers,
                                                  refresh_s):
    # every connection is held for longer than an interval, so a refresh
    # never finds one idle: it asks on a connection of its own
    app = application(max_connections=8)
    budget = budgets(app, "a", max_size=6)
    busy = workers(budget._pool, 6, query="SELECT pg_sleep(1)", timeout=20)
    wait_until(lambda: pod(admin, app, "a") == (6, 6), 10 * refresh_s + 3,
               show=lambda: pods(admin, app))
    assert budget.stats()["refresh_connects"] >= 1
    assert busy.errors == []


def test_frees_its_share_on_close(admin, application, budgets, workers, refresh_s):
    app = application(max_connections=8)
    first, second = budgets(app, "a"), budgets(app, "b")
    serving = workers(first._pool, 8)
    busy = workers(second._pool, 8)
    wait_until(lambda: pods(admin, app) == {"a": (4, 4), "b": (4, 4)}, 4 * refresh_s + 4,
               show=lambda: pods(admin, app))

    serving.stop()      # the application stops serving, then closes its pool
    first.close()
    closed = time.monotonic()
    publish_s = max(0.01, refresh_s / 10)
    # the other pod's share grows within a publish period, its pool within a
    # refresh interval more, and the closing pod is gone
    wait_until(lambda: pod(admin, app, "b")[1] == 8, publish_s + SLACK_S,
               show=lambda: pods(admin, app))
    wait_until(lambda: second.stats()["share"] == 8,
               publish_s + 1.1 * refresh_s + SLACK_S - (time.monotonic() - closed))
    wait_until(lambda: "a" not in pods(admin, app), CONNECT_S,
               show=lambda: admin.execute("SELECT *, now() FROM connbudget.pods WHERE "
                                          "application_name = %s", (app,)).fetchall())
    wait_until(lambda: pod(admin, app, "b") == (8, 8), CONNECT_S,
               show=lambda: pods(admin, app))
    assert busy.errors == []


def refused(admin, app):
    """Connects of app the server refused since it started."""
    row = admin.execute("SELECT refused FROM connbudget.applications "
                        "WHERE application_name = %s", (app,)).fetchone()
    return row[0] if row else 0


def test_backpressure_does_not_fail_requests_that_can_wait(admin, application, budgets,
                                                           refresh_s):
    app = application(max_connections=2)
    # another pod holds the application's cap
    holders = [psycopg.connect(application_name=app, options="-c connbudget.pod=holder")
               for _ in range(2)]
    before = refused(admin, app)
    budget = budgets(app, "a", user=LOGIN_ROLE, timeout=20)
    results, started = [], time.monotonic()

    def request():
        with budget._pool.connection(timeout=20) as conn:
            results.append(conn.execute("SELECT 1").fetchone()[0])

    callers = [threading.Thread(target=request) for _ in range(4)]
    for caller in callers:
        caller.start()
    wait_until(lambda: refused(admin, app) >= before + 2, 5)
    time.sleep(1)
    assert results == []                       # still waiting, none failed
    for holder in holders:
        holder.close()
    for caller in callers:
        caller.join(20)
    assert results == [1, 1, 1, 1]
    assert time.monotonic() - started < 10
    stats = budget.stats()
    assert stats["connects_refused"] >= 2
    assert stats["refused_permanent"] == 0
    # refused connects were paced from the server's retry_ms, not hammered
    assert refused(admin, app) - before <= 2 * (time.monotonic() - started) / refresh_s + 2
    connections, share = pod(admin, app, "a")
    assert connections <= 2


def test_permanent_refusal_is_reported_and_not_hammered(admin, application, budgets,
                                                        refresh_s, caplog):
    # an application only another role may claim: 42501
    app = application(roles=["connbudget_py_nobody"])
    caplog.set_level(logging.ERROR, logger="connbudget")
    before = refused(admin, app)
    budget = budgets(app, "a", user=LOGIN_ROLE)
    started = time.monotonic()
    with pytest.raises(connbudget.Refused) as first:
        with budget._pool.connection(timeout=10):
            pass
    assert first.value.sqlstate == "42501"
    assert first.value.reason == "role_may_not_claim"
    assert time.monotonic() - started < 2      # not the request's whole timeout
    asked = refused(admin, app)
    assert asked == before + 1
    # requests fail at once while the refusal holds, and the server is asked
    # again no more often than every 10 refresh intervals
    end = time.monotonic() + 10 * refresh_s
    while time.monotonic() < end:
        begin = time.monotonic()
        with pytest.raises(connbudget.Refused):
            with budget._pool.connection(timeout=10):
                pass
        assert time.monotonic() - begin < 0.05
        time.sleep(0.02)
    assert refused(admin, app) <= asked + 1
    assert [r.levelname for r in caplog.records if "refuses" in r.getMessage()] == ["ERROR"]
    assert budget.stats()["requests_refused"] > 5


@pytest.mark.skipif(not os.environ.get("CB_CLUSTER_DIR"), reason="needs CB_CLUSTER_DIR, PG_BINDIR")
def test_recovers_when_the_server_restarts(application, budgets, workers, refresh_s):
    app = application(max_connections=8)
    budget = budgets(app, "a")
    busy = workers(budget._pool, 4, query="SELECT 1")
    wait_until(lambda: budget.stats()["refreshes"] >= 2, 10 * refresh_s + 2)

    cluster = os.environ["CB_CLUSTER_DIR"]
    subprocess.run([os.path.join(os.environ["PG_BINDIR"], "pg_ctl"), "-D",
                    os.path.join(cluster, "data"), "-l", os.path.join(cluster, "server.log"),
                    "-w", "-t", "60", "-m", "fast", "restart"],
                   check=True, stdout=subprocess.DEVNULL)
    restarted = time.monotonic()
    refreshes = budget.stats()["refreshes"]

    # the pool recovers: within a few intervals every request succeeds again
    def served_since(moment):
        done = busy.done
        time.sleep(5 * refresh_s)
        return busy.done > done and all(t < moment for t, _ in busy.errors)
    wait_until(lambda: served_since(time.monotonic()), 10)
    # the adapter goes on refreshing, and the new server knows the pod
    wait_until(lambda: budget.stats()["refreshes"] >= refreshes + 3, 10 * refresh_s)
    with psycopg.connect(autocommit=True) as admin:
        wait_until(lambda: pod(admin, app, "a")[1] == budget.stats()["share"], 10 * refresh_s,
                   show=lambda: pods(admin, app))
        connections, share = pod(admin, app, "a")
        assert 1 <= connections <= share == 5     # 4 busy plus 25%, at least 1
    assert time.monotonic() - restarted < 15


class Prefork:
    """prefork_app.py: a master and its workers, in a process group of
    their own; stats() asks every worker for its Budget's stats."""

    def __init__(self, app, pod, workers):
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), here]))
        self.workers = workers
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(here, "prefork_app.py"), app, pod, str(workers)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self._buffer = b""

    def _lines(self, timeout=10):
        fd, deadline = self.process.stdout.fileno(), time.monotonic() + timeout
        while self._buffer.count(b"\n") < self.workers:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError("the workers did not answer within %d s" % timeout)
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError("the workers exited")
            self._buffer += chunk
        lines = self._buffer.split(b"\n")
        self._buffer = b"\n".join(lines[self.workers:])
        return [json.loads(line) for line in lines[:self.workers]]

    def stats(self):
        self.process.stdin.write(b"stats\n")
        self.process.stdin.flush()
        return self._lines()

    def stop(self):
        """The workers' last stats; they close their pools and exit."""
        self.process.stdin.close()
        last = self._lines(30)
        assert self.process.wait(30) == 0
        return last

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def test_prefork_workers_share_their_pods_share(admin, application, reporting_pods, refresh_s):
    app = application(max_connections=8)
    other = reporting_pods(app, "b", demand=8)
    server = Prefork(app, "prefork", 3)
    try:
        def within(share, intervals):
            """for a while the pod's share is share, and it holds no more;
            when the workers' parts of it move from one to another (their
            demands are split by the server), the one whose part grew may
            connect before the one whose part shrank has closed, but never
            for longer than the two intervals it has to follow its part."""
            end = time.monotonic() + intervals * refresh_s
            over = None
            while time.monotonic() < end:
                connections, now = pod(admin, app, "prefork")
                assert now == share
                if connections <= share:
                    over = None
                else:
                    over = over or time.monotonic()
                    assert connections <= share + 1
                    assert time.monotonic() - over <= 2 * refresh_s + SLACK_S
                time.sleep(0.01)

        def each_worker(share):
            stats = server.stats()
            assert len({w["pool_session"] for w in stats}) == 3     # a pool session each
            assert all(w["pod"] == "prefork" and w["status"] == "ok" for w in stats)
            assert all(1 <= w["pool_max"] == w["share"] for w in stats)
            assert sum(w["share"] for w in stats) == share
            assert all(w["request_errors"] == [] for w in stats)
            return stats

        # three processes, one pod: together within the pod's share of 4
        # (the server would admit 7), once they have all reported
        wait_until(lambda: pod(admin, app, "prefork") == (4, 4), 10 + 10 * refresh_s,
                   show=lambda: pods(admin, app))
        time.sleep(3 * refresh_s)
        within(4, 10)
        each_worker(4)

        # the other pod leaves: the workers grow together to the whole cap
        other.leave()
        wait_until(lambda: pod(admin, app, "prefork") == (8, 8), 4 * refresh_s + 1,
                   show=lambda: pods(admin, app))
        time.sleep(3 * refresh_s)
        within(8, 5)
        each_worker(8)

        # each worker hands its part back as it closes, and closes its
        # connections
        last = server.stop()
        assert [w["status"] for w in last] == ["left"] * 3
        assert all(w["request_errors"] == [] for w in last)
        wait_until(lambda: pod(admin, app, "prefork")[0] == 0, CONNECT_S,
                   show=lambda: pods(admin, app))
        # the pod is gone at once, or, when the server has missed one of
        # leaves that come together, once its lease lapses
        ttl_s = int(admin.execute("SELECT setting FROM pg_settings "
                                  "WHERE name = 'connbudget.pod_ttl'").fetchone()[0]) / 1000
        wait_until(lambda: "prefork" not in pods(admin, app), ttl_s + 2 * refresh_s + SLACK_S,
                   show=lambda: pods(admin, app))
    finally:
        server.kill()


def test_a_pool_the_server_does_not_govern_keeps_a_fixed_size(admin, budgets, workers, caplog):
    admin.execute("ALTER SYSTEM SET connbudget.unconfigured_applications = 'other'")
    admin.execute("SELECT pg_reload_conf()")
    try:
        with psycopg.connect(autocommit=True) as probe:
            wait_until(lambda: probe.execute("SHOW connbudget.unconfigured_applications")
                       .fetchone()[0] == "other", 5)
        caplog.set_level(logging.WARNING, logger="connbudget")
        budget = budgets("py-not-configured", "a", max_size=3)     # no row: "other"
        busy = workers(budget._pool, 6)
        wait_until(lambda: admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'py-not-configured'").fetchone()[0] == 3, 5)
        stats = budget.stats()
        assert (stats["status"], stats["share"], stats["pool_max"]) == ("other", None, 3)
        assert len([r for r in caplog.records if "does not govern" in r.getMessage()]) == 1
        assert busy.errors == []
    finally:
        admin.execute("ALTER SYSTEM RESET connbudget.unconfigured_applications")
        admin.execute("SELECT pg_reload_conf()")
