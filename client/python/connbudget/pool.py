"""Makes a psycopg_pool.ConnectionPool follow its connbudget share.

The protocol is docs/protocol.md of connbudget; client/connbudget_pool.h is
its reference implementation, and this module follows it step by step.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import re
import secrets
import socket
import threading
import time
from typing import Any, Dict, Optional

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from psycopg_pool.pool import AddConnection

from .share import (AnswerError, Refusal, Share, parse_refusal, pool_share_from_rows,
                    share_from_rows)

logger = logging.getLogger("connbudget")

# The protocol's queries (section 3 and 5), schema-qualified so that no
# function of the same name earlier on a search_path answers instead.
SHARE_SQL = ("SELECT pg_catalog.set_config('connbudget.demand', %s, false), "
             "pg_catalog.current_setting('connbudget.share')")
POOL_SHARE_SQL = "SELECT max_size, min_size, budget, refresh_ms FROM connbudget.pool_share(%s::int)"
LEAVE_SQL = {2: "SET connbudget.demand = 'leave'", 1: "SELECT connbudget.pool_share(0)"}

UNKNOWN_SETTING = ("42704", "42602")            # protocol 2 unknown: try 1
NO_EXTENSION = ("42883", "3F000", "55000")      # pool_share() missing or unusable
PEAK_WINDOW = 5             # refresh intervals of busy moments behind the demand
HEADROOM_PCT = 25
DEFAULT_REFRESH_MS = 1000   # until the server says
PROBE_S = 30.0              # how often a pool that speaks 1 (or none) looks again


class IdentityError(ValueError):
    """An application name, pod or pool session id the server would refuse."""


class Refused(psycopg.OperationalError):
    """The server refused a connect for good (SQLSTATE 42501 or 53400): the
    role may not claim the application, the pod belongs to another role, or
    the role or the server has too many pods.  Not retried at the
    backpressure pace; it will not change by itself."""

    def __init__(self, refusal: Refusal):
        super().__init__("connbudget refused the connection (%s %s): %s"
                         % (refusal.sqlstate, refusal.reason, refusal.message))
        self.sqlstate = refusal.sqlstate
        self.reason = refusal.reason


# ---- identity, at connect time (section 1) ----

def check_id(what: str, value: Any) -> str:
    """value if it is 1 to 63 bytes of printable ASCII, else IdentityError."""
    if not isinstance(value, str) or not value:
        raise IdentityError("%s must be a non-empty string, not %r" % (what, value))
    if len(value) > 63:
        raise IdentityError("%s %r is %d bytes; at most 63" % (what, value, len(value)))
    for i, ch in enumerate(value):
        if not " " <= ch <= "~":
            raise IdentityError("%s %r is not printable ASCII (character %d)"
                                % (what, value, i + 1))
    return value


def new_pool_session() -> str:
    """A random pool session id: 8 hex digits."""
    return secrets.token_hex(4)


def connect_kwargs(application_name: str, *, pod: Optional[str] = None,
                   pod_env: Optional[str] = None, options: Optional[str] = None,
                   **kwargs: Any) -> Dict[str, Any]:
    """Connection keyword arguments that tell the server who connects: the
    application, the pod (pod; else the environment variable pod_env names;
    else the host name, which is the pod's name in Kubernetes) and a new pool
    session.  Pass them as ConnectionPool(kwargs=...); options (the user's
    own "-c ..." settings) and every other keyword are kept.  Raises
    IdentityError before any connect if the server would refuse them."""
    if pod is None and pod_env:
        pod = os.environ.get(pod_env)
        if not pod:
            raise IdentityError("the environment variable %s that names the pod is not set"
                                % pod_env)
    if pod is None:
        pod = socket.gethostname()
    check_id("application_name", application_name)
    check_id("pod", pod)
    words = [options] if options else []
    words += ["-c connbudget.pod=" + _escape(pod),
              "-c connbudget.pool_session=" + new_pool_session()]
    return dict(kwargs, application_name=application_name, options=" ".join(words))


def _escape(value: str) -> str:
    # the server splits options at spaces; a backslash keeps the next character
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def _option(options: str, name: str) -> Optional[str]:
    found = re.search(r"connbudget\.%s=((?:\\.|\S)+)" % name, options)
    return re.sub(r"\\(.)", r"\1", found.group(1)) if found else None


# ---- the adapter ----

def follow(pool: ConnectionPool, *, refresh_ms: Optional[int] = None) -> "Budget":
    """Make pool follow its share; returns its Budget.  See Budget."""
    return Budget(pool, refresh_ms=refresh_ms)


class Budget:
    """Sizes a psycopg_pool.ConnectionPool from its pod's connbudget share.

    Create the pool with open=False and connect_kwargs(); Budget opens it,
    with one connection until the server has answered, then every refresh
    interval reports what the pool could use and resizes it within its
    share and its own min_size and max_size.  Surplus connections are
    closed: idle ones at once, those in use when they come back.  Connects
    refused with 53300 are retried within the pool's timeout; permanent
    refusals (42501, 53400) fail requests with Refused.  close() (or the
    pool's own close(), or leaving a with block) hands the share back, then
    closes the pool.

    It wraps the pool's getconn, putconn, close, get_stats and pop_stats and
    its connection_class.  Threads do not survive fork(): in a pre-fork
    server, create the pool and its Budget in each worker, after the fork;
    each gets a pool session of its own.
    """

    def __init__(self, pool: ConnectionPool, *, refresh_ms: Optional[int] = None):
        for name in ("_pool", "_nconns", "_nconns_min", "_min_size", "_max_size", "_waiting",
                     "_opened", "run_task"):
            if not hasattr(pool, name):
                raise TypeError("connbudget needs a psycopg_pool.ConnectionPool 3.1 or later")
        if isinstance(getattr(pool.getconn, "__self__", None), Budget):
            raise ValueError("this pool already follows its share")
        if refresh_ms is not None and not 10 <= refresh_ms <= 3600000:
            raise ValueError("refresh_ms must be from 10 to 3600000")
        self._pool = pool
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._user_min, self._user_max = pool.min_size, pool.max_size
        self._configured_ms = refresh_ms
        self._refresh_ms = refresh_ms or DEFAULT_REFRESH_MS
        self._next = 0.0
        self._share: Optional[Share] = None     # the last good share
        self._status = "starting"
        self._protocol = 2
        self._probed = 0.0
        self._in_use = self._pending = 0       # callers' connections, callers waiting
        self._interval_peak = 0
        self._peaks: collections.deque = collections.deque(maxlen=PEAK_WINDOW)
        self._rotated = time.monotonic()
        self._reported = False
        self._last_demand: Optional[int] = None
        self._reflected: Optional[int] = None     # the demand the share knows
        self._invalid_kind: Optional[str] = None      # said once per kind
        self._failure: Optional[str] = None           # and each failure once
        self._refusal: Optional[Refusal] = None
        self._refused_at = 0.0
        self._counts = collections.Counter()
        self._errors = collections.Counter()
        self._popped = collections.Counter()    # the counters at the last pop_stats

        if not getattr(pool, "_opened", True):
            # a pool session of this Budget's own, however the kwargs came
            options = pool.kwargs.get("options", "")
            if _option(options, "pool_session"):
                pool.kwargs = dict(pool.kwargs, options=re.sub(
                    r"(connbudget\.pool_session=)(?:\\.|\S)+",
                    lambda m: m.group(1) + new_pool_session(), options))
            # one connection until the server has answered
            pool._min_size = pool._nconns = pool._nconns_min = min(self._user_min, 1)
            pool._max_size = 1
        options = pool.kwargs.get("options", "")
        self.application_name = pool.kwargs.get("application_name")
        self.pod = _option(options, "pod")
        self.pool_session = _option(options, "pool_session")

        self._base_class = pool.connection_class
        self._getconn, self._putconn = pool.getconn, pool.putconn
        self._pool_close = pool.close
        pool.connection_class = _refusal_aware(self._base_class, self)
        pool.getconn, pool.putconn, pool.close = self.getconn, self.putconn, self.close
        pool.get_stats = self._with_share(pool.get_stats)
        pool.pop_stats = self._with_share(pool.pop_stats, pop=True)
        pool.open()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="connbudget-%s" % pool.name)
        self._thread.start()

    def __enter__(self) -> "Budget":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- what the pool's callers go through ----

    def getconn(self, timeout: Optional[float] = None) -> psycopg.Connection:
        """The pool's getconn(), counting callers for the demand; fails at
        once with Refused while a permanent refusal holds and the pool has
        no connection to give."""
        with self._lock:
            if self._refusal is not None:
                refusal = self._refusal_in_force()
                if refusal and self._in_use == 0 and not self._pool._pool:
                    self._counts["requests_refused"] += 1
                    raise Refused(refusal)
            self._pending += 1
            busy = self._in_use + self._pending
            if busy > self._interval_peak:
                self._interval_peak = busy
        try:
            conn = self._getconn(timeout)
        except BaseException as error:
            refusal = self._refusal_in_force()
            with self._lock:
                self._pending -= 1
                if isinstance(error, Refused) or refusal and isinstance(error, PoolTimeout):
                    self._counts["requests_refused"] += 1
            if refusal and isinstance(error, PoolTimeout):
                raise Refused(refusal) from error
            raise
        with self._lock:
            self._pending -= 1
            self._in_use += 1
        return conn

    def putconn(self, conn: psycopg.Connection) -> None:
        """The pool's putconn(); a connection beyond the pool's size is
        closed instead of kept."""
        if getattr(conn, "_pool", None) is self._pool:
            with self._lock:
                self._in_use = max(0, self._in_use - 1)
        self._give_back(conn)

    def _give_back(self, conn: psycopg.Connection) -> None:
        pool = self._pool
        # read without the pool's lock first: a surplus is rare
        if pool._nconns > pool._max_size and not pool.closed and (
                getattr(conn, "_pool", None) is pool):
            with pool._lock:
                surplus = pool._nconns > pool._max_size
                if surplus:
                    pool._nconns -= 1
            if surplus:
                conn._pool = None
                conn.close()
                self._count("surplus_closed")
                return
        self._putconn(conn)

    def close(self, timeout: float = 5.0) -> None:
        """Hand the share back (section 7), then close the pool."""
        if not self._closing.is_set():
            self._closing.set()
            self._wake.set()
            if self._thread is not threading.current_thread():
                self._thread.join(timeout)
            self._leave()
        self._pool_close(timeout)

    # ---- what the adapter tells ----

    def stats(self) -> Dict[str, Any]:
        """The adapter's own numbers: its share and what it did."""
        with self._lock:
            share = self._share
            return {
                "application_name": self.application_name,
                "pod": self.pod,
                "pool_session": self.pool_session,
                "status": self._status,
                "protocol": self._protocol if share else None,
                "share": share.max_size if share else None,
                "min_size": share.min_size if share else None,
                "budget": share.budget if share else None,
                "allocation": share.allocation if share else None,
                "pods": share.pods if share else None,
                "connections": share.connections if share else None,
                "refresh_ms": self._refresh_ms,
                "pool_min": self._pool.min_size,
                "pool_max": self._pool.max_size,
                "demand": self._last_demand,
                "in_use": self._in_use,
                "waiting": self._pending,
                "refreshes": self._counts["refreshes"],
                "refreshes_skipped": self._counts["refreshes_skipped"],
                "refresh_connects": self._counts["refresh_connects"],
                "surplus_closed": self._counts["surplus_closed"],
                "connects_refused": self._counts["connects_refused"],
                "refused_permanent": self._counts["refused_permanent"],
                "requests_refused": self._counts["requests_refused"],
                "errors": dict(self._errors),
            }

    def _with_share(self, method: Any, pop: bool = False) -> Any:
        """The pool's get_stats or pop_stats, with the share and the demand
        (measures) and the adapter's counters since the last pop_stats, as
        the pool's own counters are (those still 0 left out, as the pool
        does)."""
        def stats() -> Dict[str, int]:
            result = method()
            with self._lock:
                if self._share is not None:
                    result["connbudget_share"] = self._share.max_size
                    result["connbudget_min_size"] = self._share.min_size
                if self._last_demand is not None:
                    result["connbudget_demand"] = self._last_demand
                counts = self._counts + collections.Counter(
                    {"errors_" + kind: n for kind, n in self._errors.items()})
                for key, value in (counts - self._popped).items():
                    result["connbudget_" + key] = value
                if pop:
                    self._popped = counts
            return result
        return stats

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    # ---- refreshing (sections 2 to 5) ----

    def _run(self) -> None:
        while not self._closing.is_set():
            delay = self._next - time.monotonic()
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()
                continue
            try:
                self._refresh()
            except Exception:       # never let the thread die: log, go on
                logger.exception("connbudget: refreshing the share failed")
                self._next = time.monotonic() + self._jitter(90, 110)

    def _refresh(self) -> None:
        with self._lock:
            demand = self._demand_locked()
            protocol = 1 if self._protocol == 1 and time.monotonic() < self._probed else 2
            interval = self._refresh_ms / 1000
        own = False
        try:
            # one of the pool's own connections, waiting at most an interval
            conn = self._getconn(timeout=min(max(interval, 0.1), 5.0))
        except PoolTimeout:
            # saturated: every connection is held longer than that
            conn, own = self._connect_for_refresh(), True
            if conn is None:
                self._count("refreshes_skipped")
                self._next = time.monotonic() + self._jitter(90, 110)
                return
        except Refused:
            self._count("refreshes_skipped")
            self._next = time.monotonic() + self._jitter(90, 110)
            return
        except PoolClosed:
            return
        release = conn.close if own else lambda: self._give_back(conn)
        if self._closing.is_set():      # closing: no report after the leave
            release()
            return
        broken = False
        try:
            answer, used = self._ask(conn, demand, protocol)
        except psycopg.Error as error:
            answer, used = error, protocol
            broken = conn.closed or conn.broken
        finally:
            release()
        self._apply(answer, demand, protocol == 2, used)
        if broken:
            # a restarted server: the pool's idle connections are gone too;
            # ask again as soon as there are new ones
            self._pool.check()
            self._next = time.monotonic() + self._refresh_ms / 10000

    def _connect_for_refresh(self) -> Optional[psycopg.Connection]:
        """A saturated pool whose callers wait, and whose share is what it
        reported (it could grow if it reported more): a connection of its
        own to report with, outside the pool, tried once and closed after.
        None when that is not so, or the server refused it (which counts
        as a report) or could not be reached.  A pool held back by others'
        shares waits for one of its own connections instead, as a connect
        would only be refused."""
        pool = self._pool
        with self._lock:
            share = self._share
            if not (self._pending > 0 and self._refusal_in_force() is None
                    and pool._nconns < self._user_max
                    and (self._status == "starting" or self._status == "ok"
                         and 0 < share.max_size == self._reflected)):
                return None
        kwargs = dict(pool.kwargs, connect_timeout=max(1, min(round(pool.timeout), 10)))
        try:
            conn = self._base_class.connect(pool.conninfo, **kwargs)
        except psycopg.OperationalError as error:
            refusal = parse_refusal(str(error))
            if refusal and refusal.permanent:
                self._refused(refusal)
            elif refusal:
                self._count("connects_refused")
            return None
        self._count("refresh_connects")
        return conn

    def _ask(self, conn: psycopg.Connection, demand: int, protocol: int) -> tuple:
        """The server's answer, and the protocol that gave it: a Share, an
        AnswerError, or the text of why there is no extension."""
        if protocol == 2:
            try:
                return self._query(conn, SHARE_SQL, (str(demand),), share_from_rows), 2
            except psycopg.Error as error:
                _rollback(conn)
                if error.sqlstate not in UNKNOWN_SETTING:
                    raise
        try:
            return self._query(conn, POOL_SHARE_SQL, (demand,), pool_share_from_rows), 1
        except psycopg.Error as error:
            _rollback(conn)
            if error.sqlstate in NO_EXTENSION + UNKNOWN_SETTING:
                return str(error).splitlines()[0], 1
            raise

    @staticmethod
    def _query(conn: psycopg.Connection, sql: str, params: tuple, check: Any) -> Any:
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(sql, params, prepare=False)
            columns = len(cur.description or ())
            rows = cur.fetchall() if cur.description else []
        conn.commit()       # the report stands, whatever the answer was
        try:
            return check(rows, columns)
        except AnswerError as error:
            return error

    def _apply(self, answer: Any, demand: int, tried2: bool, used: int) -> None:
        """Take what the server answered: a share sizes the pool; anything
        else keeps the size it has (section 9)."""
        now = time.monotonic()
        message, level = None, logging.WARNING
        with self._lock:
            self._next = now + self._jitter(90, 110)
            if tried2 and not isinstance(answer, psycopg.Error):
                # 2 answered, or the server did not know it: then 1 for a while
                self._protocol = used
                self._probed = now + PROBE_S
            if isinstance(answer, psycopg.Error):
                self._errors["share_query"] += 1
                failure = (str(answer).splitlines() or [""])[0]
                if failure != self._failure:
                    message = "connbudget: reporting and reading the share failed: " + failure
                self._failure = failure
            elif isinstance(answer, AnswerError):
                self._errors["share_invalid"] += 1
                if answer.kind != self._invalid_kind:
                    message = "connbudget: %s; ignored, the pool keeps its size" % answer
                self._invalid_kind = answer.kind
            elif isinstance(answer, str):
                # no usable extension here: a fixed size, looked at again now and then
                self._errors["no_extension"] += 1
                if self._status != "no extension":
                    message = ("connbudget: the server has no usable connbudget (%s); "
                               "the pool keeps a fixed size of %d" % (answer, self._user_max))
                self._status, self._share = "no extension", None
                self._next = now + (self._configured_ms / 1000 if self._configured_ms
                                    else PROBE_S * random.uniform(0.9, 1.1))
            elif answer.status == "other":
                if self._status != "other":
                    message = ("connbudget: the server does not govern this pool (no row in "
                               "connbudget.application_limits); a fixed size of %d"
                               % self._user_max)
                self._status, self._share = "other", None
            elif answer.status == "left":
                self._status = "left"       # the next report brings it back
            elif answer.status == "refused":
                self._errors["share_refused"] += 1
                if self._status != "refused":
                    message, level = ("connbudget: the server no longer gives this pod a share "
                                      "(%s %s); the pool keeps its size"
                                      % (answer.sqlstate, answer.reason), logging.ERROR)
                self._status = "refused"
                self._next = now + self._jitter(1000, 1100)
            else:
                self._counts["refreshes"] += 1
                self._take_share_locked(answer, demand, now)
            if not isinstance(answer, psycopg.Error):
                self._failure = None
            floor, limit = self._target_locked()
        if message:
            logger.log(level, message)
        self._resize(floor, limit)

    def _take_share_locked(self, share: Share, demand: int, now: float) -> None:
        changed = self._reported and demand != self._last_demand
        if self._share is None or share.max_size != self._share.max_size:
            logger.debug("connbudget: share of pod %s: %d", self.pod, share.max_size)
        self._share, self._status, self._invalid_kind = share, "ok", None
        self._refresh_ms = self._configured_ms or share.refresh_ms
        if changed:
            # the answer reflects the demand from before; the new one is
            # published one publish period later
            self._next = now + min(1000, max(10, self._refresh_ms // 10)) / 1000
        elif not self._reported:
            self._next = now + self._jitter(10, 100)   # pools started together drift apart
        elif share.max_size == 0:
            self._next = now + self._jitter(100, 120)
        else:
            self._next = now + self._jitter(90, 110)
        # the demand this share knows: after a change, the one before
        self._reflected = self._last_demand if changed else demand
        self._reported, self._last_demand = True, demand
        if now - self._rotated >= self._refresh_ms * 0.0009:
            self._peaks.append(self._interval_peak)
            self._interval_peak = self._in_use + self._pending
            self._rotated = now

    def _demand_locked(self) -> int:
        """The busiest moment of this interval and the five before, plus
        headroom, within the pool's own bounds (section 3)."""
        busy = max(self._interval_peak, self._in_use + self._pending, *self._peaks, 0)
        demand = busy + max(1, (busy * HEADROOM_PCT + 99) // 100)
        floor = self._share.min_size if self._share else 0
        return min(max(demand, self._user_min, floor), self._user_max)

    def _target_locked(self) -> tuple:
        """The pool's min_size and max_size now: within the share and the
        pool's own bounds, at least 1 (the pool cannot hold 0)."""
        if self._status in ("no extension", "other"):
            return self._user_min, self._user_max
        if self._share is None:
            return min(self._user_min, 1), 1
        limit = max(1, min(self._share.max_size, self._user_max))
        return min(max(self._user_min, self._share.min_size), limit), limit

    def _jitter(self, low: int, high: int) -> float:
        return self._refresh_ms * random.uniform(low, high) / 100000

    # ---- sizing ----

    def _resize(self, floor: int, limit: int) -> None:
        """Resize the pool; close idle connections beyond it at once (those
        in use are closed as they come back, in _give_back)."""
        pool = self._pool
        if pool.closed:
            return
        if (pool.min_size, pool.max_size) != (floor, limit):
            with pool._lock:
                # resize() opens new_min - old_min more; open only what the
                # pool lacks of the new minimum, never beyond the share
                pool._min_size = max(pool._min_size, min(floor, pool._nconns))
            pool.resize(floor, limit)
        surplus = []
        with pool._lock:
            while pool._nconns > pool._max_size and pool._pool:
                surplus.append(pool._pool.pop())
                pool._nconns -= 1
            pool._nconns_min = min(pool._nconns_min, len(pool._pool))
            # callers waiting: grow into a larger share, connecting for
            # them all at once (the pool by itself opens one at a time)
            waiting = sum(1 for w in pool._waiting if not (w.conn or w.error))   # not timed out
            for _ in range(min(waiting, pool._max_size - pool._nconns)):
                pool._nconns += 1
                pool.run_task(AddConnection(pool))
        for conn in surplus:
            conn.close()
        if surplus:
            with self._lock:
                self._counts["surplus_closed"] += len(surplus)

    # ---- refused connects (section 6) ----

    def _refusal_in_force(self) -> Optional[Refusal]:
        # a permanent refusal is asked again no more often than every 10
        # refresh intervals
        refusal = self._refusal
        if refusal and time.monotonic() < self._refused_at + self._refresh_ms / 100:
            return refusal
        return None

    def _connect(self, connect: Any) -> psycopg.Connection:
        """Connect; a 53300 refusal is backpressure, retried within the
        pool's timeout from the stated pace on, with exponential backoff and
        full jitter; a permanent refusal raises Refused."""
        deadline = time.monotonic() + self._pool.timeout
        tries = 0
        while True:
            refusal = self._refusal_in_force()
            if refusal:
                raise Refused(refusal)
            try:
                return connect()
            except psycopg.OperationalError as error:
                refusal = parse_refusal(str(error))
                if refusal is None:
                    raise
                if refusal.permanent:
                    self._refused(refusal)
                    raise Refused(refusal) from error
                delay = self._backpressure(refusal, tries)
                if self._closing.is_set() or time.monotonic() + delay > deadline:
                    raise
            self._closing.wait(delay)
            tries += 1

    def _refused(self, refusal: Refusal) -> None:
        with self._lock:
            self._counts["refused_permanent"] += 1
            first = self._refusal is None or self._refusal.message != refusal.message
            self._refusal, self._refused_at = refusal, time.monotonic()
        # callers waiting while the pool holds nothing would wait in vain
        pool, waiting = self._pool, []
        with pool._lock:
            if self._in_use == 0 and not pool._pool:
                waiting = list(pool._waiting)
                pool._waiting.clear()
        for caller in waiting:
            caller.fail(Refused(refusal))
        if first:
            logger.error("connbudget: the server refuses this pool's connections (%s %s); "
                         "asking again every 10 refresh intervals: %s",
                         refusal.sqlstate, refusal.reason, refusal.message.splitlines()[0])

    def _backpressure(self, refusal: Refusal, tries: int) -> float:
        """How long to wait before connecting again after a 53300."""
        with self._lock:
            self._counts["connects_refused"] += 1
            self._refusal = None
            if refusal.retry_ms and not self._configured_ms and self._share is None:
                self._refresh_ms = refusal.retry_ms     # the server's pace, before a share
            # the refusal reported one more wanted: read the answer soon
            self._next = min(self._next, time.monotonic() + self._jitter(10, 20))
            base = refusal.retry_ms or self._refresh_ms
        self._wake.set()
        # within the pod's lease, so that its claim on the budget holds
        cap = max(base, (refusal.lease_ms or 8 * base) // 2)
        ceiling = min(cap, base * 2 ** min(tries, 16))
        return random.uniform(0, ceiling) / 1000

    # ---- leaving (section 7) ----

    def _leave(self) -> None:
        with self._lock:
            protocol = self._protocol if self._share is not None else None
        if protocol is None or self._pool.closed:
            return
        try:
            conn = self._getconn(timeout=1.0)
        except (PoolTimeout, PoolClosed, Refused):
            logger.info("connbudget: no connection to hand the share back on")
            return
        try:
            with conn.cursor() as cur:
                cur.execute(LEAVE_SQL[protocol], prepare=False)
            conn.commit()
            with self._lock:
                self._status = "left"
        except psycopg.Error as error:
            _rollback(conn)
            logger.info("connbudget: handing the share back failed: %s", error)
        finally:
            self._putconn(conn)


def _rollback(conn: psycopg.Connection) -> None:
    try:
        conn.rollback()
    except psycopg.Error:
        pass


def _refusal_aware(base: type, budget: Budget) -> type:
    """The pool's connection class, connecting through budget._connect."""

    class Connection(base):  # type: ignore[misc, valid-type]
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            parent = super()
            return budget._connect(lambda: parent.connect(conninfo, **kwargs))

    Connection.__name__ = base.__name__
    Connection.__qualname__ = base.__qualname__
    return Connection
