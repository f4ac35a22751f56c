"""A pod of the mixed fleet in Python: a psycopg_pool ConnectionPool that
follows its share through the connbudget adapter (client/python).

    pod.py APP POD WORKERS LOADFILE STATUSFILE

WORKERS threads each take a connection, run a 20 ms query, give it back and
pause a little; how many of them are busy is read from LOADFILE ten times a
second.  Four times a second the pod writes "share pool_size served errors"
to STATUSFILE.  The server is the libpq environment's (PGHOST, PGPORT,
PGUSER, PGDATABASE).  SIGTERM closes the pool, which hands the share back.
"""

import sys

from psycopg_pool import ConnectionPool

import connbudget
import workload


def main():
    app, pod, workers, loadfile, statusfile = sys.argv[1:6]
    pool = ConnectionPool("", kwargs=connbudget.connect_kwargs(app, pod=pod, autocommit=True),
                          min_size=1, max_size=int(workers), open=False, timeout=30)
    budget = connbudget.follow(pool)

    def query(session):
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.02)")

    def status():
        stats = budget.stats()
        return stats["share"], stats["pool_max"]

    workload.run(pod, int(workers), loadfile, statusfile, query, status)
    budget.close()


if __name__ == "__main__":
    main()
