"""Clients by API: the card, search, leads from the pop, notes, the next call (outcomes:
``web/api/outcomes.py``; the CSV export: ``web/api/export_csv.py``).

Operators see and change only their own tier's clients; every refusal is audited
(engine.access). The helpers that check who may see a client serve the other client routes.
"""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from sqlalchemy import func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import phones
from engine.access import ensure_client_visible, refuse
from engine.card import card
from engine.clients import NewClient, summary
from engine.definitions import current_version
from engine.errors import InvalidInput, NotFound
from engine.explain import explain_next_call
from engine.missed_calls import MISSED_CALL_WINDOW
from engine.models import Call, Client, ClientNote, ClientPhone, Role, User
from engine.service import Tierline
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()

SEARCH_LIMIT = 100
NOTE_MAX = 4000


def client_id_of(request: web.Request) -> int:
    return int(request.match_info["client_id"])


async def visible_client(
    db: AsyncSession, tl: Tierline, user: User, client_id: int, action: str
) -> Client:
    client = await db.get(Client, client_id)
    if client is None:
        raise NotFound(f"client {client_id} does not exist")
    await ensure_client_visible(db, user, client, action, tl.clock.now())
    return client


async def card_json(tl: Tierline, client_id: int) -> dict[str, object]:
    async with tl.db.session() as db:
        return await card(db, tl.cache, client_id, default_tz=tl.settings.timezone)


@routes.get("/api/clients/{client_id:\\d+}")
async def get_client(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    async with tl.db.session() as db:
        await visible_client(db, tl, user, client_id_of(request), "client.read")
        return web.json_response(
            await card(db, tl.cache, client_id_of(request), default_tz=tl.settings.timezone)
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


async def _fold(db: AsyncSession, tl: Tierline):
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
                    db,
                    user,
                    "client.search",
                    f"tier:{tier}"[:128],
                    tl.clock.now(),
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


def opt_str(body: dict, name: str, most: int) -> str | None:
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
    name = opt_str(body, "name", 200)
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
    email = opt_str(body, "email", 254)
    if email is not None and ("@" not in email or " " in email):
        raise InvalidInput(f"{email!r} is not an email address", field="email")
    tz = opt_str(body, "timezone", 64)
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
        company=opt_str(body, "company", 200) or "",
        email=email,
        timezone=tz,
    )


@routes.post("/api/clients")
async def create_lead(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    body = await read_json(request)
    new = _new_client(body, tl.settings.default_region)
    call_id = opt_str(body, "call_id", 64)
    async with tl.db.session() as db:
        defn = tl.cache.remember(await current_version(db))
    # The operator of the initial tier who takes the call owns the lead; anyone else (a
    # sales operator answering an unknown caller) hands it to that tier's pool.
    mine = user.role == Role.OPERATOR and user.tier == defn.tier_of(defn.initial)
    new = replace(new, owner_id=user.id if mine else None, source="pop" if call_id else "manual")
    client = await tl.add_client(new, actor=user)  # always the initial state
    async with tl.db.transaction() as db:
        # The call it came from, and the lead's numbers' calls of the missed-call window that
        # rang this operator as an unknown caller's: they are the lead's calls (its card lists
        # them; its missed calls are called back as a client's, not a stranger's).
        numbers = select(ClientPhone.e164).where(col(ClientPhone.client_id) == client.id)
        theirs = col(Call.number).in_(numbers) & (
            col(Call.started_at) > tl.clock.now() - MISSED_CALL_WINDOW
        )
        await db.exec(
            update(Call)
            .where(
                (col(Call.pbx_call_id) == call_id) | theirs if call_id else theirs,
                col(Call.client_id).is_(None),
                calls_of(user),
            )
            .values(client_id=client.id)
        )
    return web.json_response(await card_json(tl, client.id), status=201)  # type: ignore[arg-type]


def calls_of(user: User):
    """The Call rows that are this user's: taken by them, or rung on their extension."""
    mine = col(Call.operator_id) == user.id
    if user.extension:
        return or_(mine, col(Call.extension) == user.extension)
    return mine


# --- notes and the next call -----------------------------------------------------------------


@routes.post("/api/clients/{client_id:\\d+}/notes")
async def add_note(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    client_id = client_id_of(request)
    body = await read_json(request)
    text = opt_str(body, "text", NOTE_MAX)
    if not text:
        raise InvalidInput("text is required", field="text")
    async with tl.db.session() as db:
        await visible_client(db, tl, user, client_id, "client.note")
    async with tl.db.transaction() as db:
        note = ClientNote(client_id=client_id, author_id=user.id, at=tl.clock.now(), text=text)
        db.add(note)
        await db.flush()
        out = {"id": note.id, "at": note.at.isoformat(), "text": note.text, "author": user.username}
    return web.json_response({"note": out}, status=201)


@routes.get("/api/clients/{client_id:\\d+}/next-call")
async def next_call(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    client_id = client_id_of(request)
    async with tl.db.session() as db:
        await visible_client(db, tl, user, client_id, "client.read")
        explained = await explain_next_call(
            db, tl.cache, client_id, now=tl.clock.now(), default_tz=tl.settings.timezone
        )
    return web.json_response(explained.to_json())


def setup(app: web.Application) -> None:
    app.add_routes(routes)
