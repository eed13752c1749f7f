"""Screen pops and call-state messages: who gets them and what they show.

A pop is the one thing on the hot path of a ringing call, so it is a handful of indexed
reads: the extension's operator (cached), the clients with the caller's number, and the
card when exactly one client matches and the operator may see it. Messages are plain JSON
dicts (they cross the bus, Redis included).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import phones
from engine.access import can_see_client
from engine.clients import card_sync, match_rows_sync, summary, summary_row_sync
from engine.definitions import DefinitionCache
from engine.models import Call, Client, User
from engine.storage.database import Database

log = logging.getLogger("tierline.cti")

POPS_CHANNEL = "pops"
MAX_MATCHES = 10

# The pop path and the log path both normalise each event's number (~25 µs a parse): one
# parse serves both, and a caller who rings again.
try_normalize = functools.lru_cache(maxsize=8192)(phones.try_normalize)


class OperatorDirectory:
    """Extension -> the active user on it, cached per extension for ``ttl`` seconds.

    Every ringing event asks this; users change rarely. An extension asked for the first
    time is read at once (in the worker thread, Database.read); after that the answer is
    served from the cache, and once older than ``ttl`` it is served while a background
    read refreshes it (with every other stale one), so a pop never waits for the directory
    twice. Misses are cached
    too: a trunk or a ring-group extension with nobody on it costs no query per event.
    :meth:`invalidate` forgets entries: the users API announces every change of a user's
    extension, tier or state on the bus (``USERS_CHANNEL``), and each node's pipeline calls
    it, so the TTL is only the safety net for a change made behind the API. Measured: reloading
    a whole 10,000-user department every few seconds stalled the event loop for a second
    (a CPU-bound worker thread starves the loop of the GIL); one row at a time does not.
    """

    def __init__(
        self, db: Database, *, ttl: float = 60.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.ttl = ttl
        self._now = now
        self._entries: dict[str, tuple[float, Operator | None]] = {}
        self._stale: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None

    async def by_extension(self, extension: str) -> Operator | None:
        hit = self._entries.get(extension)
        if hit is None:
            return await self._load(extension)
        if hit[0] <= self._now():
            # Stale: served as is; one background read refreshes every stale extension
            # asked for meanwhile (one query, one thread hop, however many).
            self._stale.add(extension)
            if self._refresher is None:
                self._refresher = asyncio.get_running_loop().create_task(self._refresh())
        return hit[1]

    async def _load(self, extension: str) -> Operator | None:
        found = await self.db.read(lambda s: _active_users(s, [extension]))
        user = found.get(extension)
        self._entries[extension] = (self._now() + self.ttl, user)
        return user

    async def _refresh(self) -> None:
        try:
            while self._stale:
                wanted = list(self._stale)[:500]
                self._stale.difference_update(wanted)
                found = await self.db.read(lambda s, w=wanted: _active_users(s, w))
                expires = self._now() + self.ttl
                for extension in wanted:
                    self._entries[extension] = (expires, found.get(extension))
        except Exception as exc:
            log.warning("operator directory not refreshed: %s", exc)
            self._stale.clear()
        finally:
            self._refresher = None

    def invalidate(self, extension: str | None = None) -> None:
        if extension is None:
            self._entries.clear()
        else:
            self._entries.pop(extension, None)


_USERS = User.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Operator:
    """What the pop path needs of the user on an extension, as a plain record: building
    SQLModel entities in a refresh of 500 extensions held the GIL for ~25 ms, a stall every
    TTL in the middle of the pops."""

    id: int
    role: str
    tier: str | None
    extension: str


def _active_users(conn: Connection, extensions: list[str]) -> dict[str, Operator]:
    rows = conn.execute(
        sa.select(_USERS.c.id, _USERS.c.role, _USERS.c.tier, _USERS.c.extension)
        .where(_USERS.c.extension.in_(extensions), _USERS.c.active.is_(True))
        .order_by(_USERS.c.id)
    )
    found: dict[str, Operator] = {}
    for row in rows:
        found.setdefault(row.extension, Operator(row.id, row.role, row.tier, row.extension))
    return found


@dataclass(frozen=True)
class Lookup:
    number: str  # E.164, or the raw text when it is not a valid number
    e164: str | None
    # Clients or plain rows with their summary columns (id, name, company, tier, state):
    # a pop needs no more than that of each match.
    clients: Sequence[Any]


async def lookup(
    session: AsyncSession, raw: str, region: str, *, linked_client_id: int | None = None
) -> Lookup:
    return await session.run_sync(
        lambda s: lookup_sync(s, raw, region, linked_client_id=linked_client_id)
    )


def lookup_sync(
    session: Session | Connection, raw: str, region: str, *, linked_client_id: int | None = None
) -> Lookup:
    """The clients a number belongs to. A call already linked to a client (click-to-dial,
    the operator's choice) shows that client whatever else shares the number."""
    e164 = try_normalize(raw, region) if raw.strip() else None
    number = e164 or raw
    if linked_client_id is not None:
        linked = summary_row_sync(session, linked_client_id)
        if linked is not None:
            return Lookup(number, e164, [linked])
    if e164 is None:
        return Lookup(number, None, [])
    return Lookup(number, e164, match_rows_sync(session, e164, limit=MAX_MATCHES))


def restricted(client: Client) -> dict[str, object]:
    """What an operator of another tier learns: that the caller is someone else's client."""
    return {"id": client.id, "tier": client.tier, "restricted": True}


async def screen_pop(
    session: AsyncSession,
    cache: DefinitionCache,
    viewer: User,
    call_id: str,
    found: Lookup,
    *,
    default_tz: str,
    sent_at: datetime | None = None,
) -> dict[str, object]:
    return await session.run_sync(
        lambda s: screen_pop_sync(
            s, cache, viewer, call_id, found, default_tz=default_tz, sent_at=sent_at
        )
    )


def screen_pop_sync(
    session: Session | Connection,
    cache: DefinitionCache,
    viewer: User | Operator,
    call_id: str,
    found: Lookup,
    *,
    default_tz: str,
    sent_at: datetime | None = None,
) -> dict[str, object]:
    """The ``screen_pop`` message of DESIGN.md for ``viewer``."""
    client: dict[str, object] | None = None
    matches: list[dict[str, object]] = []
    if len(found.clients) == 1:
        only = found.clients[0]
        if can_see_client(viewer, only):
            client = card_sync(session, cache, only.id, default_tz=default_tz)  # type: ignore[arg-type]
        else:
            client = restricted(only)
    elif found.clients:
        matches = [
            summary(c) if can_see_client(viewer, c) else restricted(c) for c in found.clients
        ]
    return {
        "type": "screen_pop",
        "call_id": call_id,
        "number": found.number,
        "client": client,
        "matches": matches,
        "sent_at": iso(sent_at or datetime.now(UTC)),
    }


def call_state(call: Call | Any, state: str) -> dict[str, object]:
    """The ``call_state`` message for an answered or hung-up call (a ``Call``, or a row with
    its columns)."""
    message: dict[str, object] = {
        "type": "call_state",
        "call_id": call.pbx_call_id,
        "state": state,
        "extension": call.extension,
    }
    if state == "hangup":
        message["duration_s"] = call.duration_s or 0
        message["long_call"] = call.long_call
        if call.answered_at is None:
            message["reason"] = "not_answered"
    return message


def addressed(user_id: int, message: dict[str, object]) -> dict[str, object]:
    """The envelope on the ``pops`` channel: the hub delivers ``message`` to one user."""
    return {"user_id": user_id, "message": message}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def live_calls(
    session: AsyncSession,
    cache: DefinitionCache,
    viewer: User,
    *,
    region: str,
    default_tz: str,
    since: datetime,
) -> list[dict[str, object]]:
    """Pops of the viewer's calls still ringing or in progress (for a reconnecting browser)."""
    if not viewer.extension:
        return []
    calls = await session.exec(
        select(Call)
        .where(
            Call.extension == viewer.extension,
            Call.status.in_(("ringing", "answered")),  # type: ignore[attr-defined]
            Call.started_at >= since,
        )
        .order_by(Call.started_at)  # type: ignore[arg-type]
        .limit(20)
    )
    out = []
    for call in list(calls):
        found = await lookup(session, call.number, region, linked_client_id=call.client_id)
        pop = await screen_pop(
            session, cache, viewer, call.pbx_call_id, found, default_tz=default_tz
        )
        pop["state"] = call.status
        pop["direction"] = call.direction
        out.append(pop)
    return out
