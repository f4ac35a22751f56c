#!/usr/bin/python3
"""Every panel of monitoring/grafana-dashboard.json against a real Prometheus.

    panels.py PROMETHEUS_URL DASHBOARD FIRST_TEST_NUMBER

Evaluates each panel's PromQL through Prometheus' HTTP API, as Grafana
would with the variables at their defaults ($application: all), and checks
that it returns series with plausible values for the fleet dashboard.sh
runs: a budget of 50, application "api" capped at 3 and refused, "web" a
pod with a pool serving its own metrics.  Every panel must have a check
here, so a new panel, or a renamed metric, fails until it is looked at.
Prints TAP lines numbered from FIRST_TEST_NUMBER; exits 1 if any failed.
"""
import json
import math
import sys
import urllib.parse
import urllib.request

url, path, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = first - 1
failures = 0


def ok(passed, description, diag=None):
    global n, failures
    n += 1
    print(("ok" if passed else "not ok") + " %d - %s" % (n, description))
    if not passed:
        failures += 1
        if diag:
            for line in str(diag).splitlines()[:20]:
                print("# " + line)


def query(expr):
    expr = (expr.replace("$__rate_interval", "30s").replace("$__interval", "1s")
            .replace("$application", ".*"))
    with urllib.request.urlopen(url + "/api/v1/query?" +
                                urllib.parse.urlencode({"query": expr}), timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success" or body["data"]["resultType"] != "vector":
        raise ValueError("%s: %s" % (expr, body))
    return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]


def series(samples, **labels):
    return [v for m, v in samples if all(m.get(k) == w for k, w in labels.items())]


# What each panel must show, per target (refId A, B, ...): a function of the
# samples that is true when they are plausible, and what it means.
checks = {
    "Budget": {"A": (lambda s: series(s) == [50], "the budget, 50")},
    "Budget in use": {"A": (lambda s: len(s) == 1 and 0 < s[0][1] <= 1,
                            "a ratio above 0 and at most 1")},
    "Live pods": {"A": (lambda s: series(s) and series(s)[0] >= 3, "at least the 3 pods")},
    "Budget and its use": {
        "A": (lambda s: series(s) == [50], "budget 50"),
        "B": (lambda s: series(s) and 4 <= series(s)[0] <= 50, "governed between 4 and 50"),
        "C": (lambda s: series(s) and 0 <= series(s)[0] <= 46, "free between 0 and 46"),
        "D": (lambda s: series(s) and series(s)[0] >= 1, "other, at least the exporter's"),
    },
    "max_connections": {
        "A": (lambda s: series(s) == [60], "max_connections 60"),
        "B": (lambda s: series(s) == [10], "reserves 0 + 0 + 10"),
    },
    "Allocation, connections and cap": {
        "A": (lambda s: series(s, application_name="api") and
              1 <= series(s, application_name="api")[0] <= 3, "api's allocation within its cap"),
        "B": (lambda s: series(s, application_name="api") == [3], "api holds 3 connections"),
        "C": (lambda s: series(s, application_name="api") == [3] and
              not series(s, application_name="web"), "api's cap 3, none drawn for web"),
    },
    "Refused connections per minute": {
        "A": (lambda s: series(s, application_name="api") and
              series(s, application_name="api")[0] > 0, "api refused more than 0 a minute"),
    },
    "Demand": {
        "A": (lambda s: series(s, application_name="api") and
              series(s, application_name="api")[0] >= 3, "api demands at least what it holds"),
    },
    "Pods per application": {
        "A": (lambda s: series(s, application_name="api") and
              series(s, application_name="api")[0] >= 2 and
              series(s, application_name="web") == [1], "api 2 pods or more, web 1"),
    },
    "Limits": {
        "A": (lambda s: series(s, application_name="api") == [2], "api's minimum 2"),
        "B": (lambda s: series(s, application_name="api") == [3] and
              series(s, application_name="web") == [-1], "api's cap 3, web's none (-1)"),
        "C": (lambda s: series(s, application_name="api") == [2], "api's weight 2"),
    },
    "Share per pod": {
        "A": (lambda s: series(s, pod="web-1") and series(s, pod="web-1")[0] >= 1 and
              all(0 <= v <= 50 for _, v in s), "web-1 has a share, every share within the budget"),
    },
    "Pods": {
        "A": (lambda s: series(s, pod="api-1") and all(0 <= v <= 50 for _, v in s), "shares"),
        "B": (lambda s: series(s, pod="api-1") == [2], "api-1's 2 connections"),
        "C": (lambda s: series(s, pod="api-1") and series(s, pod="api-1")[0] >= 2, "demands"),
    },
    "Pool connections vs share": {
        "A": (lambda s: series(s, pod="web-1") and 1 <= series(s, pod="web-1")[0] <= 4,
              "web-1 holds between 1 and its 4 workers' worth"),
        "B": (lambda s: series(s, pod="web-1") and series(s, pod="web-1")[0] >= 1, "web-1's share"),
    },
    "Acquire wait p99": {"A": (lambda s: series(s, pod="web-1") and
                               0 <= series(s, pod="web-1")[0] < 60, "a wait in seconds")},
    "Circuit breaker": {"A": (lambda s: series(s, pod="web-1") == [0], "closed (0)")},
    "Waiters and refused connects": {
        "A": (lambda s: series(s, pod="web-1") and series(s, pod="web-1")[0] >= 0, "waiters"),
        "B": (lambda s: series(s, pod="web-1") == [0], "web-1 refused nothing"),
    },
}

with open(path) as f:
    dashboard = json.load(f)
panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
ok(len(panels) >= 10 and dashboard.get("uid") == "connbudget",
   "the dashboard has its uid and %d panels" % len(panels))
for variable in dashboard["templating"]["list"]:
    if variable["type"] != "query":
        continue
    q = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    metric, label = q[len("label_values("):-1].split(", ")
    with urllib.request.urlopen(url + "/api/v1/label/%s/values?" % label +
                                urllib.parse.urlencode({"match[]": metric}), timeout=10) as r:
        values = json.load(r)["data"]
    ok({"api", "web"} <= set(values), "variable $%s lists the applications (%s)" %
       (variable["name"], ", ".join(values)))

for panel in panels:
    title = panel["title"]
    ok(title in checks, "panel \"%s\" is checked here" % title)
    want = checks.get(title, {})
    ok(sorted(t["refId"] for t in panel["targets"]) == sorted(want),
       "panel \"%s\": every query has a check" % title)
    for target in panel["targets"]:
        ok(target["datasource"]["uid"] == "${datasource}",
           "panel \"%s\" %s reads the dashboard's data source" % (title, target["refId"]))
        try:
            samples = query(target["expr"])
            error = None
        except Exception as e:  # noqa: BLE001 -- any failure is the test's
            samples, error = [], e
        fine = bool(samples) and all(math.isfinite(v) for _, v in samples)
        check, meaning = want.get(target["refId"], (lambda s: False, "no check"))
        ok(fine and bool(check(samples)),
           "panel \"%s\" %s returns series: %s" % (title, target["refId"], meaning),
           error or "expr: %s\nsamples: %s" % (target["expr"], samples))

sys.exit(1 if failures else 0)
