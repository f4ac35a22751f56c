"""What a server answers, and what a pool takes from it: hostile answers are
errors, never sizes.  No server needed."""

import socket

import pytest

import connbudget
from connbudget.share import AnswerError, parse_refusal, parse_share, share_from_rows

GOOD = ("protocol=2 status=ok max_size=5 min_size=1 allocation=10 pods=2 budget=80 "
        "refresh_ms=1000 connections=4")


def test_a_share():
    share = parse_share(GOOD)
    assert (share.status, share.max_size, share.min_size, share.budget, share.refresh_ms) == (
        "ok", 5, 1, 80, 1000)


@pytest.mark.parametrize("text, status", [
    ("protocol=2 status=other refresh_ms=200", "other"),
    ("protocol=2 status=left max_size=0", "left"),
    ("status=refused sqlstate=42501 reason=role_may_not_claim", "refused"),
])
def test_statuses(text, status):
    assert parse_share(text).status == status


def test_refused_says_why():
    share = parse_share("protocol=2 status=refused sqlstate=53400 reason=max_pods")
    assert (share.sqlstate, share.reason) == ("53400", "max_pods")
    # a sqlstate or reason that is not one is left out, not taken
    share = parse_share("status=refused sqlstate=5340 reason=Max-Pods")
    assert (share.sqlstate, share.reason) == (None, None)


def test_unknown_words_are_skipped():
    share = parse_share(GOOD + " weight=3 x" + "y" * 1000 + "=" + "z" * 100 + " future=a=b"
                        + " future=twice connections=many")
    assert share.max_size == 5


def test_words_in_any_order():
    assert parse_share("refresh_ms=10 budget=0 min_size=0 max_size=0 status=ok").max_size == 0


HOSTILE = [
    # shape of the text
    ("", "text"),
    (" " + GOOD, "text"),
    (GOOD + " ", "text"),
    (GOOD.replace(" ", "  ", 1), "text"),
    ("status=ok max_size", "text"),
    ("=5 " + GOOD, "text"),
    (GOOD.replace(" ", "\t"), "status"),
    ("x" * 5000, "format"),
    (b"status=ok", "format"),
    (5, "format"),
    # status
    ("max_size=5 min_size=0 budget=9 refresh_ms=100", "status"),
    ("status=OK max_size=5 min_size=0 budget=9 refresh_ms=100", "status"),
    ("status=ok status=ok max_size=5 min_size=0 budget=9 refresh_ms=100", "twice"),
    ("status=ok max_size=5 max_size=6 min_size=0 budget=9 refresh_ms=100", "twice"),
    # numbers that are not complete base-10 integers
    ("status=ok max_size=abc min_size=0 budget=9 refresh_ms=100", "text"),
    ("status=ok max_size= min_size=0 budget=9 refresh_ms=100", "text"),
    ("status=ok max_size=+5 min_size=0 budget=9 refresh_ms=100", "text"),
    ("status=ok max_size=5.0 min_size=0 budget=9 refresh_ms=100", "text"),
    ("status=ok max_size=0x5 min_size=0 budget=9 refresh_ms=100", "text"),
    ("status=ok max_size=1_0 min_size=0 budget=90 refresh_ms=100", "text"),
    ("status=ok max_size=\u0665 min_size=0 budget=9 refresh_ms=100", "text"),   # Arabic 5
    ("status=ok max_size=\uff15 min_size=0 budget=9 refresh_ms=100", "text"),   # fullwidth 5
    ("status=ok max_size=5\n min_size=0 budget=9 refresh_ms=100", "text"),
    ("status=ok max_size=5 min_size=0 budget=many refresh_ms=100", "text"),
    ("protocol=two status=ok max_size=5 min_size=0 budget=9 refresh_ms=100", "text"),
    # out of range
    ("status=ok max_size=-1 min_size=0 budget=9 refresh_ms=100", "range"),
    ("status=ok max_size=99999999999 min_size=0 budget=99999999999 refresh_ms=100", "range"),
    ("status=ok max_size=" + "9" * 1000 + " min_size=0 budget=9 refresh_ms=100", "range"),
    ("status=ok max_size=262144 min_size=0 budget=262144 refresh_ms=100", "range"),
    ("status=ok max_size=5 min_size=0 budget=9 refresh_ms=9", "range"),
    ("status=ok max_size=5 min_size=0 budget=9 refresh_ms=3600001", "range"),
    ("protocol=1 status=ok max_size=5 min_size=0 budget=9 refresh_ms=100", "range"),
    # out of order
    ("status=ok max_size=5 min_size=6 budget=9 refresh_ms=100", "order"),
    ("status=ok max_size=10 min_size=0 budget=9 refresh_ms=100", "order"),
    # missing
    ("status=ok max_size=5 min_size=0 budget=9", "missing"),
    ("protocol=2 status=ok", "missing"),
]


def short(value):
    return repr(value)[:40]


@pytest.mark.parametrize("text, kind", HOSTILE, ids=short)
def test_hostile_shares_are_errors(text, kind):
    with pytest.raises(AnswerError) as error:
        parse_share(text)
    assert error.value.kind == kind


def test_errors_quote_what_came_safely():
    with pytest.raises(AnswerError) as error:
        parse_share("status=\x1b[31mok\nFAKE LOG LINE" + "x" * 100)
    message = str(error.value)
    assert "\n" not in message and "\x1b" not in message
    assert "\\x1b" in message and "'..." in message


@pytest.mark.parametrize("rows, kind", [
    ([], "shape"),
    ([("5", GOOD), ("5", GOOD)], "shape"),
    ([(GOOD,)], "shape"),
    ([("5", GOOD, "x")], "shape"),
    ([("5", None)], "format"),
    ([("5", b"status=ok")], "format"),
])
def test_hostile_rows(rows, kind):
    with pytest.raises(AnswerError) as error:
        share_from_rows(rows)
    assert error.value.kind == kind


# ---- refusals, as psycopg hands them over (the server's own words) ----

CAP = ('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
       'FATAL:  too many connections for application "shop"\n'
       'DETAIL:  Application "shop" holds 2 connections and its limit is 2 '
       '(connbudget.application_limits.max_connections); pod "pod-c".\n'
       'HINT:  Shrink the pools of this application, or raise its max_connections in '
       'connbudget.application_limits. Pools re-read their share every 1000 ms '
       '(connbudget.refresh_interval).\n'
       'CONTEXT:  connbudget: retry_ms=1000 lease_ms=3000 protocol=2')


def test_backpressure_states_its_pace():
    refusal = parse_refusal(CAP)
    assert (refusal.sqlstate, refusal.permanent, refusal.retry_ms, refusal.lease_ms) == (
        "53300", False, 1000, 3000)


def test_backpressure_of_postgresql_itself():
    full = parse_refusal("connection failed: FATAL:  sorry, too many clients already")
    assert (full.sqlstate, full.retry_ms) == ("53300", None)


@pytest.mark.parametrize("context", [
    "connbudget: retry_ms=5 lease_ms=3000",
    "connbudget: retry_ms=99999999999",
    "connbudget: retry_ms=1000x",
    "connbudget: retry_ms=-1000",
])
def test_a_pace_that_is_not_one_is_ignored(context):
    refusal = parse_refusal(CAP.replace("connbudget: retry_ms=1000 lease_ms=3000 protocol=2",
                                        context))
    assert refusal is None or refusal.retry_ms is None


@pytest.mark.parametrize("message, sqlstate, reason", [
    ('FATAL:  role "app" may not connect as application "bound"\nDETAIL:  '
     'connbudget.application_limits allows application "bound" only to the roles other and '
     'their members.', "42501", "role_may_not_claim"),
    ('FATAL:  application "x" has no row in connbudget.application_limits\nDETAIL:  '
     'connbudget.unconfigured_applications is "refuse": only configured applications may '
     'give a connbudget.pod.', "42501", "unconfigured_refused"),
    ('FATAL:  pod "p" of application "a" belongs to role "r"\nDETAIL:  A live pod belongs '
     'to the role that registered it; role "s" cannot connect to it or report for it.',
     "42501", "pod_of_another_role"),
    ('FATAL:  role "r" already holds 4 live pods\nDETAIL:  connbudget.max_pods_per_role is '
     '4; pod "p" of application "a" would be one more.', "53400", "max_pods_per_role"),
    ('FATAL:  connbudget cannot register pod "p" of application "a": all 16 pod slots are '
     'taken\nDETAIL:  connbudget.max_pods (16) pods are live, or their pool sessions fill '
     'the 32 session slots.', "53400", "max_pods"),
])
def test_permanent_refusals(message, sqlstate, reason):
    refusal = parse_refusal(message)
    assert (refusal.sqlstate, refusal.reason, refusal.permanent) == (sqlstate, reason, True)


def test_other_failures_are_not_refusals():
    assert parse_refusal('connection failed: FATAL:  password authentication failed') is None
    assert parse_refusal('connection is bad: Connection refused') is None


# ---- identity ----

def test_connect_kwargs():
    kwargs = connbudget.connect_kwargs("api", pod="web 1\\a", options="-c work_mem=64MB",
                                       user="app")
    assert kwargs == {"application_name": "api", "user": "app",
                      "options": "-c work_mem=64MB -c connbudget.pod=web\\ 1\\\\a"}


def test_the_pod_is_the_host_name_by_default():
    assert connbudget.connect_kwargs("api")["options"] == (
        "-c connbudget.pod=" + socket.gethostname())


def test_pod_from_the_environment(monkeypatch):
    monkeypatch.setenv("MY_POD_NAME", "api-7d9f-x2")
    assert connbudget.connect_kwargs("api", pod_env="MY_POD_NAME")["options"] == (
        "-c connbudget.pod=api-7d9f-x2")
    monkeypatch.delenv("MY_POD_NAME")
    with pytest.raises(connbudget.IdentityError, match="MY_POD_NAME"):
        connbudget.connect_kwargs("api", pod_env="MY_POD_NAME")


@pytest.mark.parametrize("pod", ["", "x" * 64, "caf\u00e9", "tab\there", "nul\x00", None, 5])
def test_bad_identities_are_refused_before_connecting(pod):
    with pytest.raises(connbudget.IdentityError):
        connbudget.check_id("pod", pod)
    if pod is not None:
        with pytest.raises(connbudget.IdentityError):
            connbudget.connect_kwargs("api", pod=pod)


def test_bad_application_names_are_refused():
    with pytest.raises(connbudget.IdentityError):
        connbudget.connect_kwargs("a" * 64, pod="p")
    assert connbudget.check_id("pod", "x" * 63) == "x" * 63
