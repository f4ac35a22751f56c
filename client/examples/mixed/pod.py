"""A pod of the mixed fleet in Python: a psycopg_pool ConnectionPool that
follows its share through the connbudget adapter (client/python).

    pod.py APP POD WORKERS LOADFILE STATUSFILE

WORKERS threads each take a connection, run a 20 ms query, give it back and
pause a little; how many of them are busy is read from LOADFILE ten times a
second.  Four times a second the pod writes "share pool_size served errors"
to STATUSFILE.  The server is the libpq environment's (PGHOST, PGPORT,
PGUSER, PGDATABASE).  SIGTERM closes the pool, which hands the share back.
"""

import os
import random
import signal
import sys
import threading
import time

from psycopg_pool import ConnectionPool

import connbudget


def read_load(path, last):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return last


def main():
    app, pod, workers, loadfile, statusfile = sys.argv[1:6]
    workers = int(workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pool = ConnectionPool("", kwargs=connbudget.connect_kwargs(app, pod=pod, autocommit=True),
                          min_size=1, max_size=workers, open=False, timeout=30)
    budget = connbudget.follow(pool)
    state = {"load": read_load(loadfile, 0), "served": 0, "errors": 0}
    lock = threading.Lock()

    def work(index):
        rnd = random.Random(index)
        while not stop.is_set():
            if index >= state["load"]:
                time.sleep(0.05)
                continue
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT pg_sleep(0.02)")
                with lock:
                    state["served"] += 1
            except Exception as error:   # counted, and shown once
                with lock:
                    state["errors"] += 1
                    if state["errors"] == 1:
                        print(f"{pod}: query failed: {error!r}", file=sys.stderr)
            time.sleep(rnd.random() * 0.01)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    tick = 0
    while not stop.wait(0.1):
        state["load"] = read_load(loadfile, state["load"])
        tick += 1
        if tick % 2 == 0:
            stats = budget.stats()
            with open(statusfile + ".tmp", "w") as f:
                f.write(f"{stats['share']} {stats['pool_max']} "
                        f"{state['served']} {state['errors']}\n")
            os.replace(statusfile + ".tmp", statusfile)
    for thread in threads:
        thread.join()
    budget.close()


if __name__ == "__main__":
    main()
