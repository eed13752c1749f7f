"""``POST /api/clients/{id}/events``: an operator records a call's outcome.

The outcome goes through the engine's one door, ``tl.apply``, with the revision the operator
saw (a stale card is a 409), the checklist of the client's current step, the follow-up time
agreed with the client, and the PBX call it wraps up.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from sqlalchemy import or_
from sqlmodel import col, select

from engine.errors import Conflict, InvalidInput
from engine.models import Call, Role
from engine.runtime import CallWrapUp, EventRequest
from web.api.clients import calls_of, card_json, client_id_of, opt_str, visible_client
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()

EVENT_NOTE_MAX = 2000


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
    client_id = client_id_of(request)
    body = await read_json(request)
    event = body.get("event")
    if not isinstance(event, str) or not event.strip():
        raise InvalidInput("event is required (one of the card's events)", field="event")
    expected = body.get("expected_revision")
    if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
        raise InvalidInput("expected_revision must be a whole number", field="expected_revision")
    note = opt_str(body, "note", EVENT_NOTE_MAX) or ""
    picked = _aware(body.get("follow_up_at"), "follow_up_at")
    pbx_call = opt_str(body, "call_id", 64)

    call_ids: list[int] = []
    async with tl.db.session() as db:
        client = await visible_client(db, tl, user, client_id, "client.event")
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
                calls = calls.where(calls_of(user))
            call_ids = [i for i in (await db.exec(calls.order_by(col(Call.id)))).all() if i]
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
            "client": await card_json(tl, client_id),
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


def setup(app: web.Application) -> None:
    app.add_routes(routes)
