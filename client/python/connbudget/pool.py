"""Makes a psycopg_pool.ConnectionPool follow its connbudget share.

The protocol is docs/protocol.md of connbudget; client/connbudget_pool.h is
its reference implementation, and this module follows it step by step.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import random
import re
import secrets
import socket
import threading
import time
from typing import Any, Dict, Optional, Tuple, Union

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from .share import AnswerError, Refusal, Share, parse_refusal, share_from_rows

logger = logging.getLogger("connbudget")

# The protocol's query (section 3), schema-qualified so that no function of
# the same name earlier on a search_path answers instead.
SHARE_SQL = ("SELECT pg_catalog.set_config('connbudget.demand', %s, false), "
             "pg_catalog.current_setting('connbudget.share')")
NO_PROTOCOL_2 = ("42704", "42602")      # connbudget.share unknown: no connbudget 1.2 here
PEAK_WINDOW = 5             # refresh intervals of busy moments behind the demand
HEADROOM_PCT = 25
DEFAULT_REFRESH_MS = 1000   # until the server says
PROBE_S = 30.0              # how often a server without connbudget 1.2 is asked again
COUNTERS = ("refreshes", "refreshes_skipped", "refresh_connects", "surplus_closed",
            "connects_refused", "refused_permanent", "requests_refused")


class IdentityError(ValueError):
    """An application name or pod id the server would refuse."""


class Refused(psycopg.OperationalError):
    """The server refused a connect for good (SQLSTATE 42501 or 53400): the
    role may not claim the application, the pod belongs to another role, or
    the role or the server has too many pods.  It will not change by itself,
    so it is not retried at the backpressure pace."""

    def __init__(self, refusal: Refusal):
        super().__init__("connbudget refused the connection (%s %s): %s"
                         % (refusal.sqlstate, refusal.reason, refusal.message))
        self.sqlstate, self.reason = refusal.sqlstate, refusal.reason


def check_id(what: str, value: Any) -> str:
    """value if it is 1 to 63 printable ASCII characters, else IdentityError."""
    if not (isinstance(value, str) and re.fullmatch(r"[ -~]{1,63}", value)):
        raise IdentityError("%s must be 1 to 63 printable ASCII characters, not %r"
                            % (what, value))
    return value


def connect_kwargs(application_name: str, *, pod: Optional[str] = None,
                   pod_env: Optional[str] = None, options: Optional[str] = None,
                   **kwargs: Any) -> Dict[str, Any]:
    """Connection keyword arguments that tell the server who connects: the
    application and the pod (pod; else the environment variable pod_env
    names; else the host name, which is the pod's name in Kubernetes).  Pass
    them as ConnectionPool(kwargs=...); options (the user's own "-c ..."
    settings) and every other keyword are kept.  Raises IdentityError
    before any connect if the server would refuse them."""
    check_id("application_name", application_name)
    if pod is None and pod_env:
        pod = check_id("the environment variable " + pod_env, os.environ.get(pod_env))
    pod = check_id("pod", socket.gethostname() if pod is None else pod)
    # the server splits options at spaces; a backslash keeps the next character
    pod = pod.replace("\\", "\\\\").replace(" ", "\\ ")
    options = ((options or "") + " -c connbudget.pod=" + pod).strip()
    return dict(kwargs, application_name=application_name, options=options)


def follow(pool: ConnectionPool) -> "Budget":
    """Make pool follow its share; returns its Budget.  See Budget."""
    return Budget(pool)


class Budget:
    """Sizes a psycopg_pool.ConnectionPool from its pod's connbudget share.

    Create the pool with open=False and connect_kwargs(); Budget gives it a
    pool session of its own and opens it, with one connection until the
    server has answered, then every refresh interval reports what the pool
    could use and resizes it within its share and its own min_size and
    max_size.  Surplus connections are closed: idle ones at once, those in
    use when they come back.  Connects refused with 53300 are retried within
    the pool's timeout; permanent refusals (42501, 53400) fail requests with
    Refused.  close() (or the pool's own close(), or leaving a with block)
    hands the share back, then closes the pool.

    It wraps the pool's getconn, putconn, close, get_stats and pop_stats and
    its connection_class.  Threads do not survive fork(): in a pre-fork
    server, create the pool and its Budget in each worker, after the fork.
    """

    def __init__(self, pool: ConnectionPool):
        if not isinstance(pool, ConnectionPool) or pool._opened:
            raise ValueError("connbudget follows a ConnectionPool created with open=False")
        self._pool = pool
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._user_min, self._user_max = pool.min_size, pool.max_size
        self._refresh_ms = DEFAULT_REFRESH_MS
        self._next = 0.0                        # when to refresh
        self._share: Optional[Share] = None     # the last good share
        self._status = "starting"
        self._said: Optional[str] = None        # the last trouble logged, said once
        # callers' connections, callers waiting, and their busiest moment
        # the callers holding a connection and those waiting for one, one
        # item each: a deque's append and pop are atomic, so callers never
        # wait for each other here
        self._held: collections.deque = collections.deque()
        self._waiting: collections.deque = collections.deque()
        self._interval_peak = 0
        self._peaks: collections.deque = collections.deque(maxlen=PEAK_WINDOW)
        self._rotated = time.monotonic()
        self._last_demand: Optional[int] = None     # the last reported
        self._reflected: Optional[int] = None       # the demand the share knows
        self._refusal: Optional[Refusal] = None     # the last permanent refusal
        self._refused_at = 0.0
        self._handoff: Optional[_Handoff] = None     # a refresh waiting for a connection
        self._counts: collections.Counter = collections.Counter()   # and "errors_<kind>"
        self._popped: collections.Counter = collections.Counter()   # at the last pop_stats

        # A pool session of its own (the last -c of a name wins), even when
        # the kwargs were made before a fork
        self.pool_session = secrets.token_hex(4)
        options = pool.kwargs.get("options", "")
        pool.kwargs = dict(pool.kwargs, options=(
            options + " -c connbudget.pool_session=" + self.pool_session).strip())
        pods = re.findall(r"connbudget\.pod=((?:\\.|\S)+)", options)
        self.pod = re.sub(r"\\(.)", r"\1", pods[-1]) if pods else None
        self.application_name = pool.kwargs.get("application_name")
        # one connection until the server has answered
        pool._min_size = pool._nconns = pool._nconns_min = min(self._user_min, 1)
        pool._max_size = 1

        self._base_class = pool.connection_class
        self._getconn, self._putconn, self._pool_close = pool.getconn, pool.putconn, pool.close
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
        refusal = self._refusal and self._refusal_in_force()
        if refusal and not self._held and not self._pool._pool:
            self._count("requests_refused")
            raise Refused(refusal)
        self._waiting.append(None)
        busy = len(self._held) + len(self._waiting)
        if busy > self._interval_peak:      # a sample: a lost race loses little
            self._interval_peak = busy
        try:
            conn = self._getconn(timeout)
        except Refused:
            self._count("requests_refused")
            raise
        finally:
            self._waiting.pop()
        self._held.append(None)
        return conn

    def putconn(self, conn: psycopg.Connection) -> None:
        """The pool's putconn(); a connection beyond the pool's size is
        closed instead of kept."""
        self._give_back(conn)
        if self._held:
            self._held.pop()

    def _give_back(self, conn: psycopg.Connection) -> None:
        pool, surplus = self._pool, False
        # read without the pool's lock first: a surplus and a refresh
        # waiting for a connection are rare
        if pool._nconns > pool._max_size and getattr(conn, "_pool", None) is pool:
            with pool._lock:
                surplus = pool._nconns > pool._max_size and not pool.closed
                if surplus:
                    pool._nconns -= 1
        elif (self._handoff is not None and getattr(conn, "_pool", None) is pool
              and conn.info.transaction_status == TransactionStatus.IDLE):
            with pool._lock:
                slot, self._handoff = self._handoff, None
                if slot is not None:
                    slot.conn = conn        # the refresh gives it back after
                    slot.given.set()
                    return
        if not surplus:
            return self._putconn(conn)
        conn._pool = None
        conn.close()
        self._count("surplus_closed")

    def close(self, timeout: float = 5.0) -> None:
        """Hand the share back (section 7), then close the pool."""
        if not self._closing.is_set():
            self._closing.set()
            self._wake.set()
            self._thread.join(timeout)
            self._leave()
        self._pool_close(timeout)

    # ---- what the adapter tells ----

    def stats(self) -> Dict[str, Any]:
        """The adapter's own numbers: its share and what it did."""
        with self._lock:
            share = self._share
            return dict(
                application_name=self.application_name, pod=self.pod,
                pool_session=self.pool_session, status=self._status,
                share=getattr(share, "max_size", None),
                min_size=getattr(share, "min_size", None), budget=getattr(share, "budget", None),
                refresh_ms=self._refresh_ms, pool_min=self._pool.min_size,
                pool_max=self._pool.max_size, demand=self._last_demand,
                in_use=len(self._held), waiting=len(self._waiting),
                **{name: self._counts[name] for name in COUNTERS},
                errors={key[7:]: n for key, n in self._counts.items() if key[:7] == "errors_"})

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
                if self._last_demand is not None:
                    result["connbudget_demand"] = self._last_demand
                for key, value in (self._counts - self._popped).items():
                    result["connbudget_" + key] = value
                if pop:
                    self._popped = self._counts.copy()
            return result
        return stats

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    # ---- refreshing (sections 2 to 5) ----

    def _run(self) -> None:
        while not self._closing.is_set():
            if self._wake.wait(max(0.0, self._next - time.monotonic())):
                self._wake.clear()      # woken: the time to refresh has moved
                continue
            try:
                self._refresh()
            except Exception:       # never let the thread die: log, go on
                logger.exception("connbudget: refreshing the share failed")
                self._next = time.monotonic() + self._jitter(90, 110)

    def _refresh(self) -> None:
        with self._lock:
            demand = self._demand_locked()
        own = False
        try:
            # one of the pool's own connections, waiting at most an interval
            conn = self._borrow(min(max(self._refresh_ms / 1000, 0.1), 5.0))
        except PoolTimeout:
            # saturated: every connection is held longer than that
            conn, own = self._connect_for_refresh(), True
        except (Refused, PoolClosed):
            conn = None
        if conn is None:
            self._count("refreshes_skipped")
            self._next = time.monotonic() + self._jitter(90, 110)
            return
        release = conn.close if own else lambda: self._give_back(conn)
        if self._closing.is_set():      # closing: no report after the leave
            return release()
        broken = False
        try:
            answer = self._ask(conn, demand)
        except psycopg.Error as error:
            answer, broken = error, conn.closed
        finally:
            release()
        self._apply(answer, demand)
        if broken:
            # a restarted server: the pool's idle connections are gone too;
            # ask again as soon as there are new ones
            self._pool.check()
            self._next = time.monotonic() + self._refresh_ms / 10000

    def _borrow(self, timeout: float) -> psycopg.Connection:
        """A connection of the pool's to report on: an idle one, or else the
        next one a caller gives back, before any caller waiting for one
        takes it (a saturated pool would otherwise put its report behind
        every waiting caller's query, and learn that its share fell that
        much later).  PoolTimeout if none came back within timeout."""
        pool = self._pool
        slot = _Handoff()
        with pool._lock:
            if pool._pool:
                conn = pool._pool.popleft()
                pool._nconns_min = min(pool._nconns_min, len(pool._pool))
                conn._pool = pool
                return conn
            if pool.closed or not self._held:
                slot = None
            else:
                self._handoff = slot
        if slot is None:
            # nothing to wait for: the pool's own getconn opens one
            return self._getconn(timeout=timeout)
        slot.given.wait(timeout)
        with pool._lock:
            self._handoff = None
            conn = slot.conn
        if conn is None:
            raise PoolTimeout("no connection came back within %.1f s" % timeout)
        return conn

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
            if not (self._waiting and self._refusal_in_force() is None
                    and pool._nconns < self._user_max
                    and (self._status == "starting" or self._status == "ok"
                         and 0 < self._share.max_size == self._reflected)):
                return None
        kwargs = dict(pool.kwargs, connect_timeout=max(1, min(round(pool.timeout), 10)))
        try:
            conn = self._base_class.connect(pool.conninfo, **kwargs)
        except psycopg.OperationalError as error:     # refused (a report) or unreachable
            refusal = parse_refusal(str(error))
            if refusal and refusal.permanent:
                self._refused(refusal)
            return None
        self._count("refresh_connects")
        return conn

    def _ask(self, conn: psycopg.Connection, demand: int) -> Union[Share, AnswerError]:
        """Report the demand and read the share: a Share or an AnswerError."""
        try:
            with conn.cursor(row_factory=tuple_row) as cur:
                rows = cur.execute(SHARE_SQL, (str(demand),), prepare=False).fetchall()
            conn.commit()       # the report stands, whatever the answer was
        except psycopg.Error:
            if not conn.closed:
                conn.rollback()
            raise
        try:
            return share_from_rows(rows)
        except AnswerError as error:
            return error

    def _apply(self, answer: Any, demand: int) -> None:
        """Take what the server answered: a share sizes the pool; anything
        else keeps the size it has (section 9).  Each trouble is logged once,
        until another comes or a share is taken."""
        now = time.monotonic()
        trouble, message, level = None, None, logging.WARNING
        with self._lock:
            self._next = now + self._jitter(90, 110)
            if isinstance(answer, psycopg.Error) and answer.sqlstate in NO_PROTOCOL_2:
                self._counts["errors_no_extension"] += 1
                self._status, self._share, trouble = "no extension", None, "no extension"
                message = "connbudget: the server has no connbudget 1.2 (%s); a fixed size of %d"
                message %= (str(answer).splitlines()[0], self._user_max)
                self._next = now + PROBE_S * random.uniform(0.9, 1.1)
            elif isinstance(answer, psycopg.Error):
                self._counts["errors_share_query"] += 1
                trouble = (str(answer).splitlines() or [""])[0]
                message = "connbudget: reporting and reading the share failed: " + trouble
            elif isinstance(answer, AnswerError):
                self._counts["errors_share_invalid"] += 1
                trouble = "invalid " + answer.kind
                message = "connbudget: %s; ignored, the pool keeps its size" % answer
            elif answer.status == "other":
                self._status, self._share, trouble = "other", None, "other"
                message = ("connbudget: the server does not govern this pool (status=other); "
                           "a fixed size of %d" % self._user_max)
            elif answer.status == "refused":
                self._counts["errors_share_refused"] += 1
                self._status, trouble, level = "refused", "refused", logging.ERROR
                message = "connbudget: the server no longer gives this pod a share (%s %s)" % (
                    answer.sqlstate, answer.reason)
                self._next = now + self._jitter(1000, 1100)
            elif answer.status == "left":
                self._status = "left"       # the next report brings it back
            else:
                self._counts["refreshes"] += 1
                self._take_share_locked(answer, demand, now)
            if trouble == self._said:
                message = None
            self._said = trouble
            floor, limit = self._target_locked()
        if message:
            logger.log(level, message)
        self._resize(floor, limit)

    def _take_share_locked(self, share: Share, demand: int, now: float) -> None:
        first = self._last_demand is None
        changed = not first and demand != self._last_demand
        self._share, self._status, self._refresh_ms = share, "ok", share.refresh_ms
        self._next = now + self._jitter(90, 110)
        if changed:
            # the answer reflects the demand from before; the new one is
            # published one publish period later
            self._next = now + min(1000, max(10, self._refresh_ms // 10)) / 1000
        elif first:
            self._next = now + self._jitter(10, 100)   # pools started together drift apart
        elif share.max_size == 0:
            self._next = now + self._jitter(100, 120)
        # the demand this share knows: after a change, the one before
        self._reflected = self._last_demand if changed else demand
        self._last_demand = demand
        if now - self._rotated >= self._refresh_ms * 0.0009:
            self._peaks.append(self._interval_peak)
            self._interval_peak = len(self._held) + len(self._waiting)
            self._rotated = now

    def _demand_locked(self) -> int:
        """The busiest moment of this interval and the five before, plus
        headroom, within the pool's own bounds (section 3)."""
        busy = max(self._interval_peak, len(self._held) + len(self._waiting), *self._peaks, 0)
        demand = busy + max(1, (busy * HEADROOM_PCT + 99) // 100)
        floor = self._share.min_size if self._share else 0
        return min(max(demand, self._user_min, floor), self._user_max)

    def _target_locked(self) -> Tuple[int, int]:
        """The pool's min_size and max_size now: within the share and the
        pool's own bounds, at least 1 (the pool cannot hold 0)."""
        if self._status in ("no extension", "other"):
            return self._user_min, self._user_max
        if self._share is None:
            return min(self._user_min, 1), 1
        limit = max(1, min(self._share.max_size, self._user_max))
        return min(max(self._user_min, self._share.min_size), limit), limit

    def _jitter(self, low: int, high: int) -> float:
        """From low% to high% of the refresh interval, in seconds."""
        return self._refresh_ms * random.uniform(low, high) / 100000

    # ---- sizing ----

    def _resize(self, floor: int, limit: int) -> None:
        """Resize the pool; close idle connections beyond it at once (those
        in use are closed as they come back, in _give_back)."""
        pool = self._pool
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
        for conn in surplus:
            conn.close()
        with self._lock:
            self._counts["surplus_closed"] += len(surplus)

    # ---- refused connects (section 6) ----

    def _refusal_in_force(self) -> Optional[Refusal]:
        """The permanent refusal, asked again no more often than every 10
        refresh intervals."""
        held = time.monotonic() < self._refused_at + self._refresh_ms / 100
        return self._refusal if held else None

    def _connect(self, connect: Any) -> psycopg.Connection:
        """Connect; a 53300 refusal is backpressure, retried within the
        pool's timeout from the stated pace on, with exponential backoff and
        full jitter; a permanent refusal raises Refused."""
        deadline = time.monotonic() + self._pool.timeout
        for tries in itertools.count():
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

    def _refused(self, refusal: Refusal) -> None:
        with self._lock:
            self._counts["refused_permanent"] += 1
            first = self._refusal is None or self._refusal.message != refusal.message
            self._refusal, self._refused_at = refusal, time.monotonic()
        # callers waiting while the pool holds nothing would wait in vain
        pool, waiting = self._pool, []
        with pool._lock:
            if not self._held and not pool._pool:
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
            # the refusal reported one more wanted: read the answer soon
            self._next = min(self._next, time.monotonic() + self._jitter(10, 20))
            base = refusal.retry_ms or self._refresh_ms
        self._wake.set()
        # within the pod's lease, so that its claim on the budget holds
        cap = max(base, (refusal.lease_ms or 8 * base) // 2)
        return random.uniform(0, min(cap, base * 2 ** min(tries, 16))) / 1000

    # ---- leaving (section 7) ----

    def _leave(self) -> None:
        if self._share is None or self._pool.closed:
            return
        try:
            with self._pool.connection(timeout=1.0) as conn:
                conn.execute("SET connbudget.demand = 'leave'", prepare=False)
            self._status = "left"
        except psycopg.Error as error:      # no connection to leave on, or it failed
            logger.info("connbudget: the share was not handed back: %s", error)


class _Handoff:
    """A connection given back by a caller, straight to the refresh."""

    def __init__(self) -> None:
        self.conn: Optional[psycopg.Connection] = None
        self.given = threading.Event()


def _refusal_aware(base: type, budget: Budget) -> type:
    """The pool's connection class, connecting through budget._connect."""

    class Connection(base):  # type: ignore[misc, valid-type]
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            parent = super()
            return budget._connect(lambda: parent.connect(conninfo, **kwargs))

    return Connection
