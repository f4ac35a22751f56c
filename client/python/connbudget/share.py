"""Reading what a server answers: the share, pool_share()'s row, refusals.

A server, a proxy in between, or a function someone else named
connbudget.pool_share() may answer anything.  A size is taken only from an
answer that is exactly what the protocol says (docs/protocol.md, sections 4,
5, 6 and 9); anything else raises AnswerError, which the caller logs once per
kind, counts, and otherwise ignores.  Nothing here talks to a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

MAX_BACKENDS = 262143           # PostgreSQL's limit on max_connections
REFRESH_MIN_MS = 10             # the range of connbudget.refresh_interval
REFRESH_MAX_MS = 3600000
SHARE_MAX_BYTES = 4096          # the longest share read (about 100 bytes today)

_INTEGER = re.compile(r"-?[0-9]+")      # ASCII digits only, unlike int()
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
_REASON = re.compile(r"[a-z_]{1,32}")

# The words of connbudget.share this version knows, and each number's range.
_NUMBERS = {
    "max_size": (0, MAX_BACKENDS),
    "min_size": (0, MAX_BACKENDS),
    "budget": (0, MAX_BACKENDS),
    "refresh_ms": (REFRESH_MIN_MS, REFRESH_MAX_MS),
    "allocation": (0, MAX_BACKENDS),
    "connections": (0, MAX_BACKENDS),
    "pods": (0, 2**31 - 1),
}
_KNOWN = {"status", "protocol", "sqlstate", "reason", *_NUMBERS}
_STATUSES = ("ok", "other", "left", "refused")


class AnswerError(ValueError):
    """An answer that is not one: an error, never a size.

    kind names what was wrong (shape, null, format, text, range, order,
    twice, missing, status), so that each kind is logged once however often
    a server repeats it.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Share:
    """What the server says the pool may hold (docs/protocol.md, section 4).

    status is "ok", "other" (not governed: a fixed size), "left" (handed
    back; a report brings it back) or "refused" (governed no more: sqlstate
    and reason say why).  The numbers are None where the answer had none.
    """

    status: str
    max_size: Optional[int] = None
    min_size: Optional[int] = None
    budget: Optional[int] = None
    refresh_ms: Optional[int] = None
    allocation: Optional[int] = None
    pods: Optional[int] = None
    connections: Optional[int] = None
    sqlstate: Optional[str] = None
    reason: Optional[str] = None


@dataclass(frozen=True)
class Refusal:
    """A refused connect, read from the driver's message.

    sqlstate is 53300 (backpressure: retry, from retry_ms on), or 42501 or
    53400 (permanent: report it, retry seldom).  retry_ms and lease_ms are
    None when the refusal states no valid pace.
    """

    sqlstate: str
    reason: str
    message: str
    retry_ms: Optional[int] = None
    lease_ms: Optional[int] = None

    @property
    def permanent(self) -> bool:
        return self.sqlstate != "53300"


def quote(value: Any) -> str:
    """A server's value for a log line: quoted, at most 32 characters,
    anything but printable ASCII escaped, so that an answer cannot forge log
    lines or flood them."""
    text = value if isinstance(value, str) else repr(value)
    out = []
    for ch in text[:32]:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("\\x%02x" % ord(ch) if ord(ch) < 256 else "\\u%04x" % ord(ch))
    return '"' + "".join(out) + ('..."' if len(text) > 32 else '"')


def parse_integer(text: str, low: int, high: int) -> int:
    """The whole of text as a base-10 integer within [low, high]: digits
    after an optional '-', nothing else (no '+', no spaces, no '_', no
    digits of other scripts, all of which int() would take)."""
    if not isinstance(text, str) or not _INTEGER.fullmatch(text):
        raise AnswerError("text", "not an integer")
    if len(text) > 20 or not low <= int(text) <= high:
        raise AnswerError("range", "out of range [%d, %d]" % (low, high))
    return int(text)


def parse_share(text: Any) -> Share:
    """Read connbudget.share: words key=value one space apart, with a
    status this version knows and, for "ok", max_size, min_size, budget
    and refresh_ms in range and in order.  Unknown words are skipped (later
    versions add words); a word twice, a word without '=', a number that is
    not a complete integer in range, are not an answer."""
    what = "connbudget.share"
    if not isinstance(text, str):
        raise AnswerError("format", "%s is %s, not text" % (what, quote(text)))
    if len(text.encode("utf-8", "replace")) > SHARE_MAX_BYTES:
        raise AnswerError("format", "%s is %s, longer than %d bytes"
                          % (what, quote(text), SHARE_MAX_BYTES))
    words = {}
    for word in text.split(" "):
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise AnswerError("text", "%s is %s, not words key=value" % (what, quote(text)))
        if key not in _KNOWN:
            continue
        if key in words:
            raise AnswerError("twice", "%s is %s: %s twice" % (what, quote(text), key))
        words[key] = value
    status = words.get("status")
    if status not in _STATUSES:
        raise AnswerError("status", "%s is %s: no status this pool knows" % (what, quote(text)))
    if "protocol" in words:
        _number(words["protocol"], 2, 1000, "protocol", text)
    numbers = {key: _number(words[key], low, high, key, text)
               for key, (low, high) in _NUMBERS.items() if key in words}
    sqlstate = words.get("sqlstate")
    reason = words.get("reason")
    share = Share(status=status,
                  sqlstate=sqlstate if sqlstate and _SQLSTATE.fullmatch(sqlstate) else None,
                  reason=reason if reason and _REASON.fullmatch(reason) else None,
                  **numbers)
    if status == "ok":
        missing = [key for key in ("max_size", "min_size", "budget", "refresh_ms")
                   if key not in numbers]
        if missing:
            raise AnswerError("missing", "%s is %s: a share without %s"
                              % (what, quote(text), ", ".join(missing)))
        _check_order(share, what)
    return share


def share_from_rows(rows: Sequence[Sequence[Any]], columns: int) -> Share:
    """The protocol-2 query's answer: one row of two columns, the second
    connbudget.share."""
    _one_row(rows, columns, 2, "connbudget.share")
    if rows[0][1] is None:
        raise AnswerError("null", "connbudget.share is NULL")
    return parse_share(rows[0][1])


def pool_share_from_rows(rows: Sequence[Sequence[Any]], columns: int) -> Share:
    """connbudget.pool_share()'s answer (protocol 1): one row of max_size,
    min_size, budget and refresh_ms, integers none NULL, in range and in
    order."""
    what = "connbudget.pool_share()"
    _one_row(rows, columns, 4, what)
    values = {}
    for key, value in zip(("max_size", "min_size", "budget", "refresh_ms"), rows[0]):
        if value is None:
            raise AnswerError("null", "%s answered NULL for %s" % (what, key))
        if type(value) is not int:      # a bool is an int; text "5" is not
            raise AnswerError("text", "%s answered %s %s, not an integer"
                              % (what, key, quote(value)))
        low, high = _NUMBERS[key]
        if not low <= value <= high:
            raise AnswerError("range", "%s answered %s %d, out of range [%d, %d]"
                              % (what, key, value, low, high))
        values[key] = value
    share = Share(status="ok", **values)
    _check_order(share, what)
    return share


def _number(value: str, low: int, high: int, key: str, text: str) -> int:
    try:
        return parse_integer(value, low, high)
    except AnswerError as error:
        raise AnswerError(error.kind, "connbudget.share is %s: %s %s %s"
                          % (quote(text), key, quote(value), error)) from None


def _one_row(rows: Sequence[Sequence[Any]], columns: int, expected: int, what: str) -> None:
    if len(rows) != 1:
        raise AnswerError("shape", "%s answered %d rows, not 1" % (what, len(rows)))
    if columns != expected or len(rows[0]) != expected:
        raise AnswerError("shape", "%s answered %d columns, not %d" % (what, columns, expected))


def _check_order(share: Share, what: str) -> None:
    if share.min_size > share.max_size:
        raise AnswerError("order", "%s answered min_size %d above max_size %d"
                          % (what, share.min_size, share.max_size))
    if share.max_size > share.budget:
        raise AnswerError("order", "%s answered max_size %d above budget %d"
                          % (what, share.max_size, share.budget))


# ---- refusals ----

# The pace a connbudget 53300 refusal states in its context field (1.2), and
# in its hint (1.1); each number ends the word it is in.
_RETRY = re.compile(r"connbudget: retry_ms=([0-9]+)(?= |\n|$)(?: lease_ms=([0-9]+)(?= |\n|$))?",
                    re.MULTILINE)
_HINT = re.compile(r"re-read their share every ([0-9]+) ms \(connbudget\.refresh_interval\)")

# psycopg does not hand over the SQLSTATE of a failed connect, only libpq's
# message.  connbudget's refusals come in English (it has no translations);
# these parts of their details and hints say which refusal it was.
_PERMANENT = (
    ("connbudget.application_limits allows application", "42501", "role_may_not_claim"),
    ("connbudget.unconfigured_applications is \"refuse\"", "42501", "unconfigured_refused"),
    ("A live pod belongs to the role that registered it", "42501", "pod_of_another_role"),
    ("connbudget.max_pods_per_role", "53400", "max_pods_per_role"),
    ("pods are live, or their pool sessions fill", "53400", "max_pods"),
)
# PostgreSQL's own 53300 (max_connections exhausted), in English
_SERVER_FULL = ("sorry, too many clients already", "remaining connection slots are reserved")


def parse_refusal(message: str) -> Optional[Refusal]:
    """What a failed connect's message says about a refusal: a Refusal, or
    None for any other failure (unreachable, authentication, ...)."""
    stated = _RETRY.search(message)
    if stated:
        return Refusal("53300", "backpressure", message, _pace(stated.group(1)),
                       _pace(stated.group(2)))
    for part, sqlstate, reason in _PERMANENT:
        if part in message:
            return Refusal(sqlstate, reason, message)
    hinted = _HINT.search(message)
    if hinted:
        return Refusal("53300", "backpressure", message, _pace(hinted.group(1)))
    if any(part in message for part in _SERVER_FULL):
        return Refusal("53300", "server_full", message)
    return None


def _pace(text: Optional[str]) -> Optional[int]:
    """A stated pace: a complete integer from 10 to 3600000, else ignored."""
    try:
        return parse_integer(text, REFRESH_MIN_MS, REFRESH_MAX_MS) if text else None
    except AnswerError:
        return None
