"""Clients by API: the card, search, leads from the pop, outcomes, notes, and export.

Operators see and change only their own tier's clients; every refusal is audited
(engine.access). The outcome of a call goes through the engine's one door, ``tl.apply``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from sqlalchemy import func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import export, phones
from engine.access import ensure_client_visible, refuse
from engine.clients import NewClient, card, summary
from engine.definitions import current_version
from engine.errors import Conflict, InvalidInput, NotFound
from engine.explain import explain_next_call
from engine.models import AuditEntry, Call, Client, ClientNote, ClientPhone, Role, User
from engine.runtime import CallWrapUp, EventRequest
from engine.service import Tierline
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()

SEARCH_LIMIT = 100
NOTE_MAX = 4000
EVENT_NOTE_MAX = 2000


def _client_id(request: web.Request) -> int:
    return int(request.match_info["client_id"])


async def _visible_client(
    db: AsyncSession, tl: Tierline, user: User, client_id: int, action: str
) -> Client:
    client = await db.get(Client, client_id)
    if client is None:
        raise NotFound(f"client {client_id} does not exist")
    await ensure_client_visible(db, user, client, action, tl.clock.now())
    return client


async def _card(tl: Tierline, client_id: int) -> dict[str, object]:
    async with tl.db.session() as db:
        return await card(db, tl.cache, client_id, default_tz=tl.settings.timezone)


@routes.get("/api/clients/{client_id:\\d+}")
async def get_client(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    async with tl.db.session() as db:
        await _visible_client(db, tl, user, _client_id(request), "client.read")
        return web.json_response(
            await card(db, tl.cache, _client_id(request), default_tz=tl.settings.timezone)
        )


# --- search ----------------------------------------------------------------------------------


def _limit(request: web.Request, default: int, most: int) -> int:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be a whole number, got {raw!r}", field="limit") from None
    if value < 1:
        raise InvalidInput("limit must be at least 1", field="limit")
    return min(value, most)


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def _fold(db: AsyncSession, tl: Tierline):  # type: ignore[no-untyped-def]
    """A lower-casing SQL function that knows more than ASCII.

    PostgreSQL's lower() folds Cyrillic; SQLite's folds only A-Z, so "иван" would miss
    "Иван". On SQLite we register Python's str.lower on the connection the session uses.
    """
    if not tl.db.is_sqlite:
        return func.lower
    raw = await (await db.connection()).get_raw_connection()
    await raw.driver_connection.create_function(  # type: ignore[union-attr]
        "tierline_lower", 1, lambda v: v.lower() if isinstance(v, str) else v, deterministic=True
    )
    return func.tierline_lower


@routes.get("/api/clients")
async def search_clients(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    limit = _limit(request, 20, SEARCH_LIMIT)
    q = request.query.get("q", "").strip()
    phone = request.query.get("phone", "").strip()
    tier = request.query.get("tier") or None
    if not q and not phone:
        raise InvalidInput("give q (name or company) or phone to search", field="q")
    query = select(Client)
    if phone:
        e164 = phones.normalize(phone, tl.settings.default_region)
        query = query.where(
            col(Client.id).in_(select(ClientPhone.client_id).where(ClientPhone.e164 == e164))
        )
    async with tl.db.session() as db:
        if q:
            lower = await _fold(db, tl)
            pattern = _like_pattern(q)
            query = query.where(
                or_(
                    lower(col(Client.name)).like(pattern, escape="\\"),
                    lower(col(Client.company)).like(pattern, escape="\\"),
                )
            )
        if user.role == Role.OPERATOR:
            if tier is not None and tier != user.tier:
                raise await refuse(
                    db, user, "client.search", f"tier:{tier}"[:128], tl.clock.now(),
                    f"you work the {user.tier or 'no'} tier, not {tier}",
                )
            # An operator finds only what they may open; other tiers' matches stay unseen
            # (no count, no hint). Opening another tier's card is refused and audited.
            tier = user.tier or ""
        if tier is not None:
            query = query.where(col(Client.tier) == tier)
        rows = (await db.exec(query.order_by(col(Client.name), col(Client.id)).limit(limit))).all()
    return web.json_response({"clients": [summary(c) for c in rows]})


# --- a new lead ------------------------------------------------------------------------------


def _opt_str(body: dict, name: str, most: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text", field=name)
    value = value.strip()
    if len(value) > most:
        raise InvalidInput(f"{name} is longer than {most} characters", field=name)
    return value or None


def _new_client(body: dict, region: str) -> NewClient:
    name = _opt_str(body, "name", 200)
    if not name:
        raise InvalidInput("name is required", field="name")
    raw_phones = body.get("phones")
    if isinstance(raw_phones, str):
        raw_phones = [raw_phones]
    if not isinstance(raw_phones, list) or not raw_phones:
        raise InvalidInput("phones must be a list of at least one number", field="phones")
    for i, raw in enumerate(raw_phones):
        if not isinstance(raw, str):
            raise InvalidInput(f"phones[{i}] must be text", field="phones")
        try:
            phones.normalize(raw, region)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="phones", value=raw, index=i) from None
    email = _opt_str(body, "email", 254)
    if email is not None and ("@" not in email or " " in email):
        raise InvalidInput(f"{email!r} is not an email address", field="email")
    tz = _opt_str(body, "timezone", 64)
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"unknown time zone {tz!r} (expected an IANA name like Europe/Moscow)",
                field="timezone",
            ) from None
    return NewClient(
        name=name,
        phones=[p.strip() for p in raw_phones],
        company=_opt_str(body, "company", 200) or "",
        email=email,
        timezone=tz,
    )


@routes.post("/api/clients")
async def create_lead(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    body = await read_json(request)
    new = _new_client(body, tl.settings.default_region)
    call_id = _opt_str(body, "call_id", 64)
    async with tl.db.session() as db:
        defn = tl.cache.remember(await current_version(db))
    # The operator of the initial tier who takes the call owns the lead; anyone else (a
    # sales operator answering an unknown caller) hands it to that tier's pool.
    mine = user.role == Role.OPERATOR and user.tier == defn.tier_of(defn.initial)
    new = replace(new, owner_id=user.id if mine else None, source="pop" if call_id else "manual")
    client = await tl.add_client(new, actor=user)  # always the initial state
    if call_id:
        async with tl.db.transaction() as db:
            await db.exec(
                update(Call)  # type: ignore[call-overload]
                .where(
                    col(Call.pbx_call_id) == call_id,
                    col(Call.client_id).is_(None),
                    _calls_of(user),
                )
                .values(client_id=client.id)
            )
    return web.json_response(await _card(tl, client.id), status=201)  # type: ignore[arg-type]


def _calls_of(user: User):  # type: ignore[no-untyped-def]
    """The Call rows that are this user's: taken by them, or rung on their extension."""
    mine = col(Call.operator_id) == user.id
    if user.extension:
        return or_(mine, col(Call.extension) == user.extension)
    return mine


# --- outcomes --------------------------------------------------------------------------------


def _aware(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an ISO 8601 date and time", field=name)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            f"{name} {value!r} is not an ISO 8601 date and time", field=name
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(
            f"{name} {value!r} has no UTC offset; send e.g. 2026-11-24T15:00:00+03:00",
            field=name,
        )
    return moment


def _checklist(value: object, stages: list[str]) -> dict[str, bool]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("checklist must be an object of {stage: true|false}", field="checklist")
    for stage, done in value.items():
        if stage not in stages:
            raise InvalidInput(
                f"{stage!r} is not a checklist stage of this step; stages: "
                + (", ".join(stages) or "none"),
                field="checklist",
                allowed=stages,
            )
        if not isinstance(done, bool):
            raise InvalidInput(f"checklist {stage!r} must be true or false", field="checklist")
    return dict(value)


@routes.post("/api/clients/{client_id:\\d+}/events")
async def record_outcome(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    client_id = _client_id(request)
    body = await read_json(request)
    event = body.get("event")
    if not isinstance(event, str) or not event.strip():
        raise InvalidInput("event is required (one of the card's events)", field="event")
    expected = body.get("expected_revision")
    if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
        raise InvalidInput("expected_revision must be a whole number", field="expected_revision")
    note = _opt_str(body, "note", EVENT_NOTE_MAX) or ""
    picked = _aware(body.get("follow_up_at"), "follow_up_at")
    pbx_call = _opt_str(body, "call_id", 64)

    call_ids: list[int] = []
    async with tl.db.session() as db:
        client = await _visible_client(db, tl, user, client_id, "client.event")
        if expected is not None and expected != client.revision:
            # The engine checks again atomically; failing here first keeps a stale checklist
            # from being reported as a 400 when the real news is "someone else moved it".
            raise Conflict(
                f"client {client_id} was changed by someone else (now in {client.state!r}); "
                "reload the card and record the outcome again if it still applies",
                client_id=client_id,
                state=client.state,
                revision=client.revision,
            )
        defn = await tl.cache.get(db, client.workflow_version_id)
        state = defn.states.get(client.state)
        checklist = _checklist(body.get("checklist"), list(state.checklist) if state else [])
        if pbx_call:
            calls = select(Call.id).where(
                col(Call.pbx_call_id) == pbx_call,
                or_(col(Call.client_id) == client_id, col(Call.client_id).is_(None)),
            )
            if user.role == Role.OPERATOR:
                calls = calls.where(_calls_of(user))
            call_ids = [i for i in (await db.exec(calls.order_by(col(Call.id)))).all()]
            if not call_ids:
                raise InvalidInput(
                    f"no call {pbx_call!r} of yours with this client", field="call_id"
                )

    applied = await tl.apply(
        EventRequest(
            client_id=client_id,
            event=event.strip(),
            actor=user,
            expected_revision=expected,
            note=note,
            call_id=call_ids[0] if call_ids else None,
            picked=picked,
            wrap_up=CallWrapUp(tuple(call_ids), checklist, note) if call_ids else None,
        )
    )
    fu = applied.followup
    return web.json_response(
        {
            "client": await _card(tl, client_id),
            "applied": {
                "event": applied.event,
                "from_state": applied.from_state,
                "to_state": applied.to_state,
                "from_tier": applied.from_tier,
                "to_tier": applied.to_tier,
                "kpi": applied.kpi,
                "revision": applied.revision,
                "followup_due_at": fu.due_at.isoformat() if fu is not None else None,
            },
        }
    )


# --- notes and the next call -----------------------------------------------------------------


@routes.post("/api/clients/{client_id:\\d+}/notes")
async def add_note(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    client_id = _client_id(request)
    body = await read_json(request)
    text = _opt_str(body, "text", NOTE_MAX)
    if not text:
        raise InvalidInput("text is required", field="text")
    async with tl.db.session() as db:
        await _visible_client(db, tl, user, client_id, "client.note")
    async with tl.db.transaction() as db:
        note = ClientNote(client_id=client_id, author_id=user.id, at=tl.clock.now(), text=text)
        db.add(note)
        await db.flush()
        out = {"id": note.id, "at": note.at.isoformat(), "text": note.text,
               "author": user.username}
    return web.json_response({"note": out}, status=201)


@routes.get("/api/clients/{client_id:\\d+}/next-call")
async def next_call(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    client_id = _client_id(request)
    async with tl.db.session() as db:
        await _visible_client(db, tl, user, client_id, "client.read")
        explained = await explain_next_call(
            db, tl.cache, client_id, now=tl.clock.now(), default_tz=tl.settings.timezone
        )
    return web.json_response(explained.to_json())


# --- export ----------------------------------------------------------------------------------


@routes.get("/api/export/clients.csv")
async def export_clients(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    tl = request.app[TIERLINE]
    if user.role != Role.ADMIN:
        async with tl.db.session() as db:
            raise await refuse(
                db, user, "export.clients", "clients", tl.clock.now(),
                "exporting the client base needs the admin role",
            )
    started = tl.clock.now()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="clients-{started:%Y%m%d-%H%M}.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    rows, complete = 0, False
    try:
        async for text, n in export.csv_chunks(tl.db):
            await response.write(text.encode("utf-8"))
            rows += n
        await response.write_eof()
        complete = True
    finally:
        # Shielded: a download cut short still leaves its trace (how far it got).
        await asyncio.shield(_audit_export(tl, user, rows, complete))
    return response


async def _audit_export(tl: Tierline, user: User, rows: int, complete: bool) -> None:
    async with tl.db.transaction() as db:
        db.add(
            AuditEntry(
                at=tl.clock.now(),
                actor_id=user.id,
                action="export.clients",
                target="clients",
                allowed=True,
                detail={"rows": rows, "complete": complete},
            )
        )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
