"""An operator's queue: the calls owed now, oldest first.

The queue is a query over pending follow-up rows, never a copy of them: whatever the
dispatcher announced or lost, the rows say who is owed a call. An operator sees their own
follow-ups plus their tier's unowned ones (the pool, and personal ones escalated to the
tier); automatic events are the system's job and never appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import calendar
from engine.clients import summary
from engine.followups.overdue import is_overdue
from engine.followups.planner import client_timezone
from engine.models import Client, ClientPhone, FollowUp, FollowUpStatus, Role, User

MAX_ITEMS = 500


@dataclass(frozen=True)
class QueueItem:
    followup_id: int
    client: dict[str, object]
    due_at: datetime
    when: str  # the due time on the client's wall clock
    kind: str
    reason: str
    overdue: bool
    escalated: bool
    escalation_level: int
    owner_id: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "followup_id": self.followup_id,
            "client": self.client,
            "due_at": self.due_at.isoformat(),
            "when": self.when,
            "kind": self.kind,
            "reason": self.reason,
            "overdue": self.overdue,
            "escalated": self.escalated,
            "escalation_level": self.escalation_level,
            "owner_id": self.owner_id,
        }


async def due_queue(
    session: AsyncSession,
    *,
    now: datetime,
    default_tz: str,
    operator: User | None = None,
    tier: str | None = None,
    limit: int = 200,
) -> list[QueueItem]:
    """Calls due at ``now``, ordered by due time.

    With ``operator`` (an operator): their own plus their tier's unowned follow-ups.
    Otherwise (a supervisor's view) every due call, of ``tier`` if given.
    One query: follow-ups joined to their clients, with the primary phone as a scalar
    subquery (needed only to place a client without a recorded zone).
    """
    primary = (
        select(ClientPhone.e164)
        .where(col(ClientPhone.client_id) == col(Client.id))
        .order_by(col(ClientPhone.id))
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(FollowUp, Client, primary)
        .join(Client, col(Client.id) == col(FollowUp.client_id))
        .where(
            col(FollowUp.status) == FollowUpStatus.PENDING,
            col(FollowUp.auto_event).is_(None),
            col(FollowUp.due_at) <= now,
        )
    )
    if operator is not None and operator.role == Role.OPERATOR:
        if not operator.tier:
            return []
        query = query.where(
            col(FollowUp.tier) == operator.tier,
            col(Client.tier) == operator.tier,
            or_(col(FollowUp.owner_id).is_(None), col(FollowUp.owner_id) == operator.id),
        )
    elif tier is not None:
        query = query.where(col(FollowUp.tier) == tier)
    query = query.order_by(col(FollowUp.due_at), col(FollowUp.id)).limit(
        max(1, min(limit, MAX_ITEMS))
    )
    rows = (await session.exec(query)).all()
    items = []
    for fu, client, e164 in rows:
        tz = client_timezone(client, e164, default_tz)
        items.append(
            QueueItem(
                followup_id=fu.id,  # type: ignore[arg-type]
                client=summary(client),
                due_at=fu.due_at,
                when=calendar.describe(fu.due_at, tz),
                kind=fu.kind,
                reason=fu.reason,
                overdue=is_overdue(fu, now),
                escalated=fu.escalation_level > 0,
                escalation_level=fu.escalation_level,
                owner_id=fu.owner_id,
            )
        )
    return items
