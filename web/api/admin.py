"""The supervisor's live view and norms; the admin's run-time settings."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from engine import presence, runtime_settings
from engine.errors import InvalidInput, NotFound
from engine.missed_calls import missed_calls
from engine.models import AuditEntry, Role, User
from engine.users import public_user
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()
NORMS = ("calls", "long_calls", "presentations", "invoices", "payments")


@routes.get("/api/supervisor/live")
async def live(request: web.Request) -> web.Response:
    user = current_user(request, Role.SUPERVISOR, Role.ADMIN)
    tl = request.app[TIERLINE]
    now = tl.clock.now()
    tz = ZoneInfo(tl.settings.timezone)
    day_start = datetime.combine(now.astimezone(tz).date(), time(0), tz)
    async with tl.db.session() as session:
        statuses = await presence.operator_statuses(session, now)
        attention = await presence.attention_followups(session, now)
        funnel = await presence.day_funnel(session, day_start, day_start + timedelta(days=1))
        missed = await missed_calls(session, viewer=user, now=now)
    return web.json_response(
        {
            "now": now.isoformat(),
            "operators": [s.to_json() for s in statuses],
            "attention": attention,
            "funnel": funnel,
            "missed": [call.to_json() for call in missed],
        }
    )


@routes.put("/api/users/{user_id:\\d+}/norms")
async def set_norms(request: web.Request) -> web.Response:
    actor = current_user(request, Role.SUPERVISOR, Role.ADMIN)
    body = await read_json(request)
    norms = {}
    for name, value in body.items():
        if name not in NORMS:
            raise InvalidInput(f"unknown norm {name!r}; norms are {', '.join(NORMS)}", field=name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidInput(f"{name} must be a whole number ≥ 0", field=name)
        norms[name] = value
    tl = request.app[TIERLINE]
    async with tl.db.transaction() as session:
        user = await session.get(User, int(request.match_info["user_id"]))
        if user is None or user.role != Role.OPERATOR:
            raise NotFound("no such operator")
        user.norms = {**user.norms, **norms}
        session.add(user)
        session.add(
            AuditEntry(
                at=tl.clock.now(),
                actor_id=actor.id,
                action="user.norms",
                target=f"user:{user.username}",
                detail=norms,
            )
        )
    return web.json_response({**public_user(user), "norms": user.norms})


@routes.get("/api/settings")
async def get_settings(request: web.Request) -> web.Response:
    current_user(request, Role.ADMIN, Role.SUPERVISOR)
    tl = request.app[TIERLINE]
    async with tl.db.session() as session:
        calling = await runtime_settings.load(session, runtime_settings.CALLING)
        pbx = await runtime_settings.load(session, runtime_settings.PBX)
    effective = runtime_settings.calling_from(tl.settings, calling)
    configured_pbx = {
        "ami_host": tl.settings.ami_host,
        "ami_port": tl.settings.ami_port,
        "ami_username": tl.settings.ami_username,
        "ami_secret": tl.settings.ami_secret.get_secret_value() if tl.settings.ami_secret else None,
    }
    return web.json_response(
        {
            "calling": {
                "window": effective.window,
                "workdays": effective.workdays,
                "holidays": effective.holidays,
                "slice_times": effective.slice_times,
            },
            "pbx": runtime_settings.masked({**configured_pbx, **pbx}),
            "pbx_note": "PBX connector settings apply when the server next starts",
        }
    )


@routes.put("/api/settings")
async def put_settings(request: web.Request) -> web.StreamResponse:
    admin = current_user(request, Role.ADMIN)
    body = await read_json(request)
    tl = request.app[TIERLINE]
    now = tl.clock.now()
    async with tl.db.transaction() as session:
        if "calling" in body:
            stored = await runtime_settings.load(session, runtime_settings.CALLING)
            merged = {**stored, **runtime_settings.check_calling(body["calling"] or {})}
            runtime_settings.calling_from(tl.settings, merged).policy()
            await runtime_settings.store(session, runtime_settings.CALLING, merged, now)
        if "pbx" in body:
            stored = await runtime_settings.load(session, runtime_settings.PBX)
            await runtime_settings.store(
                session,
                runtime_settings.PBX,
                runtime_settings.check_pbx(body["pbx"] or {}, stored),
                now,
            )
        session.add(
            AuditEntry(
                at=now,
                actor_id=admin.id,
                action="settings.update",
                target=",".join(sorted(k for k in body if k in ("calling", "pbx"))),
                detail={
                    "calling": body.get("calling"),
                    "pbx": runtime_settings.masked(body.get("pbx") or {}),
                },
            )
        )
    await tl.reload_runtime_settings()
    await tl.announce_settings_changed()
    return await get_settings(request)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
