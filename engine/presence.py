"""What each operator is doing now, and the day's funnel — for the supervisor's live view.

Derived from the calls and transitions already recorded: nothing to keep in sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.followups.overdue import OverdueAt, is_overdue, overdue_after
from engine.models import (
    Call,
    CallStatus,
    FollowUp,
    FollowUpStatus,
    Role,
    TransitionRecord,
    User,
)

WRAP_UP = timedelta(minutes=15)  # an ended call with no outcome after this is just idle


@dataclass(frozen=True)
class OperatorStatus:
    user_id: int
    name: str
    tier: str | None
    status: str  # ringing, on_call, wrap_up, idle
    since: datetime | None
    call_id: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "name": self.name,
            "tier": self.tier,
            "status": self.status,
            "since": self.since.isoformat() if self.since else None,
            "call_id": self.call_id,
        }


async def operator_statuses(session: AsyncSession, now: datetime) -> list[OperatorStatus]:
    operators = (
        await session.exec(
            select(User)
            .where(col(User.role) == Role.OPERATOR, col(User.active).is_(True))
            .order_by(col(User.tier), col(User.display_name))
        )
    ).all()
    latest = (
        select(Call.operator_id, func.max(Call.id).label("call_id"))
        .where(
            col(Call.operator_id).is_not(None),
            col(Call.started_at) >= now - timedelta(hours=12),
            # A leg a colleague answered was never this operator's call: no wrap-up for it.
            col(Call.status) != CallStatus.TAKEN_ELSEWHERE,
        )
        .group_by(col(Call.operator_id))
        .subquery()
    )
    calls = {
        c.operator_id: c
        for c in (await session.exec(select(Call).join(latest, latest.c.call_id == Call.id))).all()
    }
    result = []
    for op in operators:
        call = calls.get(op.id)
        status, since, call_id = "idle", None, None
        if call is not None:
            if call.status == CallStatus.RINGING:
                status, since = "ringing", call.started_at
            elif call.status == CallStatus.ANSWERED:
                status, since = "on_call", call.answered_at
            elif (
                call.outcome is None
                and call.ended_at
                and now - call.ended_at < WRAP_UP
                # A ring nobody answered left the operator nothing to wrap up (an outgoing
                # call the client did not pick up does: its "no answer" is recorded).
                and (call.answered_at is not None or call.direction == "outbound")
            ):
                status, since = "wrap_up", call.ended_at
            call_id = call.pbx_call_id if status != "idle" else None
        result.append(
            OperatorStatus(op.id, op.display_name, op.tier, status, since, call_id)  # type: ignore[arg-type]
        )
    return result


async def day_funnel(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """Clients handed from tier to tier in [start, end): 'cold->sales': 12, ..."""
    rows = await session.exec(
        select(TransitionRecord.from_tier, TransitionRecord.to_tier, func.count())
        .where(
            col(TransitionRecord.at) >= start,
            col(TransitionRecord.at) < end,
            col(TransitionRecord.from_tier) != col(TransitionRecord.to_tier),
            col(TransitionRecord.from_tier) != "",
        )
        .group_by(col(TransitionRecord.from_tier), col(TransitionRecord.to_tier))
    )
    return {f"{a}->{b}": n for a, b, n in rows}


async def attention_followups(session: AsyncSession, now: datetime, limit: int = 100) -> list[dict]:
    """Overdue and escalated follow-ups, the most urgent first. Overdue by the operators'
    own yardstick (``engine/followups/overdue.py``): the supervisor sees a call late exactly
    when the operator's queue and card say so."""
    rows = await session.exec(
        select(FollowUp)
        .where(
            col(FollowUp.status) == FollowUpStatus.PENDING,
            # Everything below is past due (escalation and firing come after the due time):
            # said outright, the (status, due_at) index reads only the past-due rows instead
            # of every pending follow-up (200,000 pending, 3 % past due: 550 ms -> 27 ms).
            col(FollowUp.due_at) <= now,
            # A call overdue or escalated, or an automatic event that was fired, refused and
            # escalated: both need a person.
            (
                col(FollowUp.auto_event).is_(None)
                & ((col(FollowUp.escalation_level) > 0) | (OverdueAt() < now))
            )
            | (col(FollowUp.auto_event).is_not(None) & col(FollowUp.fired_at).is_not(None)),
        )
        .order_by(col(FollowUp.escalation_level).desc(), col(FollowUp.due_at))
        .limit(limit)
    )
    items = []
    for f in rows:
        automatic = f.auto_event is not None
        late = None if automatic else overdue_after(f.due_at, f.grace_s)
        items.append(
            {
                "followup_id": f.id,
                "client_id": f.client_id,
                "tier": f.tier,
                "owner_id": f.owner_id,
                "due_at": f.due_at.isoformat(),
                "kind": f.kind,
                "escalation_level": f.escalation_level,
                "reason": f.reason,
                "automatic_failed": automatic,
                "overdue_at": late.isoformat() if late else None,
                "overdue": not automatic and is_overdue(f, now),
            }
        )
    return items
