"""A pre-fork server in miniature, for test_pool.py.

    prefork_app.py APPLICATION POD WORKERS

The master computes the connection settings once, before it forks, as an
application configured at import time would (gunicorn with preload_app);
each worker creates its pool and its Budget after the fork, as in
gunicorn's post_fork hook, and keeps the pool busy with six threads.

The master reads its standard input: for each line "stats" every worker
prints its Budget's stats as one line of JSON; at the end of the input
every worker closes its pool (handing its share back), prints them once
more and exits.  The master exits non-zero if a worker failed.
"""

import json
import os
import signal
import sys
import threading
import traceback

from psycopg_pool import ConnectionPool

import connbudget

THREADS = 6
SIGNALS = {signal.SIGUSR1, signal.SIGTERM}


def serve(settings):
    pool = ConnectionPool("", kwargs=settings, min_size=1, max_size=10, open=False, timeout=20)
    with connbudget.follow(pool) as budget:
        stop, errors = threading.Event(), []

        def work():
            while not stop.is_set():
                try:
                    with pool.connection() as conn:
                        conn.execute("SELECT pg_sleep(0.01)")
                except Exception as error:
                    errors.append(repr(error))

        threads = [threading.Thread(target=work) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        while signal.sigwait(SIGNALS) == signal.SIGUSR1:
            say(budget, errors)
        stop.set()
        for thread in threads:
            thread.join()
    say(budget, errors)         # closed: its status says whether it left


def say(budget, errors):
    # one write of one line (atomic on a pipe): the workers' lines do not mix
    line = json.dumps(dict(budget.stats(), pid=os.getpid(), request_errors=errors[:3])) + "\n"
    os.write(1, line.encode())


def main():
    app, pod, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = connbudget.connect_kwargs(app, pod=pod)
    # blocked from before the fork, so that a worker and every thread it
    # starts inherit the mask, and the signals wait for its sigwait()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                serve(settings)
                code = 0
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        children.append(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    for line in sys.stdin:
        if line.strip() == "stats":
            for pid in children:
                os.kill(pid, signal.SIGUSR1)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
