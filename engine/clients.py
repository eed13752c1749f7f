"""Clients: creation (straight into the workflow), lookup by phone, and the card.

The card is what an operator sees on a screen pop; its one query per part keeps a pop
to a handful of indexed reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import phones
from engine.calendar import describe
from engine.definitions import DefinitionCache, current_version
from engine.errors import InvalidInput, NotFound
from engine.followups.planner import client_timezone
from engine.models import (
    Call,
    Client,
    ClientNote,
    ClientPhone,
    FollowUp,
    FollowUpStatus,
    TransitionRecord,
    User,
)
from engine.runtime import Runtime


@dataclass(frozen=True)
class NewClient:
    name: str
    phones: list[str]
    company: str = ""
    email: str | None = None
    timezone: str | None = None
    segment_class: str = "regular"
    custom: dict = field(default_factory=dict)
    source: str = ""
    owner_id: int | None = None


async def create_client(
    session: AsyncSession,
    runtime: Runtime,
    new: NewClient,
    *,
    region: str,
    now: datetime,
    actor: User | None = None,
    state: str | None = None,
) -> Client:
    if not new.name.strip():
        raise InvalidInput("a client needs a name", field="name")
    if not new.phones:
        raise InvalidInput("a client needs at least one phone number", field="phones")
    numbers = [phones.normalize(raw, region) for raw in new.phones]
    version = await current_version(session)
    client = Client(
        name=new.name.strip(),
        company=new.company,
        email=new.email or None,
        timezone=new.timezone,
        segment_class=new.segment_class,
        custom=dict(new.custom),
        source=new.source,
        owner_id=new.owner_id,
        created_at=now,
        updated_at=now,
        workflow_version_id=version.id,  # type: ignore[arg-type]
        state="",
        tier="",
    )
    session.add(client)
    await session.flush()
    for raw, e164 in zip(new.phones, numbers, strict=True):
        session.add(ClientPhone(client_id=client.id, e164=e164, raw=raw))  # type: ignore[arg-type]
    await session.flush()
    await runtime.enroll_in(session, client, state=state, actor=actor)
    return client


async def find_by_phone(session: AsyncSession, e164: str, limit: int = 10) -> list[Client]:
    return await session.run_sync(find_by_phone_sync, e164, limit)


def find_by_phone_sync(session: Session, e164: str, limit: int = 10) -> list[Client]:
    rows = session.exec(
        select(Client)
        .join(ClientPhone, col(ClientPhone.client_id) == col(Client.id))
        .where(ClientPhone.e164 == e164)
        .order_by(col(Client.id))
        .limit(limit)
    )
    return list(rows.unique())


def summary(client: Client) -> dict[str, object]:
    """What a pop shows when the operator may not see the card, or of each candidate."""
    return {
        "id": client.id,
        "name": client.name,
        "company": client.company,
        "tier": client.tier,
        "state": client.state,
    }


async def card(
    session: AsyncSession, cache: DefinitionCache, client_id: int, *, default_tz: str
) -> dict[str, object]:
    return await session.run_sync(lambda s: card_sync(s, cache, client_id, default_tz=default_tz))


def card_sync(
    session: Session, cache: DefinitionCache, client_id: int, *, default_tz: str
) -> dict[str, object]:
    """The operator's card. Synchronous, so the screen pop can build it in one worker-thread
    hop (Database.read); the async API runs the same code through ``run_sync``."""
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"client {client_id} does not exist")
    defn = cache.get_sync(session, client.workflow_version_id)
    numbers = list(
        session.exec(
            select(ClientPhone).where(ClientPhone.client_id == client_id).order_by(ClientPhone.id)
        )
    )
    tz = client_timezone(client, numbers[0].e164 if numbers else None, default_tz)
    followup = (
        session.exec(
            select(FollowUp).where(
                FollowUp.client_id == client_id, FollowUp.status == FollowUpStatus.PENDING
            )
        )
    ).first()
    calls = session.exec(
        select(Call)
        .where(Call.client_id == client_id)
        .order_by(col(Call.started_at).desc())
        .limit(5)
    )
    history = session.exec(
        select(TransitionRecord)
        .where(TransitionRecord.client_id == client_id)
        .order_by(col(TransitionRecord.id).desc())
        .limit(10)
    )
    notes = session.exec(
        select(ClientNote)
        .where(ClientNote.client_id == client_id)
        .order_by(col(ClientNote.id).desc())
        .limit(10)
    )
    owner = session.get(User, client.owner_id) if client.owner_id else None
    state = defn.states.get(client.state)
    return {
        **summary(client),
        "email": client.email,
        "timezone": tz,
        "segment_class": client.segment_class,
        "custom": client.custom,
        "source": client.source,
        "do_not_call": client.do_not_call,
        "revision": client.revision,
        "state_title": state.title if state else client.state,
        "owner": owner.display_name if owner else None,
        "phones": [{"e164": p.e164, "raw": p.raw, "label": p.label} for p in numbers],
        "script": state.script if state else "",
        "checklist": list(state.checklist) if state else [],
        "events": defn.operator_events_from(client.state) if state else [],
        "next_followup": _followup_json(followup, tz),
        "calls": [
            {
                "id": c.id,
                "direction": c.direction,
                "started_at": c.started_at.isoformat(),
                "duration_s": c.duration_s,
                "outcome": c.outcome,
            }
            for c in calls
        ],
        "history": [
            {
                "at": h.at.isoformat(),
                "event": h.event,
                "from": h.from_state,
                "to": h.to_state,
                "note": h.note,
            }
            for h in history
        ],
        "notes": [{"at": n.at.isoformat(), "text": n.text} for n in notes],
    }


def _followup_json(fu: FollowUp | None, tz: str) -> dict[str, object] | None:
    if fu is None:
        return None
    return {
        "id": fu.id,
        "due_at": fu.due_at.isoformat(),
        "when": describe(fu.due_at, tz),
        "kind": fu.kind,
        "reason": fu.reason,
        "escalation_level": fu.escalation_level,
        "automatic": fu.auto_event is not None,
    }
