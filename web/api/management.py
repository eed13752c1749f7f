"""Management for supervisors and admins: pilot economics and segment classes (the contact
import: ``web/api/imports.py``).

- GET  /api/economics?from=&to= (and /api/economics.csv): per operator and on average;
- GET/PUT /api/settings/economics, GET/PUT /api/settings/segment-rules;
- POST /api/segments/reclassify: apply the stored rules to every client.

Operators get 403 on every route here (``staff_only``), and the refusal is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from engine import economics as eco
from engine import runtime_settings, segment_classes
from engine.access import refuse
from engine.models import AuditEntry, Role, User
from engine.service import Tierline
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

log = logging.getLogger("tierline.web")
routes = web.RouteTableDef()
STAFF = (Role.SUPERVISOR, Role.ADMIN)


async def staff_only(request: web.Request, action: str) -> tuple[User, Tierline]:
    """The signed-in supervisor or admin; anyone else is refused, and that is audited."""
    user = current_user(request)
    tl = request.app[TIERLINE]
    if user.role not in STAFF:
        async with tl.db.session() as db:
            raise await refuse(
                db, user, action, request.path[:128], tl.clock.now(),
                "this needs the role supervisor or admin",
            )  # fmt: skip
    return user, tl


async def audit(tl: Tierline, user: User, action: str, target: str, detail: dict) -> None:
    """One audit entry for a change a staff member made, in a transaction of its own."""
    async with tl.db.transaction() as db:
        db.add(
            AuditEntry(
                at=tl.clock.now(), actor_id=user.id, action=action, target=target, detail=detail
            )
        )


# ---- economics ------------------------------------------------------------------------


async def _economics(request: web.Request) -> eco.Economics:
    _, tl = await staff_only(request, "economics.read")
    tz = tl.settings.timezone
    start, end = eco.parse_range(
        request.query.get("from"), request.query.get("to"), tl.clock.now(), tz
    )
    async with tl.db.session() as db:
        config = await runtime_settings.load(db, eco.SETTING)
        return await eco.economics(db, start, end, tz, config)


@routes.get("/api/economics")
async def economics_json(request: web.Request) -> web.Response:
    return web.json_response((await _economics(request)).to_json())


@routes.get("/api/economics.csv")
async def economics_csv(request: web.Request) -> web.Response:
    report = await _economics(request)
    name = f"economics-{report.start.isoformat()}-{report.end.isoformat()}.csv"
    return web.Response(
        text=eco.economics_csv(report),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _stored_setting(
    path: str, action: str, key: str, read: Callable[[Any], Any], check: Callable[[Any], Any]
) -> None:
    """GET and PUT of one stored run-time setting: ``read`` turns what is stored (or nothing)
    into the answer, ``check`` validates a new value (InvalidInput naming the field); a change
    is audited as ``action``."""

    async def get(request: web.Request) -> web.Response:
        _, tl = await staff_only(request, action)
        async with tl.db.session() as db:
            stored = await runtime_settings.load(db, key)
        return web.json_response(read(stored))

    async def put(request: web.Request) -> web.Response:
        user, tl = await staff_only(request, action)
        clean = check(await read_json(request))
        async with tl.db.transaction() as db:
            await runtime_settings.store(db, key, clean, tl.clock.now())
        await audit(tl, user, action, key, clean)
        return web.json_response(clean)

    routes.get(path)(get)
    routes.put(path)(put)


_stored_setting(
    "/api/settings/economics", "settings.economics", eco.SETTING, eco.config_from, eco.check_config
)


# ---- segment classes ------------------------------------------------------------------


_stored_setting(
    "/api/settings/segment-rules",
    "settings.segment_rules",
    segment_classes.SETTING,
    segment_classes.rules_from,
    segment_classes.check_rules,
)


@routes.post("/api/segments/reclassify")
async def reclassify(request: web.Request) -> web.Response:
    user, tl = await staff_only(request, "segments.reclassify")
    async with tl.db.transaction() as db:
        rules = segment_classes.rules_from(await runtime_settings.load(db, segment_classes.SETTING))
        result = await segment_classes.reclassify(db, tl.clock.now(), rules)
    await audit(tl, user, "segments.reclassify", "clients", result.to_json())
    return web.json_response(result.to_json())


def setup(app: web.Application) -> None:
    app.add_routes(routes)
