"""Click-to-dial and linking a call to the client the operator chose.

- ``POST /api/calls/dial`` {client_id, number, override_reason?} -> 202 {"call_id"}
- ``POST /api/calls/{call_id}/link`` {client_id} -> 200 card; ``call_id`` is the PBX call id
  of one of the signed-in operator's own calls (a pop with several matches).
- ``POST /api/calls/missed/dismiss`` {number} -> 200 the entry dismissed: "no call back
  needed" for a number on the caller's missed-calls list (``engine.missed_calls``).
"""

from __future__ import annotations

from aiohttp import web
from sqlmodel import col, or_, select

from cti_adapter.dialer import Dialer
from engine.access import ensure_client_visible
from engine.card import card
from engine.errors import InvalidInput, NotFound
from engine.missed_calls import dismiss
from engine.models import Call, Client
from engine.phones import try_normalize
from web.api.session import read_json
from web.keys import PBX, TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()

DIALER = web.AppKey("dialer", Dialer)


def _int_field(body: dict, name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer", field=name)
    return value


@routes.post("/api/calls/dial")
async def dial(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await read_json(request)
    client_id = _int_field(body, "client_id")
    number = body.get("number")
    if not isinstance(number, str) or not number.strip():
        raise InvalidInput("number must be the phone number to dial", field="number")
    reason = body.get("override_reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("override_reason must be text", field="override_reason")
    dialled = await request.app[DIALER].dial(user, client_id, number, reason)
    return web.json_response(
        {"call_id": dialled.call_id, "number": dialled.number, "overridden": dialled.overridden},
        status=202,
    )


@routes.post("/api/calls/missed/dismiss")
async def dismiss_missed(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await read_json(request)
    number = body.get("number")
    if not isinstance(number, str) or not number.strip():
        raise InvalidInput("number must be the missed call's number", field="number")
    tl = request.app[TIERLINE]
    # Stored as normalised ("8 916 …" and "+7 916 …" are one caller), or as the PBX sent it.
    stored = try_normalize(number, tl.settings.default_region) or number.strip()
    async with tl.db.session() as session:
        dismissed = await dismiss(session, user, stored, tl.clock.now())
    return web.json_response(dismissed.to_json())


@routes.post("/api/calls/{call_id}/link")
async def link(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await read_json(request)
    client_id = _int_field(body, "client_id")
    call_id = request.match_info["call_id"]
    tl = request.app[TIERLINE]
    now = tl.clock.now()
    async with tl.db.transaction() as session:
        mine = [Call.operator_id == user.id]
        if user.extension:
            mine.append(Call.extension == user.extension)
        call = (
            await session.exec(
                select(Call)
                .where(Call.pbx_call_id == call_id, or_(*mine))
                .order_by(col(Call.id).desc())
            )
        ).first()
        if call is None:
            raise NotFound(f"you have no call {call_id!r}", field="call_id")
        client = await session.get(Client, client_id)
        if client is None:
            raise NotFound(f"client {client_id} does not exist", field="client_id")
        await ensure_client_visible(session, user, client, "call.link", now)
        call.client_id = client_id
        session.add(call)
    async with tl.db.session() as session:
        shown = await card(session, tl.cache, client_id, default_tz=tl.settings.timezone)
    return web.json_response(shown)


def setup(app: web.Application) -> None:
    app[DIALER] = Dialer(app[TIERLINE], app.get(PBX))
    app.add_routes(routes)
