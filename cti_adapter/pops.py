"""Screen pops and call-state messages: who gets them and what they show.

A pop is the one thing on the hot path of a ringing call, so it is a handful of indexed
reads: the extension's operator (cached), the clients with the caller's number, and the
card when exactly one client matches and the operator may see it. Messages are plain JSON
dicts; on the bus (Redis included) they travel encoded, in an envelope (``addressed``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from cti_adapter.directory import Operator
from engine import phones
from engine.access import can_see_client
from engine.bus import to_json
from engine.card import card_sync, match_cards_sync
from engine.clients import summary, summary_row_sync
from engine.definitions import DefinitionCache
from engine.models import Call, CallStatus, Client, User

POPS_CHANNEL = "pops"
MAX_MATCHES = 10

# A parse costs ~25–40 µs: a caller who rings again is not parsed twice, nor is an event the
# log path records without a pop ahead of it (pop after commit, nobody on the extension).
try_normalize = functools.lru_cache(maxsize=8192)(phones.try_normalize)


@dataclass(frozen=True)
class Lookup:
    number: str  # E.164, or the raw text when it is not a valid number
    e164: str | None
    # Clients or plain rows with (at least) their summary columns (id, name, company, tier,
    # state): a pop needs no more than that of each match, except the one client's card.
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
    the operator's choice) shows that client whatever else shares the number. On SQLite's
    hot path the one client's row carries its card (``engine.card.match_cards_sync``)."""
    searched = None
    if linked_client_id is None and phones.looks_e164(raw):
        # Many trunks send E.164 already. A stored number is canonical (normalize wrote it),
        # so one equal to ``raw`` proves ``raw`` is its own normal form: no parse (~40 µs,
        # a third of a pop's lookup when the caller is not in the parse cache).
        rows = match_cards_sync(session, raw, limit=MAX_MATCHES)
        if rows:
            return Lookup(raw, raw, rows)
        searched = raw
    e164 = try_normalize(raw, region) if raw.strip() else None
    number = e164 or raw
    if linked_client_id is not None:
        linked = summary_row_sync(session, linked_client_id)
        if linked is not None:
            return Lookup(number, e164, [linked])
    if e164 is None:
        return Lookup(number, None, [])
    if e164 == searched:  # an unknown caller: the same search again would find nobody again
        return Lookup(number, e164, [])
    return Lookup(number, e164, match_cards_sync(session, e164, limit=MAX_MATCHES))


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
            # On SQLite's hot path ``only`` carries the card already (match_cards_sync).
            client = card_sync(session, cache, only.id, default_tz=default_tz, found=only)
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
        "written": as_written(found, client),
        "client": client,
        "matches": matches,
        "sent_at": iso(sent_at or datetime.now(UTC)),
    }


def as_written(found: Lookup, card: dict[str, Any] | None) -> str:
    """The caller's number as the operator reads it: as the card writes it when the card has
    it, else formatted for people ("+7 916 123-45-67"; only a pop with no card pays for it)."""
    for phone in (card or {}).get("phones", ()):
        if phone["e164"] == found.e164 and phone["raw"]:
            return str(phone["raw"])
    return phones.written(found.number)


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
        if call.status == CallStatus.TAKEN_ELSEWHERE:
            message["reason"] = "answered_elsewhere"  # nothing to wrap up: the pop closes
        elif call.answered_at is None:
            message["reason"] = "not_answered"
    return message


def addressed(user_id: int, message: dict[str, object]) -> dict[str, object]:
    """The envelope on the ``pops`` channel: the hub writes ``text`` to one user's sockets.

    The message travels encoded, so a pop is encoded once, in the reader thread beside its
    card, and the hub frames the text as it comes: carried as a dict, each card was encoded
    and decoded by the bus and encoded again by the hub, ~7 % of the loop's time at 300
    events/s. ``pop`` is a screen pop's call id: each socket gets one pop per call.
    """
    return {"user_id": user_id, "pop": pop_key(message), "text": to_json(message)}


def pop_key(message: dict[str, Any]) -> str | None:
    """The call id a socket shows one pop for, if ``message`` is a screen pop."""
    call_id = message.get("call_id")
    return call_id if message.get("type") == "screen_pop" and isinstance(call_id, str) else None


def unaddressed(envelope: dict[str, Any]) -> dict[str, Any]:
    """The message inside an ``addressed`` envelope."""
    message: dict[str, Any] = json.loads(envelope["text"])
    return message


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class HelloCalls:
    """What a (re)connecting browser is told of its operator's calls."""

    live: list[dict[str, object]]  # pops of the calls still ringing or in progress
    ended: list[dict[str, object]]  # ``call_state`` hangups of the latest that ended


async def calls_for_hello(
    session: AsyncSession,
    cache: DefinitionCache,
    viewer: User,
    *,
    region: str,
    default_tz: str,
    since: datetime,
    limit: int = 20,
) -> HelloCalls:
    """The viewer's calls started since ``since``, in one read: pops of those still ringing
    or in progress, and the hangups of the latest that ended, so a browser offline meanwhile
    puts the pops it still shows right (a colleague's answer closes one; a missed call says
    so). One statement, not one per list: a reconnect storm of 10,000 browsers after a
    restart opened in 36 s with one, 52–59 s with two (bench/sockets_10k.py)."""
    if not viewer.extension:
        return HelloCalls([], [])
    newest = await session.exec(
        select(Call)
        .where(Call.extension == viewer.extension, Call.started_at >= since)
        .order_by(Call.started_at.desc())  # type: ignore[attr-defined]
        .limit(2 * limit)
    )
    calls = list(newest)[::-1]  # oldest first
    live = []
    for call in [c for c in calls if c.status in (CallStatus.RINGING, CallStatus.ANSWERED)][
        -limit:
    ]:
        found = await lookup(session, call.number, region, linked_client_id=call.client_id)
        pop = await screen_pop(
            session, cache, viewer, call.pbx_call_id, found, default_tz=default_tz
        )
        pop["state"] = call.status
        pop["direction"] = call.direction
        live.append(pop)
    ended = [call_state(c, "hangup") for c in calls if c.ended_at is not None][-limit:]
    return HelloCalls(live, ended)
