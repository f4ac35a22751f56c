"""Reading what a server answers: the share and refused connects.

A server, or a proxy in between, may answer anything.  A size is taken only
from an answer that is exactly what the protocol says (docs/protocol.md,
sections 4, 6 and 9); anything else raises AnswerError, which the pool logs
once per kind, counts, and otherwise ignores.  Nothing here talks to a
server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

MAX_BACKENDS = 262143           # PostgreSQL's limit on max_connections

# The numbers of connbudget.share this version takes, and their ranges;
# other words (allocation, pods, connections, ...) are skipped.
RANGES = {
    "protocol": (2, 1000),
    "max_size": (0, MAX_BACKENDS),
    "min_size": (0, MAX_BACKENDS),
    "budget": (0, MAX_BACKENDS),
    "refresh_ms": (10, 3600000),
}
KNOWN = {"status", "sqlstate", "reason", *RANGES}
STATUSES = ("ok", "other", "left", "refused")


class AnswerError(ValueError):
    """An answer that is not one: an error, never a size.  kind says what
    was wrong (shape, format, text, range, order, twice, missing, status),
    so that each kind is logged once however often it comes."""

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
    sqlstate: Optional[str] = None
    reason: Optional[str] = None


@dataclass(frozen=True)
class Refusal:
    """A refused connect: 53300 is backpressure (retry, from retry_ms on);
    42501 and 53400 are permanent.  retry_ms and lease_ms are None where the
    refusal states no valid pace."""

    sqlstate: str
    reason: str
    message: str
    retry_ms: Optional[int] = None
    lease_ms: Optional[int] = None

    @property
    def permanent(self) -> bool:
        return self.sqlstate != "53300"


def quote(value: Any) -> str:
    """A server's value for a log line: at most 32 characters, anything but
    printable ASCII escaped, so that an answer cannot forge or flood log
    lines."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:32]) + ("..." if len(text) > 32 else "")


def parse_integer(text: str, low: int, high: int) -> int:
    """The whole of text as a base-10 integer within [low, high]: ASCII
    digits after an optional '-', nothing else (int() would also take '+',
    spaces, '_' and the digits of other scripts)."""
    if not re.fullmatch(r"-?[0-9]+", text):
        raise AnswerError("text", "not an integer")
    if len(text) > 20 or not low <= int(text) <= high:
        raise AnswerError("range", "out of range [%d, %d]" % (low, high))
    return int(text)


def parse_share(text: Any) -> Share:
    """Read connbudget.share: words key=value one space apart, a status this
    version knows and, for "ok", max_size, min_size, budget and refresh_ms,
    each number a complete integer in range, min_size <= max_size <=
    budget.  Words this version does not know are skipped."""

    def bad(kind: str, detail: str) -> AnswerError:
        return AnswerError(kind, "connbudget.share is %s: %s" % (quote(text), detail))

    if not isinstance(text, str) or len(text) > 4096:     # about 100 characters today
        raise bad("format", "not text of at most 4096 characters")
    words = {}
    for word in text.split(" "):
        key, eq, value = word.partition("=")
        if not key or not eq:
            raise bad("text", "not words key=value")
        if key in words:
            raise bad("twice", key + " twice")
        if key in KNOWN:
            words[key] = value
    if words.get("status") not in STATUSES:
        raise bad("status", "no status this pool knows")
    numbers = {}
    for key in [key for key in RANGES if key in words]:
        try:
            numbers[key] = parse_integer(words[key], *RANGES[key])
        except AnswerError as error:
            raise bad(error.kind, "%s %s %s" % (key, quote(words[key]), error)) from None
    numbers.pop("protocol", None)
    sqlstate, reason = words.get("sqlstate", ""), words.get("reason", "")
    share = Share(words["status"], **numbers,
                  sqlstate=sqlstate if re.fullmatch(r"[0-9A-Z]{5}", sqlstate) else None,
                  reason=reason if re.fullmatch(r"[a-z_]{1,32}", reason) else None)
    if share.status == "ok":
        if None in (share.max_size, share.min_size, share.budget, share.refresh_ms):
            raise bad("missing", "a share needs max_size, min_size, budget and refresh_ms")
        if not share.min_size <= share.max_size <= share.budget:
            raise bad("order", "not min_size <= max_size <= budget")
    return share


def share_from_rows(rows: Sequence[Sequence[Any]]) -> Share:
    """The protocol's query's answer: one row of two columns, the second
    connbudget.share."""
    if len(rows) != 1 or len(rows[0]) != 2:
        raise AnswerError("shape", "the share query answered %s, not one row of two columns"
                          % quote(rows))
    return parse_share(rows[0][1])


# ---- refusals ----

# The pace a connbudget 53300 refusal states in its context field; each
# number ends the word it is in.
_PACE = re.compile(r"connbudget: retry_ms=([0-9]+)(?= |\n|$)(?: lease_ms=([0-9]+)(?= |\n|$))?",
                   re.MULTILINE)

# psycopg does not hand over the SQLSTATE of a failed connect, only libpq's
# message.  connbudget's refusals come in English (it has no translations);
# these parts of their details say which permanent refusal it was.
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
    stated = _PACE.search(message)
    if stated:
        return Refusal("53300", "backpressure", message, _pace(stated.group(1)),
                       _pace(stated.group(2)))
    for part, sqlstate, reason in _PERMANENT:
        if part in message:
            return Refusal(sqlstate, reason, message)
    if any(part in message for part in _SERVER_FULL):
        return Refusal("53300", "server_full", message)
    return None


def _pace(digits: Optional[str]) -> Optional[int]:
    """A stated pace: from 10 to 3600000 (ms), else ignored."""
    return int(digits) if digits and len(digits) <= 7 and 10 <= int(digits) <= 3600000 else None
