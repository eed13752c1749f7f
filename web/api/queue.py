"""GET /api/queue: whom to call now.

An operator gets their own due calls plus their tier's pool, and the missed calls to call
back (``engine.missed_calls``: their tier's clients, unknown callers who rang their phone);
supervisors and admins see the whole department, or one tier with ?tier=.
"""

from __future__ import annotations

from aiohttp import web

from engine.access import refuse
from engine.definitions import current_version
from engine.errors import InvalidInput
from engine.missed_calls import missed_calls
from engine.models import Role
from engine.queue import MAX_ITEMS, due_queue
from web.keys import TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()


@routes.get("/api/queue")
async def get_queue(request: web.Request) -> web.Response:
    user = current_user(request)
    tl = request.app[TIERLINE]
    tier = request.query.get("tier") or None
    raw_limit = request.query.get("limit") or "200"
    try:
        limit = max(1, min(int(raw_limit), MAX_ITEMS))
    except ValueError:
        raise InvalidInput(
            f"limit must be a whole number, got {raw_limit!r}", field="limit"
        ) from None
    now = tl.clock.now()
    async with tl.db.session() as db:
        if user.role == Role.OPERATOR:
            if tier is not None and tier != user.tier:
                raise await refuse(
                    db,
                    user,
                    "queue.read",
                    f"tier:{tier}"[:128],
                    now,
                    f"you work the {user.tier or 'no'} tier, not {tier}",
                )
            items = await due_queue(
                db, now=now, default_tz=tl.settings.timezone, operator=user, limit=limit
            )
        else:
            if tier is not None:
                tiers = tl.cache.remember(await current_version(db)).tiers
                if tier not in tiers:
                    raise InvalidInput(
                        f"unknown tier {tier!r}; tiers: " + ", ".join(tiers), field="tier"
                    )
            items = await due_queue(
                db, now=now, default_tz=tl.settings.timezone, tier=tier, limit=limit
            )
        missed = await missed_calls(db, viewer=user, now=now, tier=tier)
    return web.json_response(
        {
            "items": [item.to_json() for item in items],
            "missed": [call.to_json() for call in missed],
            "now": now.isoformat(),
        }
    )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
