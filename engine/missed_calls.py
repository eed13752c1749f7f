"""Missed calls to call back: inbound calls nobody answered, not returned since.

A query over ``calls``, never a copy of them, as the queue is over follow-ups: a number's
missed calls leave the list the moment anyone calls it (a dial, answered or not, is a call
back: its outcome schedules what follows) or answers its next call, and when an operator
says no call back is needed (a dismissal: a later missed call is listed again). One entry a
number, however many times it rang and however many phones each call rang (a ring group's
legs are one call); calls older than :data:`MISSED_CALL_WINDOW` are no longer listed.

Who sees what, as everywhere: an operator sees the missed calls of their tier's clients and
those of unknown callers (or numbers shared by several clients) that rang their own phone;
supervisors and admins see all, or one tier's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.clients import SUMMARY_COLUMNS, summary
from engine.errors import NotFound
from engine.models import Call, Client, MissedCallDismissal, Role, User
from engine.models.calls import MISSED_CONDITION
from engine.phones import written

MISSED_CALL_WINDOW = timedelta(days=7)
MAX_MISSED = 50  # the longest waiting a list shows: a screenful and more

_calls = Call.__table__  # type: ignore[attr-defined]
_later = _calls.alias("later")
_clients = Client.__table__  # type: ignore[attr-defined]
_dismissals = MissedCallDismissal.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class MissedCall:
    number: str  # E.164, or as the PBX sent it when it was no valid number
    client: dict[str, object] | None  # the client the calls were linked to, if one was
    first_at: datetime  # the oldest missed call not returned since
    last_at: datetime
    times: int  # how many calls from the number went unanswered since

    def to_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "written": written(self.number),
            "client": self.client,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "times": self.times,
        }


def _scope(calls: Any, viewer: User, tier: str | None) -> sa.ColumnElement[bool] | None:
    if viewer.role != Role.OPERATOR:
        return None if tier is None else _clients.c.tier == tier
    unknown_here = sa.and_(calls.c.client_id.is_(None), calls.c.operator_id == viewer.id)
    if not viewer.tier:
        return unknown_here
    return sa.or_(unknown_here, _clients.c.tier == viewer.tier)


def statement(
    viewer: User,
    now: datetime,
    *,
    tier: str | None = None,
    number: str | None = None,
    limit: int = MAX_MISSED,
) -> sa.Select:
    """The list's one statement (tests read its plan: it must use ``ix_calls_missed``)."""
    # The week's missed calls first, on their own (a materialised CTE): that is all the
    # partial index ix_calls_missed holds. Left to plan the grouping with them, SQLite (with
    # no statistics: nothing runs ANALYZE) reads every call in number order to spare the
    # GROUP BY a sort (bench/missed_calls.py: 114 ms against 12). Only columns that
    # ix_calls_missed holds (MISSED_INDEX_COLUMNS): no call's row is read.
    missed = (
        sa.select(
            _calls.c.number,
            _calls.c.started_at,
            _calls.c.pbx_call_id,
            _calls.c.client_id,
            _calls.c.operator_id,
        )
        .where(sa.text(MISSED_CONDITION), _calls.c.started_at > now - MISSED_CALL_WINDOW)
        .cte("missed")
        .prefix_with("MATERIALIZED")
    )
    # SELECT id, not *: with * SQLite reads each later call's row, not the index alone.
    returned = (
        sa.select(_later.c.id)
        .where(
            _later.c.number == missed.c.number,
            _later.c.started_at > missed.c.started_at,
            sa.or_(_later.c.direction == "outbound", _later.c.answered_at.is_not(None)),
        )
        .exists()
    )
    dismissed = sa.exists().where(
        _dismissals.c.number == missed.c.number, _dismissals.c.at >= missed.c.started_at
    )
    first_at = sa.func.min(missed.c.started_at)
    grouped = (
        sa.select(
            missed.c.number,
            first_at.label("first_at"),
            sa.func.max(missed.c.started_at).label("last_at"),
            sa.func.count(sa.distinct(missed.c.pbx_call_id)).label("times"),
            sa.func.max(missed.c.client_id).label("client_id"),
        )
        .select_from(missed.outerjoin(_clients, _clients.c.id == missed.c.client_id))
        .where(~returned, ~dismissed)
        .group_by(missed.c.number)
        .order_by(first_at, missed.c.number)
        .limit(max(1, min(limit, MAX_MISSED)))
    )
    scope = _scope(missed, viewer, tier)
    if scope is not None:
        grouped = grouped.where(scope)
    if number is not None:
        grouped = grouped.where(missed.c.number == number)
    listed = grouped.subquery()
    # Each number's client summary in the same statement: no entities to build.
    return (
        sa.select(listed, *SUMMARY_COLUMNS)
        .select_from(listed.outerjoin(_clients, _clients.c.id == listed.c.client_id))
        .order_by(listed.c.first_at, listed.c.number)
    )


async def missed_calls(
    session: AsyncSession,
    *,
    viewer: User,
    now: datetime,
    tier: str | None = None,
    number: str | None = None,
    limit: int = MAX_MISSED,
) -> list[MissedCall]:
    """The numbers ``viewer`` should call back, the longest waiting first (``number``: only
    that one, if it is on the list)."""
    query = statement(viewer, now, tier=tier, number=number, limit=limit)
    return [
        MissedCall(
            number=row.number,
            client=summary(row) if row.client_id is not None else None,
            first_at=row.first_at,
            last_at=row.last_at,
            times=row.times,
        )
        for row in await session.exec(query)
    ]


async def dismiss(session: AsyncSession, viewer: User, number: str, now: datetime) -> MissedCall:
    """ "No call back needed" for ``number``'s missed calls up to ``now``. Only a number on
    ``viewer``'s own list: anything else is NotFound (an operator learns nothing of another
    tier's callers by trying numbers)."""
    listed = await missed_calls(session, viewer=viewer, now=now, number=number, limit=1)
    if not listed:
        raise NotFound(f"no missed call from {number} to call back")
    assert viewer.id is not None
    session.add(MissedCallDismissal(number=number, at=now, user_id=viewer.id))
    await session.commit()
    return listed[0]
