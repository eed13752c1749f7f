"""Request middlewares: errors as JSON, and who is asking."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from aiohttp import web

from engine.errors import PermissionDenied, TierlineError
from engine.models import Role, User
from web.keys import SESSIONS, TIERLINE
from web.sessions import COOKIE, CSRF_HEADER, Session

log = logging.getLogger("tierline.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Endpoints that authenticate by other means (the PBX's signature, the sign-in itself).
NO_CSRF = {"/cti/events", "/api/session", "/login"}


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TierlineError as exc:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        return web.json_response(exc.to_json(), status=exc.status)


# Typed request state (aiohttp's RequestKey): who is asking, set once by ``identify``.
USER: web.RequestKey[User | None] = web.RequestKey("user")
SESSION: web.RequestKey[Session | None] = web.RequestKey("session")


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach ``request[USER]`` and ``request[SESSION]`` (or None) from the cookie.

    A browser (it sends Origin or Sec-Fetch-Site) must also send the session's CSRF token
    on every state-changing request; scripts that sign in by API send no Origin and rely
    on the cookie alone, which SameSite already keeps away from other sites.
    """
    session = request.app[SESSIONS].read(request.cookies.get(COOKIE))
    user: User | None = None
    if session is not None:
        user = await _load_user(request.app, session.user_id)
        if user is None or not user.active:
            user, session = None, None
    request[USER] = user
    request[SESSION] = session
    if (
        request.method in UNSAFE
        and session is not None
        and request.path not in NO_CSRF
        and _from_browser(request)
        and request.headers.get(CSRF_HEADER) != session.csrf
    ):
        raise PermissionDenied("missing or wrong CSRF token; reload the page", header=CSRF_HEADER)
    return await handler(request)


_USERS = User.__table__  # type: ignore[attr-defined]


async def _load_user(app: web.Application, user_id: int) -> User | None:
    """The user as a plain detached object, read in a coroutine of its own: a websocket's
    handler stays suspended under this middleware for hours, and must not keep an ORM
    session (and its identity map) alive meanwhile — 10,000 sockets, ~3 KB each."""
    async with app[TIERLINE].db.engine.connect() as conn:
        row = (await conn.execute(sa.select(_USERS).where(_USERS.c.id == user_id))).first()
    return None if row is None else User(**row._mapping)


def _from_browser(request: web.Request) -> bool:
    return "Origin" in request.headers or "Sec-Fetch-Site" in request.headers


class NotSignedIn(TierlineError):
    status = 401


def current_user(request: web.Request, *roles: Role) -> User:
    """The signed-in user, who must hold one of ``roles`` (any role when none are given)."""
    user: User | None = request.get(USER)
    if user is None:
        raise NotSignedIn("sign in first", sign_in="/api/session")
    if roles and user.role not in roles:
        raise PermissionDenied(
            "this needs the role " + " or ".join(r.value for r in roles),
            required=[r.value for r in roles],
        )
    return user


def current_session(request: web.Request) -> Session | None:
    return request.get(SESSION)
