#!/usr/bin/python3
"""Every panel of monitoring/grafana-dashboard.json, and every rule of
monitoring/recording.yml and alerts.yml, against a real Prometheus.

    panels.py PROMETHEUS_URL DASHBOARD FIRST_TEST_NUMBER [WHERE]

Evaluates each panel's PromQL through Prometheus' HTTP API, as Grafana
would with the variables at their defaults ($application: all), and checks
that it returns series with plausible values for the fleet exporter.sh
runs: a budget of 50, application "api" capped at 3 and refused, "web" a
pod with a pool serving its own metrics, "shop" behind a PgBouncer sized by
connbudget-pgbouncer.  Then every rule Prometheus loaded (GET
/api/v1/rules): each must be healthy, each recording rule's series must be
there with plausible values, and each alert's expression, its comparison
made a "bool" one, must return series, so that a name or label the real
metrics lack fails.  Every panel and every rule must have a check here, so
a new one, or a renamed metric, fails until it is looked at.  Prints TAP
lines numbered from FIRST_TEST_NUMBER, WHERE (if given) said after each;
exits 1 if any failed.
"""
import json
import math
import re
import sys
import urllib.parse
import urllib.request

url, path, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
where = " (%s)" % sys.argv[4] if len(sys.argv) > 4 else ""
n = first - 1
failures = 0


def ok(passed, description, diag=None):
    global n, failures
    n += 1
    print(("ok" if passed else "not ok") + " %d - %s%s" % (n, description, where))
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


# the controller's failures that this test's setup must never see
reached = ("server_unreachable", "admin_unreachable", "not_governed", "no_extension")

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
    # one controller, its PgBouncer under three clients
    "PgBouncer pool size vs share": {
        "A": (lambda s: len(s) == 1 and 1 <= s[0][1] <= 49, "a pool size of 1 to 49"),
        "B": (lambda s: len(s) == 1 and 2 <= s[0][1] <= 50, "a share of 2 to 50"),
    },
    "PgBouncer demand and connections": {
        "A": (lambda s: len(s) == 1 and s[0][1] >= 1, "a demand, the controller's included"),
        "B": (lambda s: len(s) == 1 and 1 <= s[0][1] <= 49, "server connections under load"),
        "C": (lambda s: len(s) == 1 and s[0][1] >= 2,
              "the server counts PgBouncer's and the controller's in the pod"),
    },
    "PgBouncer clients waiting": {
        "A": (lambda s: len(s) == 1 and 0 <= s[0][1] <= 3, "0 to the 3 clients"),
    },
    "Controller connections": {
        "A": (lambda s: series(s, connection="server") == [1] and
              series(s, connection="admin") == [1], "server and admin up"),
    },
    "PgBouncer identity": {"A": (lambda s: series(s) == [0], "no mismatch")},
    "Controller errors per minute": {
        "A": (lambda s: len(s) >= 11 and all(v >= 0 for _, v in s) and
              all(series(s, kind=k) == [0] for k in reached),
              "every kind; the server, the console and connbudget reached, shop governed"),
    },
    "Controller refreshes and resizes per minute": {
        "A": (lambda s: len(s) == 1 and s[0][1] > 0, "refreshes"),
        "B": (lambda s: len(s) == 1 and s[0][1] >= 0, "size changes"),
        "C": (lambda s: len(s) == 1 and s[0][1] >= 0, "shrinks"),
        "D": (lambda s: len(s) == 1 and s[0][1] >= 0, "sizes set again"),
    },
}

# What each rule must give: a recording rule's series, an alert's expression
# with its comparison made "bool" (1 where the alert's condition holds, 0
# where it does not), and the state the alert must be in.
rule_checks = {
    "connbudget:budget_in_use:ratio": (
        lambda s: len(s) == 1 and 0 < s[0][1] <= 1, "a ratio above 0 and at most 1"),
    "connbudget_application:refused:rate5m_per_minute": (
        lambda s: series(s, application_name="api") and series(s, application_name="api")[0] > 0,
        "api refused more than 0 a minute"),
    "connbudget_application:headroom:connections": (
        lambda s: series(s, application_name="api") and
        -3 <= series(s, application_name="api")[0] <= 0 and series(s, application_name="shop"),
        "api's allocation less its 3 connections; shop's too"),
    "cbpool_application:acquire_wait_p99:max_seconds": (
        lambda s: series(s, application="web") and 0 <= series(s, application="web")[0] < 60,
        "web's pool waits seconds"),
    "ConnbudgetApplicationRefused": (
        lambda s: series(s, application_name="api") == [1], "holds for api", "firing"),
    "ConnbudgetBudgetLow": (lambda s: series(s) == [0], "does not hold: 50 is free enough",
                            "inactive"),
    "ConnbudgetPoolCircuitOpen": (lambda s: series(s, pod="web-1") == [0],
                                  "does not hold for web-1", "inactive"),
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

with urllib.request.urlopen(url + "/api/v1/rules", timeout=10) as r:
    rules = [rule for group in json.load(r)["data"]["groups"] for rule in group["rules"]]
ok(set(rule_checks) <= {r["name"] for r in rules},
   "Prometheus loaded the %d rules: %s" % (len(rules), ", ".join(r["name"] for r in rules)))
for rule in rules:
    name = rule["name"]
    ok(name in rule_checks, "rule %s is checked here" % name)
    ok(rule["health"] == "ok", "rule %s is healthy" % name, rule.get("lastError"))
    check, meaning, *state = rule_checks.get(name, (lambda s: False, "no check"))
    if rule["type"] == "recording":
        expr = name
    else:
        expr = re.sub(r"\s(==|!=|>=|<=|>|<)\s", r" \1 bool ", rule["query"], count=1)
    try:
        samples = query(expr)
        error = None
    except Exception as e:  # noqa: BLE001 -- any failure is the test's
        samples, error = [], e
    fine = bool(samples) and all(math.isfinite(v) for _, v in samples)
    ok(fine and bool(check(samples)),
       "%s rule %s returns series on the real metrics: %s" % (rule["type"], name, meaning),
       error or "expr: %s\nsamples: %s" % (expr, samples))
    if state:
        ok(rule.get("state") == state[0], "alert %s is %s" % (name, state[0]),
           "state: %s" % rule.get("state"))

sys.exit(1 if failures else 0)
