"""The clients of the mixed fleet's PgBouncer pod: plain connections
through PgBouncer, whose pool connbudget-pgbouncer sizes.

    bouncer_load.py CONNINFO WORKERS LOADFILE STATUSFILE METRICS_URL

WORKERS threads each hold a client connection to PgBouncer and run 20 ms
queries; how many of them are busy is read from LOADFILE ten times a
second.  Four times a second it writes "share pool_size served errors" to
STATUSFILE, the share and the pool size as the controller's metrics
(METRICS_URL) say.  SIGTERM stops it.
"""

import os
import random
import signal
import sys
import threading
import time
import urllib.request

import psycopg


def read_load(path, last):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return last


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
    workers = int(workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state = {"load": read_load(loadfile, 0), "served": 0, "errors": 0}
    lock = threading.Lock()

    def work(index):
        rnd = random.Random(index)
        conn = None
        while not stop.is_set():
            if index >= state["load"]:
                time.sleep(0.05)
                continue
            try:
                if conn is None or conn.closed:
                    # transaction pooling: no prepared statements
                    conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
                conn.execute("SELECT pg_sleep(0.02)")
                with lock:
                    state["served"] += 1
            except psycopg.Error as error:
                with lock:
                    state["errors"] += 1
                    if state["errors"] == 1:
                        print(f"pgbouncer client: query failed: {error!r}", file=sys.stderr)
                time.sleep(0.1)
            time.sleep(rnd.random() * 0.01)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    tick = 0
    while not stop.wait(0.1):
        state["load"] = read_load(loadfile, state["load"])
        tick += 1
        if tick % 2 == 0:
            m = metrics(url)
            share = m.get("connbudget_pgbouncer_share", "-1").replace("NaN", "-1")
            size = m.get("connbudget_pgbouncer_pool_size", "-1")
            with open(statusfile + ".tmp", "w") as f:
                f.write(f"{share} {size} {state['served']} {state['errors']}\n")
            os.replace(statusfile + ".tmp", statusfile)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
