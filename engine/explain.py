"""Why the next call to a client is when it is, in words an operator can repeat.

E.g. "Next call Mon 23 Nov 11:00 client time (Europe/Moscow): call back 2h after the last
step, attempt 2; calling window 09:00–20:00 client time. 1 unanswered attempt of 5 so far;
after 5, give_up." Built from the pending follow-up (its planner reason, its rule in the
client's workflow version) and the client's last steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import calendar
from engine.definitions import DefinitionCache
from engine.errors import NotFound
from engine.followups.planner import client_timezone
from engine.models import Client, ClientPhone, FollowUp, FollowUpStatus, TransitionRecord, User


@dataclass(frozen=True)
class NextCall:
    text: str
    due_at: datetime | None
    reason: str
    timezone: str
    kind: str | None = None
    automatic: bool = False
    overdue: bool = False
    escalation_level: int = 0
    steps: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "reason": self.reason,
            "timezone": self.timezone,
            "kind": self.kind,
            "automatic": self.automatic,
            "overdue": self.overdue,
            "escalation_level": self.escalation_level,
            "steps": self.steps,
        }


async def explain_next_call(
    session: AsyncSession,
    cache: DefinitionCache,
    client_id: int,
    *,
    now: datetime,
    default_tz: str,
    steps: int = 5,
) -> NextCall:
    client = await session.get(Client, client_id)
    if client is None:
        raise NotFound(f"client {client_id} does not exist")
    defn = await cache.get(session, client.workflow_version_id)
    e164 = (
        await session.exec(
            select(ClientPhone.e164)
            .where(ClientPhone.client_id == client_id)
            .order_by(col(ClientPhone.id))
            .limit(1)
        )
    ).first()
    tz = client_timezone(client, e164, default_tz)
    fu = (
        await session.exec(
            select(FollowUp).where(
                FollowUp.client_id == client_id, FollowUp.status == FollowUpStatus.PENDING
            )
        )
    ).first()
    history = await _last_steps(session, client_id, steps)
    state = defn.states.get(client.state)
    title = state.title if state else client.state
    if fu is None:
        why = (
            f"{title} is a final state"
            if state is not None and state.final
            else f"nothing is scheduled in {title}"
        )
        return NextCall(
            text=f"No further calls: {why}.", due_at=None, reason="", timezone=tz, steps=history
        )

    when = calendar.describe(fu.due_at, tz)
    why = _strip_when(fu.reason, when)
    if fu.auto_event:
        lead = f"Automatic {fu.auto_event.replace('_', ' ')}"
    else:
        lead = "Next call"
    sentences = [f"{lead} {when}: {why}." if why else f"{lead} {when}."]
    rule = defn.states[fu.state].follow_up if fu.state in defn.states else None
    if not fu.auto_event and rule is not None and rule.max_attempts and fu.attempt:
        plural = "s" if fu.attempt != 1 else ""
        sentences.append(
            f"{fu.attempt} unanswered attempt{plural} of {rule.max_attempts} so far; "
            f"after {rule.max_attempts}, {rule.on_max_attempts}."
        )
    overdue = fu.due_at < now and not fu.auto_event
    if overdue:
        sentences.append(f"Overdue since {when}.")
    if fu.escalation_level:
        steps_up = [s for s in fu.escalation_steps.split(",") if s]
        to = steps_up[fu.escalation_level - 1] if fu.escalation_level <= len(steps_up) else "?"
        sentences.append(f"Escalated to the {to} (level {fu.escalation_level}).")
    return NextCall(
        text=" ".join(sentences),
        due_at=fu.due_at,
        reason=fu.reason,
        timezone=tz,
        kind=fu.kind,
        automatic=fu.auto_event is not None,
        overdue=overdue,
        escalation_level=fu.escalation_level,
        steps=history,
    )


def _strip_when(reason: str, when: str) -> str:
    """The planner's reason starts with the due time; the text says it once, up front."""
    if reason.startswith(when + ": "):
        return reason[len(when) + 2 :].strip().rstrip(".")
    head, sep, rest = reason.partition(": ")
    if sep and head.endswith(")") and "client time (" in head:  # described in another zone
        return rest.strip().rstrip(".")
    return reason.strip().rstrip(".")


async def _last_steps(session: AsyncSession, client_id: int, limit: int) -> list[dict[str, object]]:
    rows = (
        await session.exec(
            select(TransitionRecord, User.username)
            .outerjoin(User, col(User.id) == col(TransitionRecord.actor_id))
            .where(TransitionRecord.client_id == client_id)
            .order_by(col(TransitionRecord.id).desc())
            .limit(limit)
        )
    ).all()
    return [
        {
            "at": t.at.isoformat(),
            "event": t.event,
            "from": t.from_state,
            "to": t.to_state,
            "by": username or "system",
            "note": t.note,
        }
        for t, username in rows
    ]
