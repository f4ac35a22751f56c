"""The clients of the mixed fleet's PgBouncer pod: plain connections
through PgBouncer, whose pool connbudget-pgbouncer sizes.

    bouncer_load.py CONNINFO WORKERS LOADFILE STATUSFILE METRICS_URL

WORKERS threads each hold a client connection to PgBouncer and run 20 ms
queries; how many of them are busy is read from LOADFILE ten times a
second.  Four times a second it writes "share pool_size served errors" to
STATUSFILE, the share and the pool size as the controller's metrics
(METRICS_URL) say.  SIGTERM stops it.
"""

import sys
import urllib.request

import psycopg

import workload


def metrics(url):
    values = {}
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("connbudget_pgbouncer_"):
                    name, _, value = line.partition(" ")
                    values[name] = value
    except OSError:
        pass
    return values


def main():
    conninfo, workers, loadfile, statusfile, url = sys.argv[1:6]

    def query(session):
        conn = session.get("conn")
        if conn is None or conn.closed:
            # transaction pooling: no prepared statements
            conn = session["conn"] = psycopg.connect(conninfo, autocommit=True,
                                                     prepare_threshold=None)
        conn.execute("SELECT pg_sleep(0.02)")

    def ended(session):
        if session.get("conn") is not None:
            session["conn"].close()

    def status():
        m = metrics(url)
        return (m.get("connbudget_pgbouncer_share", "-1").replace("NaN", "-1"),
                m.get("connbudget_pgbouncer_pool_size", "-1"))

    workload.run("pgbouncer client", int(workers), loadfile, statusfile, query, status, ended)


if __name__ == "__main__":
    main()
