"""A server without connbudget (CONNBUDGET_TEST_PLAIN, the conninfo of a
superuser there): the pool keeps a fixed size; and there, where
connbudget.share is a setting like any other, a hostile share is an error,
never a size."""

import logging
import os

import psycopg
import pytest
from psycopg import sql

from conftest import wait_until

PLAIN = os.environ.get("CONNBUDGET_TEST_PLAIN")
pytestmark = pytest.mark.skipif(not PLAIN, reason="needs CONNBUDGET_TEST_PLAIN")


@pytest.fixture
def hostile_database():
    """A database whose sessions start with connbudget.share set to what
    answer() says."""
    with psycopg.connect(PLAIN, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS connbudget_hostile")
        conn.execute("CREATE DATABASE connbudget_hostile")

        def answer(text):
            conn.execute(sql.SQL("ALTER DATABASE connbudget_hostile SET connbudget.share = {}")
                         .format(sql.Literal(text)))
        yield answer


def records(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "connbudget"]


def test_a_hostile_share_is_an_error_never_a_size(hostile_database, budgets, workers, caplog):
    caplog.set_level(logging.WARNING, logger="connbudget")
    conninfo = PLAIN + " dbname=connbudget_hostile"
    followed = []
    for text, said in [
            ("protocol=2 status=ok max_size=99999999 min_size=0 budget=99999999 "
             "refresh_ms=100", "max_size '99999999' out of range"),
            ("status=ok max_size=5 min_size=6 budget=10 refresh_ms=100", "not min_size <="),
            ("status=ok max_size=\uff15 min_size=0 budget=10 refresh_ms=100",
             "max_size '\\uff15' not an integer"),
            ("status=ok max_size=5 min_size=0 budget=10 refresh_ms=100 max_size=9",
             "max_size twice"),
            ("status=ok max_size=5 min_size=0 refresh_ms=100", "a share needs max_size")]:
        hostile_database(text)
        budget = budgets("hostile", "p%d" % len(followed), conninfo=conninfo, max_size=5)
        busy = workers(budget._pool, 4)
        followed.append((budget, busy, said))
        # its one connection has started with this answer
        wait_until(lambda: budget.stats()["errors"].get("share_invalid"), 5)
    for budget, busy, said in followed:
        wait_until(lambda: budget.stats()["errors"]["share_invalid"] >= 3, 10)
        stats = budget.stats()
        # no share: the one connection it starts with, and one line in the log
        assert (stats["status"], stats["share"], stats["pool_max"]) == ("starting", None, 1)
        assert len([m for m in records(caplog) if said in m]) == 1, records(caplog)
        assert busy.errors == []

    # an answer that is one is taken
    hostile_database("protocol=2 status=ok max_size=3 min_size=2 budget=10 refresh_ms=100")
    budget = budgets("hostile", "good", conninfo=conninfo, max_size=5)
    wait_until(lambda: budget.stats()["share"] == 3, 5)
    assert (budget.stats()["status"], budget._pool.min_size, budget._pool.max_size) == (
        "ok", 2, 3)


def test_without_the_extension_a_fixed_size(budgets, workers, caplog):
    caplog.set_level(logging.WARNING, logger="connbudget")
    budget = budgets("plain", "a", conninfo=PLAIN, max_size=5)
    busy = workers(budget._pool, 8)
    with psycopg.connect(PLAIN, autocommit=True) as admin:
        def held():
            return admin.execute("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'plain'").fetchone()[0]
        wait_until(lambda: held() == 5, 5)
        for _ in range(50):
            assert held() <= 5
    stats = budget.stats()
    assert (stats["status"], stats["share"], stats["pool_max"]) == ("no extension", None, 5)
    assert stats["errors"] == {"no_extension": 1}      # looked at again only every 30 s
    assert len([m for m in records(caplog) if "no connbudget 1.2" in m]) == 1
    assert busy.errors == []
