"""Clients: creation (straight into the workflow), lookup by phone, and their summary.

The card, what an operator sees on a screen pop, is ``engine/card.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import phones
from engine.definitions import current_version
from engine.errors import InvalidInput
from engine.models import Client, ClientPhone, User
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
    # run_sync hands over AsyncSession's sync_session_class: sqlmodel's Session.
    return await session.run_sync(lambda s: find_by_phone_sync(cast(Session, s), e164, limit))


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
# What a pop shows of each client a number matches, or a missed call of its client (summary).
SUMMARY_COLUMNS = (
    _clients.c.id, _clients.c.name, _clients.c.company, _clients.c.tier, _clients.c.state,
)  # fmt: skip
_MATCHES = HotQuery(
    sa.select(*SUMMARY_COLUMNS)
    .select_from(_clients.join(_phones, _phones.c.client_id == _clients.c.id))
    .where(_phones.c.e164 == sa.bindparam("e164"))
    .order_by(_clients.c.id)
    .limit(sa.bindparam("limit"))
)


def match_rows_sync(session: OrmSession | Connection, e164: str, limit: int = 10) -> list[Any]:
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


_BY_ID = HotQuery(sa.select(*SUMMARY_COLUMNS).where(_clients.c.id == sa.bindparam("cid")))


def summary_row_sync(session: OrmSession | Connection, client_id: int) -> Any | None:
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
