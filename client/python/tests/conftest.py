"""Helpers for the tests against a real server (PGHOST, PGPORT, PGUSER as a
superuser, PGDATABASE; the server preloads connbudget and has the
extension).  Every test uses applications of its own, so that pods of one
test never share the other's budget."""

import os
import threading
import time

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import connbudget

# A role the server may refuse: superusers are never refused by connbudget.
# It logs in with a password (scram-sha-256) where the server asks for one.
LOGIN_ROLE = os.environ.get("CONNBUDGET_TEST_ROLE", "connbudget_py")
LOGIN_PASSWORD = os.environ.get("CONNBUDGET_TEST_PASSWORD")


def wait_until(predicate, timeout, step=0.01, show=None):
    """Seconds until predicate() was true; fails after timeout seconds,
    saying what show() returns then."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("not within %.2f s%s" % (
                timeout, "; now: %r" % (show(),) if show else ""))
        time.sleep(step)


@pytest.fixture
def admin():
    with psycopg.connect(autocommit=True, application_name="connbudget-test-admin") as conn:
        yield conn


@pytest.fixture
def refresh_s(admin):
    """The server's refresh interval, in seconds."""
    return int(admin.execute("SELECT setting FROM pg_settings "
                             "WHERE name = 'connbudget.refresh_interval'").fetchone()[0]) / 1000


@pytest.fixture
def application(admin, request):
    """application(max_connections=..., roles=...) -> a new application's name."""
    names = []

    def create(max_connections=None, roles=None):
        name = "py-%s-%d" % (request.node.name[5:30], len(names))
        admin.execute("INSERT INTO connbudget.application_limits "
                      "(application_name, max_connections, roles) VALUES (%s, %s, %s)",
                      (name, max_connections, roles))
        names.append(name)
        return name

    yield create
    with psycopg.connect(autocommit=True) as conn:      # admin's may be gone: a restart
        for name in names:
            conn.execute("DELETE FROM connbudget.application_limits "
                         "WHERE application_name = %s", (name,))


def pods(admin, app):
    """{pod: (connections, share)} of app, as the server counts them."""
    rows = admin.execute("SELECT pod, connections, share FROM connbudget.pods "
                         "WHERE application_name = %s", (app,)).fetchall()
    return {pod: (connections, share) for pod, connections, share in rows}


def pod(admin, app, name):
    return pods(admin, app).get(name, (0, None))


@pytest.fixture
def budgets():
    """budgets(app, pod, **pool options) -> a followed pool's Budget; each
    is closed at the end of the test."""
    made = []

    def make(app, pod, conninfo="", user=None, **options):
        options.setdefault("min_size", 1)
        options.setdefault("max_size", 20)
        options.setdefault("timeout", 10)
        login = {"user": user} if user else {}
        if user == LOGIN_ROLE and LOGIN_PASSWORD:
            login["password"] = LOGIN_PASSWORD
        identity = connbudget.connect_kwargs(app, pod=pod, **login)
        pool = ConnectionPool(conninfo, kwargs=identity, open=False, **options)
        budget = connbudget.follow(pool)
        made.append(budget)
        return budget

    yield make
    for budget in made:
        budget.close()


class Workers:
    """threads that keep a pool busy, each running query in a loop; every
    error a request met is kept."""

    def __init__(self, pool, threads, query="SELECT pg_sleep(0.01)", timeout=10):
        self.pool, self.query, self.timeout = pool, query, timeout
        self.errors, self.done = [], 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True)
                         for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _work(self):
        while not self._stop.is_set():
            try:
                with self.pool.connection(timeout=self.timeout) as conn:
                    conn.execute(self.query)
                self.done += 1
            except Exception as error:      # kept for the test to look at
                self.errors.append((time.monotonic(), error))
                time.sleep(0.01)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture
def workers():
    started = []

    def start(pool, threads, **options):
        started.append(Workers(pool, threads, **options))
        return started[-1]

    yield start
    for group in started:
        group.stop()


class ReportingPod:
    """A pod that is not a pool: one plain connection that reports a demand
    every 100 ms, as any client of the protocol may."""

    def __init__(self, app, pod, demand, **kwargs):
        self.conn = psycopg.connect(autocommit=True, application_name=app,
                                    options="-c connbudget.pod=" + pod, **kwargs)
        self.demand = demand
        self._report()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _report(self):
        self.conn.execute("SELECT set_config('connbudget.demand', %s, false)",
                          (str(self.demand),))

    def _run(self):
        while not self._stop.wait(0.1):
            self._report()

    def leave(self):
        self._stop.set()
        self._thread.join()
        self.conn.execute("SET connbudget.demand = 'leave'")
        self.conn.close()


@pytest.fixture
def reporting_pods():
    made = []

    def make(app, pod, demand, **kwargs):
        made.append(ReportingPod(app, pod, demand, **kwargs))
        return made[-1]

    yield make
    for reporter in made:
        if not reporter.conn.closed:
            reporter.leave()
