"""When a follow-up is overdue: one yardstick for the operator's queue, the card and the
supervisor's attention list.

A call is overdue once its grace has passed (``due_at`` + ``grace_s``, or an hour when the
rule gives none): the same yardstick the escalation sweep uses, but stable across escalation
steps (``escalate_at`` moves on with each step; due + grace does not). Python and SQL say it
alike: :func:`overdue_after` for a row in hand, :class:`OverdueAt` inside a query, so a
supervisor's list can select by it (the graces of one workflow run from 15 minutes to days).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from engine.models import FollowUp
from engine.storage.types import UTCDateTime

# A follow-up whose rule gives no grace is overdue this long after its due time.
DEFAULT_GRACE = timedelta(hours=1)


def overdue_after(due_at: datetime, grace_s: int) -> datetime:
    """The moment a follow-up due at ``due_at`` becomes overdue."""
    return due_at + (timedelta(seconds=grace_s) if grace_s else DEFAULT_GRACE)


def is_overdue(fu: FollowUp, now: datetime) -> bool:
    return now > overdue_after(fu.due_at, fu.grace_s)


class OverdueAt(FunctionElement[datetime]):
    """``overdue_after(FollowUp.due_at, FollowUp.grace_s)`` in SQL, on SQLite and PostgreSQL."""

    type = UTCDateTime()
    inherit_cache = True
    name = "overdue_at"

    def __init__(self) -> None:
        super().__init__(FollowUp.__table__.c.due_at, FollowUp.__table__.c.grace_s)  # type: ignore[attr-defined]


def _grace_seconds(element: OverdueAt, compiler: Any, **kw: Any) -> tuple[str, str]:
    due, grace = (compiler.process(arg, **kw) for arg in element.clauses)
    default = int(DEFAULT_GRACE.total_seconds())
    return due, f"(CASE WHEN {grace} > 0 THEN {grace} ELSE {default} END)"


@compiles(OverdueAt, "sqlite")
def _overdue_at_sqlite(element: OverdueAt, compiler: Any, **kw: Any) -> str:
    due, seconds = _grace_seconds(element, compiler, **kw)
    # The stored text's own shape, SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff" (strftime
    # gives milliseconds: three zeros make six), so it compares as text with a bound
    # datetime, and equal moments compare equal: overdue only after, as in Python.
    return f"(strftime('%Y-%m-%d %H:%M:%f', {due}, '+' || {seconds} || ' seconds') || '000')"


@compiles(OverdueAt, "postgresql")
def _overdue_at_pg(element: OverdueAt, compiler: Any, **kw: Any) -> str:
    due, seconds = _grace_seconds(element, compiler, **kw)
    return f"({due} + {seconds} * INTERVAL '1 second')"
