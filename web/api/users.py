"""Staff by API: integrators sync users from an HR system (admin session)."""

from __future__ import annotations

import logging

from aiohttp import web
from sqlmodel import col, select

from engine.definitions import current_version
from engine.errors import Conflict, InvalidInput, NotFound, Unavailable
from engine.models import AuditEntry, Role, User
from engine.users import USERS_CHANNEL, NewUser, create_user, public_user
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

log = logging.getLogger("tierline.web")
routes = web.RouteTableDef()


@routes.post("/api/users")
async def add_user(request: web.Request) -> web.Response:
    admin = current_user(request, Role.ADMIN)
    body = await read_json(request)
    fields = {}
    for name in ("username", "password", "role", "tier", "extension", "display_name"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{name} must be a string", field=name)
        fields[name] = value
    for name in ("username", "password", "role"):
        if not fields[name]:
            raise InvalidInput(f"{name} is required", field=name)
    tl = request.app[TIERLINE]
    async with tl.db.transaction() as db:
        tiers = tl.cache.remember(await current_version(db)).tiers
        user = await create_user(
            db,
            NewUser(
                username=fields["username"],  # type: ignore[arg-type]
                password=fields["password"],  # type: ignore[arg-type]
                role=fields["role"],  # type: ignore[arg-type]
                tier=fields["tier"],
                extension=fields["extension"],
                display_name=fields["display_name"] or "",
            ),
            tiers=tiers,
            now=tl.clock.now(),
        )
        db.add(
            AuditEntry(
                at=tl.clock.now(),
                actor_id=admin.id,
                action="user.create",
                target=f"user:{user.username}",
                detail={"role": user.role, "tier": user.tier},
            )
        )
    return web.json_response(public_user(user), status=201)


@routes.get("/api/users")
async def list_users(request: web.Request) -> web.Response:
    current_user(request, Role.ADMIN, Role.SUPERVISOR)
    async with request.app[TIERLINE].db.session() as db:
        users = await db.exec(select(User).order_by(col(User.id)))
        return web.json_response({"users": [public_user(u) for u in users]})


def _check_update(body: dict, user: User, tiers: tuple[str, ...]) -> None:
    """The same rules as creation (NewUser.check) for the fields an update may change."""
    if "active" in body and not isinstance(body["active"], bool):
        raise InvalidInput("active must be true or false", field="active")
    for name in ("tier", "extension", "display_name"):
        if name in body and body[name] is not None and not isinstance(body[name], str):
            raise InvalidInput(f"{name} must be text", field=name)
    tier = body.get("tier", user.tier) or None
    if tier is not None and tier not in tiers:
        raise InvalidInput(f"unknown tier {tier!r}; tiers are {', '.join(tiers)}", field="tier")
    if user.role == Role.OPERATOR and tier is None:
        raise InvalidInput("an operator works one tier: give a tier", field="tier")
    extension = body.get("extension") or ""
    if len(extension) > 32 or (extension and not extension.isprintable()):
        raise InvalidInput("extension must be up to 32 printable characters", field="extension")


# Fields whose change alters what a user may receive: their sockets are closed and reconnect.
_ACCESS = ("active", "tier", "extension")


@routes.patch("/api/users/{user_id:\\d+}")
async def update_user(request: web.Request) -> web.Response:
    admin = current_user(request, Role.ADMIN)
    body = await read_json(request)
    tl = request.app[TIERLINE]
    async with tl.db.transaction() as db:
        user = await db.get(User, int(request.match_info["user_id"]))
        if user is None:
            raise NotFound("no such user")
        _check_update(body, user, tl.cache.remember(await current_version(db)).tiers)
        extension = body.get("extension") or None
        if extension is not None and extension != user.extension:
            holder = (await db.exec(select(User).where(User.extension == extension))).first()
            if holder is not None:
                raise Conflict(
                    f"extension {extension!r} is already taken by {holder.username}",
                    field="extension",
                )
        if "active" in body:
            if user.id == admin.id and not body["active"]:
                raise InvalidInput("you cannot deactivate yourself", field="active")
            user.active = body["active"]
        for name in ("tier", "extension", "display_name"):
            if name in body:
                setattr(user, name, body[name] or None if name != "display_name" else body[name])
        db.add(user)
        db.add(
            AuditEntry(
                at=tl.clock.now(),
                actor_id=admin.id,
                action="user.update",
                target=f"user:{user.username}",
                detail={k: body[k] for k in body if k != "password"},
            )
        )
    change = {"type": "user_changed", "user_id": user.id, "access": any(k in body for k in _ACCESS)}
    try:
        # Every node: the screen-pop directory forgets the extension, the hub closes the
        # user's sockets so a deactivated or moved operator stops receiving at once.
        await tl.bus.publish(USERS_CHANNEL, change)
    except Unavailable as exc:  # saved; other nodes catch up within the directory's TTL
        log.warning("user %s changed, but the bus is down: %s", user.id, exc)
    return web.json_response(public_user(user))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
