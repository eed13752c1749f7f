"""Clients: creation (straight into the workflow), lookup by phone, and the card.

The card is what an operator sees on a screen pop; its one query per part keeps a pop
to a handful of indexed reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
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
from engine.storage.hot import HotQuery, connection_of


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


# The pop path's statements are built once: a prebuilt Core select keeps its cache key, so
# running it costs neither statement construction nor ORM entity loading (measured: those
# were most of a pop's CPU).
_clients, _phones = Client.__table__, ClientPhone.__table__  # type: ignore[attr-defined]
_SUMMARY = (_clients.c.id, _clients.c.name, _clients.c.company, _clients.c.tier, _clients.c.state)
_MATCHES = HotQuery(
    sa.select(*_SUMMARY)
    .select_from(_clients.join(_phones, _phones.c.client_id == _clients.c.id))
    .where(_phones.c.e164 == sa.bindparam("e164"))
    .order_by(_clients.c.id)
    .limit(sa.bindparam("limit"))
)


def match_rows_sync(session: Session | Connection, e164: str, limit: int = 10) -> list[Any]:
    """``find_by_phone_sync`` as plain rows (id, name, company, tier, state), distinct and
    ordered by id: what a screen pop needs, without loading entities."""
    rows = _MATCHES.rows(connection_of(session), {"e164": e164, "limit": limit})
    seen: set[int] = set()
    out = []
    for row in rows:
        if row.id not in seen:  # a client with the number twice
            seen.add(row.id)
            out.append(row)
    return out


_BY_ID = HotQuery(sa.select(*_SUMMARY).where(_clients.c.id == sa.bindparam("cid")))


def summary_row_sync(session: Session | Connection, client_id: int) -> Any | None:
    """One client's summary columns as a plain row, the shape ``match_rows_sync`` gives."""
    return _BY_ID.first(connection_of(session), {"cid": client_id})


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


_users, _followups = User.__table__, FollowUp.__table__  # type: ignore[attr-defined]
_calls, _history = Call.__table__, TransitionRecord.__table__  # type: ignore[attr-defined]
_notes = ClientNote.__table__  # type: ignore[attr-defined]
_CID = sa.bindparam("cid")
# The client, its owner's name and its one pending follow-up (a unique index says one).
_CARD_HEAD = HotQuery(
    sa.select(
        _clients,
        _users.c.display_name.label("owner_name"),
        _followups.c.id.label("fu_id"),
        _followups.c.due_at.label("fu_due_at"),
        _followups.c.kind.label("fu_kind"),
        _followups.c.reason.label("fu_reason"),
        _followups.c.escalation_level.label("fu_escalation_level"),
        _followups.c.auto_event.label("fu_auto_event"),
    )
    .select_from(
        _clients.outerjoin(_users, _users.c.id == _clients.c.owner_id).outerjoin(
            _followups,
            sa.and_(
                _followups.c.client_id == _clients.c.id,
                # Inline, not a bound parameter: SQLite uses the partial index
                # ux_followups_one_pending only for a literal (139 µs -> 24 µs per card).
                _followups.c.status == sa.literal_column(f"'{FollowUpStatus.PENDING.value}'"),
            ),
        )
    )
    .where(_clients.c.id == _CID)
)
_CARD_PHONES = HotQuery(
    sa.select(_phones.c.e164, _phones.c.raw, _phones.c.label)
    .where(_phones.c.client_id == _CID)
    .order_by(_phones.c.id)
)
_CARD_CALLS = HotQuery(
    sa.select(
        _calls.c.id, _calls.c.direction, _calls.c.started_at, _calls.c.duration_s, _calls.c.outcome
    )
    .where(_calls.c.client_id == _CID)
    .order_by(_calls.c.started_at.desc())
    .limit(5)
)
_CARD_HISTORY = HotQuery(
    sa.select(
        _history.c.at, _history.c.event, _history.c.from_state, _history.c.to_state,
        _history.c.note,
    )
    .where(_history.c.client_id == _CID)
    .order_by(_history.c.id.desc())
    .limit(10)
)  # fmt: skip
_CARD_NOTES = HotQuery(
    sa.select(_notes.c.at, _notes.c.text)
    .where(_notes.c.client_id == _CID)
    .order_by(_notes.c.id.desc())
    .limit(10)
)


def card_sync(
    session: Session | Connection, cache: DefinitionCache, client_id: int, *, default_tz: str
) -> dict[str, object]:
    """The operator's card. Synchronous, so the screen pop can build it in one worker-thread
    hop (Database.read); the async API runs the same code through ``run_sync``. Five
    prebuilt Core selects, no entities: this is the screen pop's hot path."""
    conn = connection_of(session)
    params = {"cid": client_id}
    client = _CARD_HEAD.first(conn, params)
    if client is None:
        raise NotFound(f"client {client_id} does not exist")
    defn = cache.get_sync(conn, client.workflow_version_id)
    numbers = _CARD_PHONES.rows(conn, params)
    # client_timezone reads only .timezone: the row has it.
    tz = client_timezone(client, numbers[0].e164 if numbers else None, default_tz)  # type: ignore[arg-type]
    calls = _CARD_CALLS.rows(conn, params)
    history = _CARD_HISTORY.rows(conn, params)
    notes = _CARD_NOTES.rows(conn, params)
    state = defn.states.get(client.state)
    followup = None
    if client.fu_id is not None:
        followup = {
            "id": client.fu_id,
            "due_at": client.fu_due_at.isoformat(),
            "when": describe(client.fu_due_at, tz),
            "kind": client.fu_kind,
            "reason": client.fu_reason,
            "escalation_level": client.fu_escalation_level,
            "automatic": client.fu_auto_event is not None,
        }
    return {
        **summary(client),  # type: ignore[arg-type]
        "email": client.email,
        "timezone": tz,
        "segment_class": client.segment_class,
        "custom": client.custom,
        "source": client.source,
        "do_not_call": client.do_not_call,
        "revision": client.revision,
        "state_title": state.title if state else client.state,
        "owner": client.owner_name,
        "phones": [{"e164": p.e164, "raw": p.raw, "label": p.label} for p in numbers],
        "script": state.script if state else "",
        "checklist": list(state.checklist) if state else [],
        "events": defn.operator_events_from(client.state) if state else [],
        "next_followup": followup,
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
