#!/usr/bin/env python3
"""manifests.py -- read the manifests of deploy/kubernetes for
test/kubernetes/kubernetes.sh (python3-yaml; no Kubernetes needed).

  manifests.py check DIR            the structural checks, one TAP line each
                                    ("ok - ..." / "not ok - ..."; the caller
                                    numbers them)
  manifests.py env FILE DEPLOYMENT CONTAINER POD_NAME SECRET/KEY=VALUE...
                                    the container's environment as the
                                    kubelet would give it, as shell exports:
                                    fieldRef metadata.name is POD_NAME, each
                                    secretKeyRef the VALUE given for it,
                                    $(VAR) expanded as Kubernetes does
  manifests.py settings FILE        the Cluster's postgresql.conf settings,
                                    one name=value a line
  manifests.py initdb FILE          the Cluster's initdb database and owner
  manifests.py sql FILE             its postInitApplicationSQL, NUL-separated
  manifests.py data FILE NAME KEY   a ConfigMap's key, byte for byte
  manifests.py queries FILE NAME KEY DATABASE
                                    run each query of a ConfigMap's
                                    postgres_exporter queries as CloudNativePG
                                    does (search_path pinned, role
                                    cnpg_metrics_exporter) with psql, and
                                    check each returns the columns its
                                    metrics name
"""
import os
import re
import shlex
import subprocess
import sys

import yaml


def docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def find(path, kind, name=None):
    for d in docs(path):
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise SystemExit(f"{path}: no {kind} {name or ''}")


def expand(value, env):
    """$(VAR) as the kubelet expands it: only variables defined before, $$ is $."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def container_env(container, pod_name, secrets):
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(str(e["value"]), env)
            continue
        src = e["valueFrom"]
        if "fieldRef" in src:
            field = src["fieldRef"]["fieldPath"]
            if field != "metadata.name":
                raise SystemExit(f"fieldRef {field} not handled")
            env[e["name"]] = pod_name
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            env[e["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
        else:
            raise SystemExit(f"valueFrom {list(src)} not handled")
    return env


def pod_spec(d):
    return d["spec"]["template"]["spec"]


class Checks:
    def __init__(self):
        self.failed = 0

    def __call__(self, cond, what):
        print(("ok - " if cond else "not ok - ") + what)
        if not cond:
            self.failed += 1
        return cond


def check_containers(ok, fname, d):
    spec = pod_spec(d)
    names = [c.get("name") for c in spec.get("containers", [])]
    ok(names and all(names) and len(set(names)) == len(names),
       f"{fname}: {d['kind']} {d['metadata']['name']}: containers have distinct names")
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        where = f"{fname}: container {c['name']}"
        ok(isinstance(c.get("image"), str) and ":" in c["image"],
           f"{where} has an image with a tag")
        env = c.get("env", [])
        good = all(isinstance(e.get("name"), str) and (("value" in e) != ("valueFrom" in e))
                   and ("value" not in e or isinstance(e["value"], str)) for e in env)
        ok(good, f"{where}: each env entry has a name and one string value or valueFrom")
        defined = set()
        order = True
        for e in env:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", e.get("value", "")):
                order = order and ref in defined
            defined.add(e["name"])
        ok(order, f"{where}: every $(VAR) names a variable defined before it")
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        ok(mounts <= volumes, f"{where}: every volumeMount names a volume of the pod")


def cmd_check(directory):
    ok = Checks()
    files = sorted(f for f in os.listdir(directory) if f.endswith(".yaml"))
    expected = {
        "app-deployment.yaml": ["Deployment"],
        "cluster.yaml": ["Cluster"],
        "monitoring-configmap.yaml": ["ConfigMap"],
        "pgbouncer.yaml": ["ConfigMap", "Deployment", "Service"],
        "pooler.yaml": ["Pooler"],
    }
    ok(files == sorted(expected), f"the manifests are {', '.join(sorted(expected))}")
    api = {"Deployment": "apps/v1", "ConfigMap": "v1", "Service": "v1",
           "Cluster": "postgresql.cnpg.io/v1", "Pooler": "postgresql.cnpg.io/v1"}
    parsed = {}
    for fname in files:
        path = os.path.join(directory, fname)
        try:
            ds = docs(path)
        except yaml.YAMLError as e:
            ok(False, f"{fname} parses: {e}")
            continue
        ok(True, f"{fname} parses as YAML")
        parsed[fname] = ds
        ok([d.get("kind") for d in ds] == expected.get(fname),
           f"{fname} holds {', '.join(expected.get(fname, ['?']))}")
        for d in ds:
            name = (d.get("metadata") or {}).get("name")
            ok(d.get("apiVersion") == api.get(d.get("kind")) and isinstance(name, str)
               and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) is not None,
               f"{fname}: {d.get('kind')} {name}: apiVersion {d.get('apiVersion')}, "
               "a DNS-1123 name")
            if d.get("kind") == "Deployment":
                sel = d["spec"]["selector"]["matchLabels"]
                labels = d["spec"]["template"]["metadata"]["labels"]
                ok(all(labels.get(k) == v for k, v in sel.items()),
                   f"{fname}: Deployment {name}: its selector matches its pods' labels")
                check_containers(ok, fname, d)
            if d.get("kind") == "ConfigMap":
                ok(all(isinstance(v, str) for v in d.get("data", {}).values()),
                   f"{fname}: ConfigMap {name}: every value is a string")

    # the application's identity
    dep = find(os.path.join(directory, "app-deployment.yaml"), "Deployment", "api")
    c = pod_spec(dep)["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    field_ref = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
    ok(field_ref.get("fieldPath") == "metadata.name",
       "app-deployment.yaml: POD_NAME comes from the downward API (metadata.name)")
    ok(env.get("PGOPTIONS", {}).get("value") == "-c connbudget.pod=$(POD_NAME)",
       "app-deployment.yaml: PGOPTIONS gives -c connbudget.pod=$(POD_NAME)")
    ok(bool(env.get("PGAPPNAME", {}).get("value")),
       "app-deployment.yaml: PGAPPNAME names the application")

    # the Cluster
    cl = find(os.path.join(directory, "cluster.yaml"), "Cluster", "db")
    pg = cl["spec"]["postgresql"]
    params = pg.get("parameters", {})
    ok("connbudget" in pg.get("shared_preload_libraries", []),
       "cluster.yaml: connbudget is in spec.postgresql.shared_preload_libraries")
    ok("shared_preload_libraries" not in params,
       "cluster.yaml: shared_preload_libraries is not among the parameters (the operator owns it)")
    ok(all(isinstance(v, str) for v in params.values()),
       "cluster.yaml: every parameter is a string (the CRD's map of strings)")
    ok(re.match(r"^\d+([._-]|$)", cl["spec"]["imageName"].rsplit(":", 1)[1]) is not None,
       "cluster.yaml: the image tag starts with the PostgreSQL major version")
    init = cl["spec"]["bootstrap"]["initdb"]
    ok(params.get("connbudget.database") == init.get("database"),
       "cluster.yaml: connbudget.database is the initdb database (postInitApplicationSQL's)")
    ok(any(s.strip().upper().startswith("CREATE EXTENSION CONNBUDGET")
           for s in init.get("postInitApplicationSQL", [])),
       "cluster.yaml: postInitApplicationSQL creates the extension")
    refs = cl["spec"]["monitoring"]["customQueriesConfigMap"]
    cm = find(os.path.join(directory, "monitoring-configmap.yaml"), "ConfigMap")
    ok(any(r["name"] == cm["metadata"]["name"] and r["key"] in cm["data"] for r in refs),
       "cluster.yaml: customQueriesConfigMap names the monitoring ConfigMap and its key")
    ok("cnpg.io/reload" in cm["metadata"].get("labels", {}),
       "monitoring-configmap.yaml: labelled cnpg.io/reload")
    exporter_yml = os.path.join(directory, "..", "..", "monitoring", "postgres_exporter.yml")
    with open(exporter_yml, encoding="utf-8") as f:
        queries = f.read()
    ok(any(cm["data"][r["key"]] == queries for r in refs if r["name"] == cm["metadata"]["name"]),
       "monitoring-configmap.yaml: the queries are monitoring/postgres_exporter.yml, byte for byte")

    # the Pooler
    pl = find(os.path.join(directory, "pooler.yaml"), "Pooler")
    ok(pl["spec"]["cluster"]["name"] == cl["metadata"]["name"]
       and pl["metadata"]["name"] != cl["metadata"]["name"],
       "pooler.yaml: the Pooler points at the Cluster and is not named like it")
    ok(all(isinstance(v, str) for v in pl["spec"]["pgbouncer"].get("parameters", {}).values()),
       "pooler.yaml: every PgBouncer parameter is a string")

    # PgBouncer and its controller: one identity
    pb = os.path.join(directory, "pgbouncer.yaml")
    ini = find(pb, "ConfigMap")["data"]["pgbouncer.ini"]
    entry = re.search(r"^\s*(\w+)\s*=\s*(host=.*)$", ini.split("[pgbouncer]")[0], re.M)
    words = dict(w.split("=", 1) for w in entry.group(2).split())
    pdep = find(pb, "Deployment")
    ctl = [c for c in pod_spec(pdep)["containers"] if c["name"] == "connbudget"][0]
    cenv = {e["name"]: e.get("value") for e in ctl["env"]}
    server = dict(w.split("=", 1) for w in cenv["CONNBUDGET_SERVER"].split())
    ok(all(server.get(k) == words.get(k)
           for k in ("host", "port", "dbname", "user", "application_name"))
       and words.get("application_name"),
       "pgbouncer.yaml: the controller reaches PostgreSQL as the [databases] entry does"
       " (host, port, database, role, application_name)")
    ok("connbudget.pod" not in cenv["CONNBUDGET_SERVER"] and "PGOPTIONS" not in cenv,
       "pgbouncer.yaml: the controller names no pod"
       " (the pod is the address it shares with PgBouncer)")
    sock = re.search(r"^unix_socket_dir\s*=\s*(\S+)", ini, re.M).group(1)
    admin = dict(w.split("=", 1) for w in cenv["CONNBUDGET_ADMIN"].split())
    mounts = {c["name"]: {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
              for c in pod_spec(pdep)["containers"]}
    ok(admin["host"] == sock
       and mounts["pgbouncer"].get(sock) == mounts["connbudget"].get(sock) is not None,
       "pgbouncer.yaml: the controller reaches the console through PgBouncer's socket directory,"
       " a volume both mount")
    ok(admin["port"] == re.search(r"^listen_port\s*=\s*(\d+)", ini, re.M).group(1),
       "pgbouncer.yaml: the console's port is PgBouncer's listen_port")
    return 1 if ok.failed else 0


def cmd_env(path, deployment, container, pod_name, *subs):
    secrets = dict(s.split("=", 1) for s in subs)
    d = find(path, "Deployment", deployment)
    c = [c for c in pod_spec(d)["containers"] if c["name"] == container][0]
    for k, v in container_env(c, pod_name, secrets).items():
        print(f"export {k}={shlex.quote(v)}")


def cmd_settings(path):
    pg = find(path, "Cluster")["spec"]["postgresql"]
    print("shared_preload_libraries=" + ",".join(pg.get("shared_preload_libraries", [])))
    for k, v in pg.get("parameters", {}).items():
        print(f"{k}={v}")


def cmd_initdb(path):
    init = find(path, "Cluster")["spec"]["bootstrap"]["initdb"]
    print(init["database"], init["owner"])


def cmd_sql(path):
    init = find(path, "Cluster")["spec"]["bootstrap"]["initdb"]
    sys.stdout.write("".join(s + "\0" for s in init.get("postInitApplicationSQL", [])))


def cmd_data(path, name, key):
    sys.stdout.write(find(path, "ConfigMap", name)["data"][key])


def cmd_queries(path, name, key, database):
    queries = yaml.safe_load(find(path, "ConfigMap", name)["data"][key])
    failed = 0
    for qname, q in queries.items():
        sql = ("SET ROLE cnpg_metrics_exporter; SET search_path = pg_catalog, public, pg_temp;\n"
               + q["query"])
        r = subprocess.run(["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-d", database,
                            "-c", sql], capture_output=True, text=True)
        wanted = [next(iter(m)) for m in q["metrics"]]
        rows = r.stdout.splitlines()
        cols = rows[0].split(",") if rows else []
        good = r.returncode == 0 and cols == wanted and len(rows) > 1
        print(("ok - " if good else "not ok - ")
              + f"query {qname} runs in {database} as cnpg_metrics_exporter"
              + f" and returns its {len(wanted)} columns"
              + ("" if good else f" (got {cols}, {len(rows) - 1} rows, {r.stderr.strip()})"))
        failed += not good
    return 1 if failed else 0


if __name__ == "__main__":
    commands = {"check": cmd_check, "env": cmd_env, "settings": cmd_settings, "initdb": cmd_initdb,
                "sql": cmd_sql, "data": cmd_data, "queries": cmd_queries}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    sys.exit(commands[sys.argv[1]](*sys.argv[2:]) or 0)
