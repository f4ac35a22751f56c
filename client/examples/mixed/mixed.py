"""The mixed fleet: pods of every kind of connbudget client sharing one
server's budget while they join, leave and die, checked on the server.

    mixed.py --bin DIR --out DIR [--scenario test|demo] [--kinds c,go,...]

Each pod is a process of its own: the C pool (client/examples/pod.c), a
PgBouncer with connbudget-pgbouncer and its clients (bouncer_load.py), and
the adapters' pools: psycopg_pool (pod.py), database/sql (pod.go, built
into DIR/mixed-go), node-postgres (pod.js) and HikariCP (Pod.java, built
into DIR/java).  The server is the libpq environment's (a superuser);
the pods log in as the role CB_MIXED_ROLE (default "app").

Ten times a second it samples the server (connbudget.budget,
connbudget.pods, pg_stat_activity) and checks:

  - the governed connections never exceed the budget, nor do the pods'
    role's backends in pg_stat_activity;
  - a pod above its share (connbudget.pods: connections > share) is back
    within it no later than 2 refresh intervals after its share last fell;
  - a killed pod's share comes back to the others after pod_ttl, a pod
    that leaves hands its share back at once;
  - every pod served queries, and none failed (but those of killed pods).

It prints TAP, writes OUT/mixed.csv (t pod kind application share
connections demand), OUT/events.csv and OUT/budget.csv for the chart, and
exits 0 only if every check held.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

# (seconds, action, pod, kind, application, busy workers, label); "settle"
# holds the clock until every pod started holds connections on the server
FIRST_PODS = [
    (0, "start", "c-api", "c", "api", 10, None),
    (0, "start", "py-api", "python", "api", 10, None),
    (0, "start", "pgbouncer", "pgbouncer", "api", 10, None),
    (0, "start", "go-worker", "go", "worker", 16, None),
    (0, "start", "node-worker", "node", "worker", 16, None),
    (0, "settle", None, None, None, 0, None),
]
SCENARIOS = {
    # about 45 s: what test/adapters/mixed.sh runs
    "test": FIRST_PODS + [
        (9, "start", "java-worker", "java", "worker", 16, "java-worker joins"),
        (9, "settle", None, None, None, 0, None),
        (17, "kill", "node-worker", None, None, 0, "node-worker killed"),
        (25, "stop", "c-api", None, None, 0, "c-api leaves"),
        (31, "start", "c-worker", "c", "worker", 16, "c-worker joins"),
        (37, "load", "go-worker", None, None, 3, "go-worker idles"),
        (44, "end", None, None, None, 0, None),
    ],
    # about 75 s: what `bash client/examples/demo.sh --mixed` shows
    "demo": FIRST_PODS + [
        (10, "start", "java-worker", "java", "worker", 16, "java-worker joins"),
        (10, "settle", None, None, None, 0, None),
        (20, "kill", "node-worker", None, None, 0, "node-worker killed"),
        (30, "stop", "c-api", None, None, 0, "c-api leaves"),
        (38, "start", "py-worker", "python", "worker", 16, "py-worker joins"),
        (46, "load", "go-worker", None, None, 3, "go-worker idles"),
        (54, "start", "node-api", "node", "api", 10, "node-api joins"),
        (62, "kill", "java-worker", None, None, 0, "java-worker killed"),
        (68, "load", "go-worker", None, None, 16, "go-worker busy"),
        (76, "end", None, None, None, 0, None),
    ],
}
WORKERS = 24            # threads (or loops) per pod; the load says how many are busy


class Tap:
    def __init__(self):
        self.n = self.failed = 0

    def ok(self, cond, name, detail=None):
        self.n += 1
        print(f"{'ok' if cond else 'not ok'} {self.n} - {name}")
        if not cond:
            self.failed += 1
            if detail:
                for line in str(detail).splitlines():
                    print(f"#   {line}")
        sys.stdout.flush()
        return cond

    def diag(self, text):
        for line in str(text).splitlines():
            print(f"# {line}")
        sys.stdout.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pod:
    def __init__(self, fleet, name, kind, app, load):
        self.fleet, self.name, self.kind, self.app = fleet, name, kind, app
        self.loadfile = os.path.join(fleet.work, name + ".load")
        self.statusfile = os.path.join(fleet.work, name + ".status")
        self.log = open(os.path.join(fleet.out, "logs", name + ".log"), "w")
        # (label, Popen): the pod's processes, the last one stopped first
        self.procs = []
        self.alive = True
        self.killed = self.stopped = False
        self.status = None
        self.set_load(load)

    def set_load(self, load):
        with open(self.loadfile + ".tmp", "w") as f:
            f.write(f"{load}\n")
        os.replace(self.loadfile + ".tmp", self.loadfile)

    def spawn(self, label, argv, env=None):
        proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env or self.fleet.env)
        self.procs.append((label, proc))
        return proc

    def start(self):
        f = self.fleet
        args = [self.app, self.name, str(WORKERS), self.loadfile, self.statusfile]
        if self.kind == "c":
            self.spawn("pod", [os.path.join(f.bin, "pod")] + args + [f"user={f.role}"])
        elif self.kind == "python":
            env = dict(f.env, PYTHONPATH=os.path.join(SRC, "client", "python"))
            self.spawn("pod", ["/usr/bin/python3", os.path.join(HERE, "pod.py")] + args, env)
        elif self.kind == "go":
            self.spawn("pod", [os.path.join(f.bin, "mixed-go")] + args)
        elif self.kind == "node":
            env = dict(f.env, CB_NODE_ADAPTER=os.path.join(SRC, "client", "node"))
            self.spawn("pod", ["node", os.path.join(HERE, "pod.js")] + args, env)
        elif self.kind == "java":
            java = os.path.join(f.bin, "java")
            cp = ":".join([java] + [f"/usr/share/java/{j}.jar" for j in
                                    ("HikariCP", "postgresql", "slf4j-api", "slf4j-jdk14")
                                    if os.path.exists(f"/usr/share/java/{j}.jar")])
            log_config = os.path.join(java, "logging.properties")
            self.spawn("pod", ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx128m",
                               "-Djava.util.logging.config.file=" + log_config,
                               "-cp", cp, "Pod"] + args)
        elif self.kind == "pgbouncer":
            self.start_pgbouncer()
        else:
            raise ValueError(self.kind)

    def start_pgbouncer(self):
        f = self.fleet
        d = os.path.join(f.work, self.name)
        os.makedirs(d, exist_ok=True)
        port, metrics = free_port(), free_port()
        server = (f"host=127.0.0.1 port={f.env['PGPORT']} dbname={f.env['PGDATABASE']} "
                  f"user={f.role} application_name={self.app}")
        with open(os.path.join(d, "userlist.txt"), "w") as u:
            u.write(f'"{f.role}" ""\n"pgbouncer" ""\n')
        with open(os.path.join(d, "pgbouncer.ini"), "w") as ini:
            ini.write(f"""[databases]
appdb = {server}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {d}
auth_type = trust
auth_file = {d}/userlist.txt
admin_users = pgbouncer
pool_mode = transaction
max_client_conn = 200
default_pool_size = 1
server_login_retry = 1
logfile = {d}/pgbouncer.log
""")
        self.spawn("pgbouncer", ["pgbouncer", os.path.join(d, "pgbouncer.ini")])
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(d, f".s.PGSQL.{port}")):
            if time.monotonic() > deadline:
                raise RuntimeError("PgBouncer did not start: see " + self.log.name)
            time.sleep(0.05)
        admin_dsn = f"host={d} port={port} dbname=pgbouncer user=pgbouncer"
        self.spawn("controller", [os.path.join(f.bin, "connbudget-pgbouncer"), "--server", server,
                                  "--admin", admin_dsn,
                                  "--metrics-listen", f"127.0.0.1:{metrics}"])
        self.spawn("clients", ["/usr/bin/python3", os.path.join(HERE, "bouncer_load.py"),
                               f"host=127.0.0.1 port={port} dbname=appdb user={f.role}",
                               str(WORKERS), self.loadfile, self.statusfile,
                               f"http://127.0.0.1:{metrics}/metrics"])

    def read_status(self):
        """(share, pool size, queries served, queries failed), as the pod says"""
        def number(word):
            try:
                return int(float(word))
            except ValueError:      # None, NaN: no share yet
                return -1
        try:
            with open(self.statusfile) as fh:
                words = fh.read().split()
            if self.kind == "c":
                # pod.c: share max_size total in_use waiters acquired p99_us refused timeouts errors
                words = [words[0], words[2], words[5], words[9]]
            share, size, served, errors = words
            self.status = (number(share), number(size), int(served), int(errors))
        except (OSError, ValueError, IndexError):
            pass
        return self.status

    def kill(self):
        # every process of the pod dies at once, as when its node is lost
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for _, proc in self.procs:
            proc.wait()
        self.alive, self.killed = False, True

    def stop(self):
        """SIGTERM: the clients first, then the controller (it leaves), then
        PgBouncer (SIGINT: it waits for its clients); reap() waits for it"""
        self.alive, self.stopped = False, True
        self.stopper = threading.Thread(target=self._stop_in_order)
        self.stopper.start()

    def _stop_in_order(self, timeout=20):
        self.exit_problems = []
        for label, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if label == "pgbouncer" else signal.SIGTERM)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
                self.exit_problems.append(f"{label} did not stop within {timeout} s")
            # the JVM exits with 143 after its shutdown hooks on SIGTERM
            if code not in (0, -signal.SIGTERM, 143 if self.kind == "java" else 0):
                self.exit_problems.append(f"{label} exited with {code}")

    def reap(self):
        if self.killed:
            return []
        self.stopper.join()
        self.log.flush()
        self.read_status()
        return self.exit_problems


class Fleet:
    def __init__(self, args):
        self.bin, self.out = os.path.abspath(args.bin), os.path.abspath(args.out)
        self.work = os.path.join(self.out, "work")
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        self.role = os.environ.get("CB_MIXED_ROLE", "app")
        self.env = dict(os.environ, PGUSER=self.role)
        self.env.pop("PGOPTIONS", None)
        self.env.pop("PGAPPNAME", None)
        self.pods = {}


POOLS = {"c": "C pool", "pgbouncer": "PgBouncer + connbudget-pgbouncer", "python": "psycopg_pool",
         "go": "database/sql", "node": "node-postgres", "java": "HikariCP"}
COLORS = ["#9400d3", "#009e73", "#56b4e9", "#e69f00", "#d4b000", "#0072b2", "#e51e10", "#c05080"]


def write_chart(fleet, samples, events_file):
    """OUT/mixed.gp: a panel per pod (its share black and dashed, its
    connections solid, as connbudget.pods shows them), then the whole server's governed
    connections against the budget"""
    out = fleet.out
    names = [n for n in fleet.pods]
    top = max([2] + [max(v[1], v[2]) for s in samples for v in s[4].values()]) + 2
    end = samples[-1][0] if samples else 1
    budget = samples[-1][1] if samples else 0
    for name in names:
        with open(os.path.join(fleet.work, name + ".dat"), "w") as f:
            for t, _, _, _, pods in samples:
                if name in pods:
                    f.write(f"{t:.2f} {pods[name][2]} {pods[name][1]}\n")
                else:
                    f.write("\n")     # a gap while the pod is not on the server
    arrows = []
    with open(events_file) as f:
        for line in f:
            t, _, label = line.strip().partition(" ")
            arrows.append((float(t), label))
    cols = 2
    rows = (len(names) + cols - 1) // cols
    height = 190 * rows + 300
    g = [f'set terminal pngcairo size 1200,{height} font "sans,9" noenhanced',
         f'set output "{out}/mixed.png"',
         "set multiplot",
         f'set label 99 "mixed fleet on one budget of {budget}: each pod\'s share '
         '(black, dashed) and its connections (solid), as connbudget.pods shows them '
         'every 100 ms" at screen 0.5, screen 0.99 center font ",11"',
         "set grid", "set key off", f"set xrange [0:{end:.1f}]", f"set yrange [0:{top}]",
         "set lmargin 7", "set rmargin 2", "set tmargin 1.5", "set bmargin 1.5"]
    for i, (t, label) in enumerate(arrows):
        g.append(f'set arrow {i + 1} from {t:.2f}, graph 0 to {t:.2f}, graph 1 '
                 'nohead lc rgb "#999999" dt 3')
    panel_h = 190 / height
    bottom_h = 270 / height
    for i, name in enumerate(names):
        pod = fleet.pods[name]
        row, col = divmod(i, cols)
        g.append("set size 0.5, %.4f" % panel_h)
        g.append("set origin %.2f, %.4f" % (col * 0.5, 1 - 30 / height - (row + 1) * panel_h))
        g.append(f'set title "{name}: {POOLS[pod.kind]}, application {pod.app}" offset 0,-0.6')
        color = COLORS[i % len(COLORS)]
        g.append(f'plot "{fleet.work}/{name}.dat" using 1:3 with steps lw 2 lc rgb "{color}", '
                 '"" using 1:2 with steps lw 1.2 dt 2 lc rgb "#222222"')
    g.append("set size 1, %.4f" % bottom_h)
    g.append("set origin 0, 0")
    for i, (t, label) in enumerate(arrows):
        g.append(f"set label {i + 1} {label} at {t:.2f}, graph 0.97 rotate by -90 font \",8\" "
                 'tc rgb "#555555"')
    g += ['set title "the whole server: governed connections (black) and the budget (red)" '
          'offset 0,-0.6',
          f"set yrange [0:{budget + 5}]", 'set xlabel "seconds"', "set bmargin 3",
          f'plot "{out}/budget.csv" using 1:2 every ::1 with steps lw 2 lc rgb "#cc0000", '
          f'"" using 1:3 every ::1 with steps lw 2 lc rgb "#333333"',
          "unset multiplot"]
    with open(os.path.join(out, "mixed.gp"), "w") as f:
        f.write("\n".join(g) + "\n")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scenario", default="test", choices=sorted(SCENARIOS))
    p.add_argument("--kinds", default="c,pgbouncer,python,go,node,java",
                   help="the kinds of pods to run; the scenario's others are left out")
    p.add_argument("--live", action="store_true", help="print the fleet once a second")
    return p.parse_args()


SAMPLE = """
SELECT extract(epoch FROM clock_timestamp()), b.budget, b.governed,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND usename = %s),
       coalesce((SELECT json_agg(json_build_array(application_name, pod, connections, share,
                                                  demand))
                   FROM connbudget.pods), '[]')
  FROM connbudget.budget b
"""


def main():
    args = parse_args()
    tap = Tap()
    fleet = Fleet(args)
    kinds = set(args.kinds.split(","))
    scenario = [e for e in SCENARIOS[args.scenario]
                if e[1] != "start" or e[3] in kinds]
    names = {e[2] for e in scenario if e[1] == "start"}
    scenario = [e for e in scenario if e[2] is None or e[2] in names]
    scenario = [e for i, e in enumerate(scenario)      # one settle after a run of starts
                if e[1] != "settle" or (i > 0 and scenario[i - 1][1] == "start")]

    admin = psycopg.connect("application_name=mixed-fleet", autocommit=True)
    refresh_ms = int(admin.execute(
        "SELECT setting FROM pg_settings WHERE name = 'connbudget.refresh_interval'").fetchone()[0])
    ttl_ms = int(admin.execute(
        "SELECT setting FROM pg_settings WHERE name = 'connbudget.pod_ttl'").fetchone()[0])
    refresh = refresh_ms / 1000.0
    ttl = ttl_ms / 1000.0
    tap.diag(f"refresh interval {refresh_ms} ms, pod_ttl {ttl_ms} ms, "
             f"kinds: {', '.join(sorted(kinds))}")
    for row in admin.execute("SELECT application_name, min_connections, max_connections, weight "
                             "FROM connbudget.application_limits ORDER BY 1"):
        cap = row[2] if row[2] is not None else '-'
        tap.diag(f"application {row[0]}: min {row[1]}, max {cap}, weight {row[3]}")

    csv = open(os.path.join(fleet.out, "mixed.csv"), "w")
    csv.write("t pod kind application share connections demand\n")
    budget_csv = open(os.path.join(fleet.out, "budget.csv"), "w")
    budget_csv.write("t budget governed backends\n")
    events_csv = open(os.path.join(fleet.out, "events.csv"), "w")

    samples = []        # (t, budget, governed, backends, {pod: (app, conns, share, demand)})
    events = []         # (t, action, pod)
    label_of = {}       # pod id on the server -> pod name
    start_errors = []
    t0 = time.monotonic()
    next_event = 0
    next_print = 1.0
    ended = False
    shift = 0.0         # how long the scenario waited for pods to settle
    settling = None     # since when it waits
    try:
        while not ended:
            t = time.monotonic() - t0
            while next_event < len(scenario) and scenario[next_event][0] + shift <= t:
                at, action, name, kind, app, load, label = scenario[next_event]
                if action == "settle":
                    # wait until every pod started holds connections on the
                    # server: a busy machine may start a JVM slowly
                    live = [p.name for p in fleet.pods.values() if p.alive]
                    seen = samples[-1][4] if samples else {}
                    if settling is None:
                        settling = t
                    if all(seen.get(n, (0, 0))[1] > 0 for n in live) or t - settling > 60:
                        if t - settling > 60:
                            idle = [n for n in live if seen.get(n, (0, 0))[1] == 0]
                            start_errors.append("pods still without connections after 60 s: " +
                                                ", ".join(idle))
                        if t - settling > 0.5:
                            tap.diag(f"{t:5.1f}s  waited {t - settling:.1f} s "
                                     "for the pods to connect")
                        shift += t - settling
                        settling = None
                        next_event += 1
                        continue
                    break
                next_event += 1
                if action == "end":
                    ended = True
                    break
                if label:
                    events_csv.write(f'{t:.2f} "{label}"\n')
                events.append((t, action, name))
                if action == "start":
                    pod = Pod(fleet, name, kind, app, load)
                    fleet.pods[name] = pod
                    try:
                        pod.start()
                    except Exception as error:      # a pod that cannot start is a failure
                        start_errors.append(f"{name}: {error}")
                        pod.kill()
                    # PgBouncer is named by its address: 127.0.0.1, the role's
                    label_of[name if kind != "pgbouncer" else "127.0.0.1"] = name
                    tap.diag(f"{t:5.1f}s  {name} starts ({kind}, application {app}, "
                             f"{load} busy workers)")
                elif action == "kill":
                    fleet.pods[name].kill()
                    tap.diag(f"{t:5.1f}s  {name} killed (SIGKILL)")
                elif action == "stop":
                    fleet.pods[name].stop()
                    tap.diag(f"{t:5.1f}s  {name} leaves (SIGTERM)")
                elif action == "load":
                    fleet.pods[name].set_load(load)
                    tap.diag(f"{t:5.1f}s  {name}: {load} busy workers")
            if ended:
                break

            row = admin.execute(SAMPLE, (fleet.role,)).fetchone()
            t = time.monotonic() - t0
            pods = {}
            for app, pod_id, conns, share, demand in (row[4] if isinstance(row[4], list)
                                                      else json.loads(row[4])):
                pods[label_of.get(pod_id, pod_id or "?")] = (app, conns, share, demand)
            samples.append((t, row[1], row[2], row[3], pods))
            budget_csv.write(f"{t:.2f} {row[1]} {row[2]} {row[3]}\n")
            for name, (app, conns, share, demand) in sorted(pods.items()):
                kind = fleet.pods[name].kind if name in fleet.pods else "-"
                csv.write(f"{t:.2f} {name} {kind} {app} {share} {conns} "
                          f"{demand if demand is not None else -1}\n")
            if args.live and t >= next_print:
                next_print += 1
                print(f"\n t={t:4.1f}s  budget {row[1]}  governed {row[2]}  "
                      f"backends of {fleet.role} {row[3]}")
                print(f"   {'pod':<12} {'kind':<9} {'app':<7} {'share':>5} {'conns':>5} "
                      f"{'demand':>6} {'served':>7} {'errors':>6}")
                for name in sorted(pods):
                    app, conns, share, demand = pods[name]
                    pod = fleet.pods.get(name)
                    st = pod.read_status() if pod else None
                    print(f"   {name:<12} {pod.kind if pod else '-':<9} {app:<7} {share:>5} "
                          f"{conns:>5} {demand if demand is not None else '-':>6} "
                          f"{st[2] if st else '-':>7} {st[3] if st else '-':>6}")
                sys.stdout.flush()
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t0 - t)))
    finally:
        end_t = time.monotonic() - t0
        stop_problems = []
        for pod in fleet.pods.values():
            if pod.alive:
                pod.stop()
        for pod in fleet.pods.values():
            stop_problems.extend(f"{pod.name}: {p}" for p in pod.reap())
        events_csv.close()
        csv.close()
        budget_csv.close()

    write_chart(fleet, samples, os.path.join(fleet.out, "events.csv"))

    # ---- the checks ----
    tap.ok(not start_errors and not stop_problems, "every pod started and stopped cleanly",
           "\n".join(start_errors + stop_problems))
    over_budget = [s for s in samples if s[2] > s[1] or s[3] > s[1]]
    most = max((max(s[2], s[3]) for s in samples), default=-1)
    budget = samples[-1][1] if samples else -1
    tap.ok(samples and not over_budget,
           f"the server never saw more than the budget ({len(samples)} samples, "
           f"at most {most} of {budget})",
           "\n".join(f"t={s[0]:.1f}s budget {s[1]} governed {s[2]} backends {s[3]}"
                     for s in over_budget[:10]))

    # a pod's life on the server: from its start to its kill or stop
    life = {}
    for t, action, name in events:
        if action == "start":
            life[name] = [t, end_t]
        elif action in ("kill", "stop"):
            life[name][1] = t
    limit = 2 * refresh
    worst = {}          # pod -> (lag, t) of its worst sample above its share
    episodes = {}       # pod -> list of (start, end) above its share
    last_fall = {}      # pod -> when its share last fell (or it appeared)
    prev_share = {}
    violations = []
    for t, _, _, _, pods in samples:
        for name, (app, conns, share, demand) in pods.items():
            if name not in life or not (life[name][0] <= t <= life[name][1]):
                continue
            if name not in prev_share or share < prev_share[name]:
                last_fall[name] = t
            prev_share[name] = share
            if conns > share:
                lag = t - last_fall[name]
                if lag > worst.get(name, (-1, 0))[0]:
                    worst[name] = (lag, t)
                if lag > limit:
                    violations.append(f"{name} at t={t:.1f}s: {conns} connections, share {share}, "
                                      f"{lag:.2f} s after its share last fell")
                eps = episodes.setdefault(name, [])
                if eps and eps[-1][1] is None:
                    pass
                else:
                    eps.append([t, None])
            else:
                eps = episodes.get(name)
                if eps and eps[-1][1] is None:
                    eps[-1][1] = t
    tap.ok(not violations,
           f"every pod was within its share no later than 2 refresh intervals ({limit:.1f} s) "
           "after its share fell", "\n".join(violations[:15]))
    for name in sorted(life):
        eps = episodes.get(name, [])
        lengths = [((e if e is not None else life[name][1]) - s) for s, e in eps]
        w = worst.get(name)
        tap.diag(f"{name:<12} above its share {len(eps)} times, "
                 f"longest {max(lengths, default=0):.2f} s; "
                 f"latest {w[0] / refresh if w else 0:.2f} refresh intervals after a fall")

    # every pod took part: it had a share and connections on the server
    for name in sorted(life):
        seen = [p[name] for _, _, _, _, p in samples if name in p]
        tap.ok(seen and max(s[2] for s in seen) > 0 and max(s[1] for s in seen) > 0,
               f"{name} ({fleet.pods[name].kind}) held a share and connections on the server",
               f"{len(seen)} samples; see {fleet.out}/logs/{name}.log")

    # killed pods: their share comes back after pod_ttl; left pods: at once
    for t_event, action, name in events:
        if action not in ("kill", "stop"):
            continue
        app = fleet.pods[name].app
        gone = next((t for t, _, _, _, p in samples if t > t_event and name not in p), None)
        if gone is None:
            tap.ok(False, f"{name}'s share came back", "its pod stayed in connbudget.pods")
            continue

        def others(at):
            s = min(samples, key=lambda s: abs(s[0] - at))
            return sum(v[2] for k, v in s[4].items() if k != name and v[0] == app)
        before = others(t_event - 0.05)
        after = max((sum(v[2] for k, v in p.items() if k != name and v[0] == app)
                     for t, _, _, _, p in samples if gone <= t <= gone + limit), default=before)
        if action == "kill":
            # the lease runs pod_ttl from the pod's last report, which a busy
            # pool may have made a few intervals before it was killed; a
            # share that came back at once would be a leave's (under 1 s)
            lo, hi = ttl - 3 * refresh, ttl + limit
            tap.ok(lo <= gone - t_event <= hi and after > before,
                   f"{name} killed: its share came back to the other {app} pods "
                   f"{gone - t_event:.2f} s later (pod_ttl {ttl:.1f} s); "
                   f"their shares {before} -> {after}",
                   f"expected between {lo:.2f} and {hi:.2f} s, and more for the others")
        else:
            tap.ok(gone - t_event <= limit and after > before,
                   f"{name} left: its share came back to the other {app} pods "
                   f"{gone - t_event:.2f} s later; their shares {before} -> {after}",
                   f"expected within {limit:.2f} s, and more for the others")

    # no query failed, every pod served
    for name, pod in sorted(fleet.pods.items()):
        st = pod.status or pod.read_status()
        if pod.killed:
            tap.ok(st is not None and st[2] > 0,
                   f"{name} served {st[2] if st else 0} queries before it was killed")
            continue
        tap.ok(st is not None and st[2] > 0 and st[3] == 0,
               f"{name} served {st[2] if st else 0} queries, {st[3] if st else '?'} failed",
               f"see {fleet.out}/logs/{name}.log")

    print(f"1..{tap.n}")
    print(f"mixed: {tap.n - tap.failed} passed, {tap.failed} failed")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
