"""Segments and numbers for supervisors and admins: filters, groups, KPI slices.

Operators get 403 on every route here: segments span tiers, and slices show colleagues.
"""

from __future__ import annotations

from aiohttp import web

from engine import filters, groups
from engine.clients import summary
from engine.errors import InvalidInput
from engine.filters import Context
from engine.kpi import parse_at, parse_day, slice_csv, take_slice
from engine.models import Client, Role, User
from engine.service import Tierline
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()
STAFF = (Role.SUPERVISOR, Role.ADMIN)


def _staff(request: web.Request) -> tuple[User, Tierline]:
    return current_user(request, *STAFF), request.app[TIERLINE]


def _ctx(tl: Tierline) -> Context:
    return Context(now=tl.clock.now(), tz=tl.settings.timezone)


def _int(value: object, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a whole number", field=name) from None
    if number < 0:
        raise InvalidInput(f"{name} must be 0 or more", field=name)
    return number


def _page_json(clients: list[Client], limit: int) -> dict[str, object]:
    full = len(clients) >= limit
    return {
        "clients": [summary(c) for c in clients],
        "next_after": clients[-1].id if clients and full else None,
    }


def _path_id(request: web.Request, name: str) -> int:
    return int(request.match_info[name])


# ---- filters --------------------------------------------------------------------------


@routes.post("/api/filters/preview")
async def preview_filter(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    body = await read_json(request)
    limit = min(_int(body.get("limit"), "limit", 50), 500) or 1
    after = _int(body.get("after_id"), "after_id", 0)
    async with tl.db.session() as db:
        page = await filters.preview(
            db, body.get("criteria"), _ctx(tl), after_id=after, limit=limit
        )
    return web.json_response(
        {
            "count": page.count,
            "first_page": [summary(c) for c in page.clients],
            "next_after": page.next_after,
        }
    )


@routes.get("/api/filters")
async def list_filters(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.session() as db:
        rows = await filters.list_filters(db)
    return web.json_response({"filters": [filters.filter_json(r) for r in rows]})


@routes.post("/api/filters")
async def create_filter(request: web.Request) -> web.Response:
    user, tl = _staff(request)
    body = await read_json(request)
    criteria = body.get("criteria")
    if not isinstance(criteria, dict):
        raise InvalidInput("criteria must be a JSON object", field="criteria")
    async with tl.db.transaction() as db:
        row = await filters.create_filter(
            db,
            body.get("name"),  # type: ignore[arg-type]
            criteria,
            owner_id=user.id,
            now=tl.clock.now(),
            description=str(body.get("description") or ""),
        )
    return web.json_response(filters.filter_json(row), status=201)


@routes.get("/api/filters/{filter_id:\\d+}")
async def get_filter(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.session() as db:
        row = await filters.get_filter(db, _path_id(request, "filter_id"))
        count = await filters.count_matching(db, row.criteria, _ctx(tl))
    return web.json_response({**filters.filter_json(row), "count": count})


@routes.get("/api/filters/{filter_id:\\d+}/clients")
async def filter_clients(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    limit = min(_int(request.query.get("limit"), "limit", 50), 500) or 1
    after = _int(request.query.get("after_id"), "after_id", 0)
    async with tl.db.session() as db:
        row = await filters.get_filter(db, _path_id(request, "filter_id"))
        clients = await filters.page_matching(
            db, row.criteria, _ctx(tl), after_id=after, limit=limit
        )
    return web.json_response(_page_json(clients, limit))


@routes.patch("/api/filters/{filter_id:\\d+}")
async def update_filter(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    body = await read_json(request)
    criteria = body.get("criteria")
    if criteria is not None and not isinstance(criteria, dict):
        raise InvalidInput("criteria must be a JSON object", field="criteria")
    description = body.get("description")
    async with tl.db.transaction() as db:
        row = await filters.update_filter(
            db,
            _path_id(request, "filter_id"),
            now=tl.clock.now(),
            name=body.get("name"),
            criteria=criteria,
            description=None if description is None else str(description),
        )
    return web.json_response(filters.filter_json(row))


@routes.delete("/api/filters/{filter_id:\\d+}")
async def delete_filter(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.transaction() as db:
        await filters.delete_filter(db, _path_id(request, "filter_id"))
    return web.Response(status=204)


# ---- groups ---------------------------------------------------------------------------


@routes.get("/api/groups")
async def list_groups(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.session() as db:
        rows = await groups.list_groups(db)
    return web.json_response({"groups": [groups.group_json(g, n) for g, n in rows]})


@routes.post("/api/groups")
async def create_group(request: web.Request) -> web.Response:
    """{name, description?, filter_id? | criteria?, client_ids?}: frozen at this moment."""
    user, tl = _staff(request)
    body = await read_json(request)
    criteria = body.get("criteria")
    filter_id = body.get("filter_id")
    if criteria is not None and filter_id is not None:
        raise InvalidInput("give filter_id or criteria, not both", field="filter_id")
    if criteria is not None and not isinstance(criteria, dict):
        raise InvalidInput("criteria must be a JSON object", field="criteria")
    now = tl.clock.now()
    async with tl.db.transaction() as db:
        if filter_id is not None:
            filter_id = _int(filter_id, "filter_id", 0)
            criteria = (await filters.get_filter(db, filter_id)).criteria
        group, size = await groups.create_group(
            db,
            body.get("name"),  # type: ignore[arg-type]
            now=now,
            owner_id=user.id,
            description=str(body.get("description") or ""),
            criteria=criteria,
            ctx=_ctx(tl),
            source_filter_id=filter_id,
        )
        if body.get("client_ids") is not None:
            size += await groups.add_members(db, group.id, body["client_ids"], now=now)  # type: ignore[arg-type]
    return web.json_response(groups.group_json(group, size), status=201)


@routes.get("/api/groups/{group_id:\\d+}")
async def get_group(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    gid = _path_id(request, "group_id")
    async with tl.db.session() as db:
        group = await groups.get_group(db, gid)
        size = await groups.count_members(db, gid)
    return web.json_response(groups.group_json(group, size))


@routes.delete("/api/groups/{group_id:\\d+}")
async def delete_group(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.transaction() as db:
        await groups.delete_group(db, _path_id(request, "group_id"))
    return web.Response(status=204)


@routes.get("/api/groups/{group_id:\\d+}/members")
async def group_members(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    limit = min(_int(request.query.get("limit"), "limit", 50), 500) or 1
    after = _int(request.query.get("after_id"), "after_id", 0)
    async with tl.db.session() as db:
        clients = await groups.list_members(
            db, _path_id(request, "group_id"), after_id=after, limit=limit
        )
    return web.json_response(_page_json(clients, limit))


@routes.post("/api/groups/{group_id:\\d+}/members")
async def add_members(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    body = await read_json(request)
    async with tl.db.transaction() as db:
        added = await groups.add_members(
            db,
            _path_id(request, "group_id"),
            body.get("client_ids"),  # type: ignore[arg-type]  # add_members checks it
            now=tl.clock.now(),
        )
    return web.json_response({"added": added})


# DELETE with a body, and the same as POST .../remove for clients that cannot send one.
@routes.delete("/api/groups/{group_id:\\d+}/members")
@routes.post("/api/groups/{group_id:\\d+}/members/remove")
async def remove_members(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    body = await read_json(request)
    async with tl.db.transaction() as db:
        removed = await groups.remove_members(
            db,
            _path_id(request, "group_id"),
            body.get("client_ids"),  # type: ignore[arg-type]
        )
    return web.json_response({"removed": removed})


# ---- KPI slices -----------------------------------------------------------------------


async def _slice(request: web.Request):
    _, tl = _staff(request)
    now = tl.clock.now()
    day = parse_day(request.query.get("day"), now, tl.settings.timezone)
    at = parse_at(request.query.get("at"))
    tier = request.query.get("tier") or None
    async with tl.db.session() as db:
        return await take_slice(
            db, day=day, at=at, tz=tl.settings.timezone, policy=tl.policy, now=now, tier=tier
        )


@routes.get("/api/kpi/slices")
async def kpi_slice(request: web.Request) -> web.Response:
    return web.json_response((await _slice(request)).to_json())


@routes.get("/api/kpi/slices.csv")
async def kpi_slice_csv(request: web.Request) -> web.Response:
    kpi = await _slice(request)
    name = f"kpi-{kpi.day.isoformat()}-{kpi.label.replace(':', '')}.csv"
    return web.Response(
        text=slice_csv(kpi),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
