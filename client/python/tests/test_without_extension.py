"""A server without connbudget (CONNBUDGET_TEST_PLAIN, the conninfo of a
superuser there): the pool keeps a fixed size, and a hostile
connbudget.pool_share() someone created is an error, never a size."""

import logging
import os

import psycopg
import pytest

from conftest import wait_until

PLAIN = os.environ.get("CONNBUDGET_TEST_PLAIN")
pytestmark = pytest.mark.skipif(not PLAIN, reason="needs CONNBUDGET_TEST_PLAIN")


@pytest.fixture
def hostile_database():
    """A database whose connbudget.pool_share() is whatever answer() says."""
    with psycopg.connect(PLAIN, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS connbudget_hostile")
        conn.execute("CREATE DATABASE connbudget_hostile")
    with psycopg.connect(PLAIN, dbname="connbudget_hostile", autocommit=True) as conn:
        conn.execute("CREATE SCHEMA connbudget")

        def answer(columns, rows):
            conn.execute("DROP FUNCTION IF EXISTS connbudget.pool_share(integer)")
            conn.execute("CREATE FUNCTION connbudget.pool_share(demand integer) "
                         "RETURNS TABLE (%s) LANGUAGE sql AS $$ %s $$" % (columns, rows))
        yield answer


def records(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "connbudget"]


def test_hostile_pool_share_is_an_error_never_a_size(hostile_database, budgets, workers,
                                                     caplog):
    caplog.set_level(logging.WARNING, logger="connbudget")
    integers = "max_size int, min_size int, budget int, refresh_ms int"
    hostile_database(integers, "SELECT 99999999, 0, 10, 100")
    budget = budgets("hostile", "a", conninfo=PLAIN + " dbname=connbudget_hostile",
                     refresh_ms=50, max_size=5)
    workers(budget._pool, 4)
    wait_until(lambda: budget.stats()["errors"].get("share_invalid", 0) >= 5, 5)
    stats = budget.stats()
    # no share: the one connection it starts with, and one line in the log
    assert (stats["status"], stats["share"], stats["pool_max"]) == ("starting", None, 1)
    assert stats["protocol"] is None
    assert len([m for m in records(caplog) if "out of range" in m]) == 1

    for columns, rows, what in [
            ("max_size text, min_size text, budget text, refresh_ms text",
             "SELECT '5', '0', '10', '100'", 'max_size "5", not an integer'),
            (integers, "SELECT 5, 0, 10, 100 UNION ALL SELECT 5, 0, 10, 100", "2 rows"),
            ("max_size numeric, min_size int, budget int, refresh_ms int",
             "SELECT 5.5, 0, 10, 100", "Decimal"),
            (integers, "SELECT NULL::int, 0, 10, 100", "NULL"),
            (integers, "SELECT 5, 6, 10, 100", "min_size 6 above max_size 5")]:
        errors = budget.stats()["errors"]["share_invalid"]
        hostile_database(columns, rows)
        wait_until(lambda: budget.stats()["errors"]["share_invalid"] >= errors + 3, 5)
        assert budget.stats()["pool_max"] == 1
        assert len([m for m in records(caplog) if what in m]) == 1

    # an answer that is one is taken
    hostile_database(integers, "SELECT 3, 1, 10, 100")
    wait_until(lambda: budget.stats()["share"] == 3, 5)
    assert (budget.stats()["protocol"], budget._pool.min_size, budget._pool.max_size) == (1, 1, 3)


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
    assert len([m for m in records(caplog) if "no usable connbudget" in m]) == 1
    assert busy.errors == []
