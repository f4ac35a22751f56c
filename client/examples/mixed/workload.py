"""The load every Python process of the mixed fleet runs (pod.py,
bouncer_load.py).

WORKERS threads each run one 20 ms query at a time through query(session),
session being the thread's own dict, then pause a little; how many of them
are busy is read from LOADFILE ten times a second.  Four times a second
"share pool_size served errors" goes to STATUSFILE, the share and the pool
size as status() returns them.  SIGTERM stops it; then ended(session) for
each thread, if given.
"""

import os
import random
import signal
import sys
import threading
import time


def read_load(path, last):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return last


def run(label, workers, loadfile, statusfile, query, status, ended=None):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state = {"load": read_load(loadfile, 0), "served": 0, "errors": 0}
    lock = threading.Lock()

    def work(index):
        rnd = random.Random(index)
        session = {}
        while not stop.is_set():
            if index >= state["load"]:
                time.sleep(0.05)
                continue
            try:
                query(session)
                with lock:
                    state["served"] += 1
            except Exception as error:   # counted, and shown once
                with lock:
                    state["errors"] += 1
                    if state["errors"] == 1:
                        print(f"{label}: query failed: {error!r}", file=sys.stderr)
                time.sleep(0.1)
            time.sleep(rnd.random() * 0.01)
        if ended:
            ended(session)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    tick = 0
    while not stop.wait(0.1):
        state["load"] = read_load(loadfile, state["load"])
        tick += 1
        if tick % 2 == 0:
            share, size = status()
            with open(statusfile + ".tmp", "w") as f:
                f.write(f"{share} {size} {state['served']} {state['errors']}\n")
            os.replace(statusfile + ".tmp", statusfile)
    for thread in threads:
        thread.join()
