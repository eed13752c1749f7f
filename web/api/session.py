"""Sign-in and sign-out for pages and API clients (the contract in DESIGN.md)."""

from __future__ import annotations

from aiohttp import web

from engine.errors import InvalidInput
from engine.models import AuditEntry
from engine.users import authenticate, public_user
from web.keys import SESSIONS, THROTTLE, TIERLINE
from web.middleware import current_session, current_user
from web.sessions import COOKIE, LIFETIME_S

routes = web.RouteTableDef()


async def read_json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", field="body") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    return body


async def sign_in(request: web.Request, username: str, password: str) -> web.Response | None:
    """Check the credentials; on success return a response carrying the cookie."""
    tl = request.app[TIERLINE]
    throttle = request.app[THROTTLE]
    keys = [f"user:{username.lower()}", f"ip:{request.remote}"]
    wait = throttle.retry_after(keys)
    if wait:
        return web.json_response(
            {"error": "TooManyAttempts", "message": f"too many failed sign-ins; wait {wait} s"},
            status=429,
            headers={"Retry-After": str(wait)},
        )
    async with tl.db.transaction() as db:
        user = await authenticate(db, username, password)
        db.add(
            AuditEntry(
                at=tl.clock.now(),
                actor_id=user.id if user else None,
                action="session.sign_in",
                target=f"user:{username}"[:128],
                allowed=user is not None,
                detail={"remote": request.remote or ""},
            )
        )
    if user is None:
        throttle.failed(keys)
        return None
    throttle.succeeded(keys)
    cookie, session = request.app[SESSIONS].issue(user.id)  # type: ignore[arg-type]
    response = web.json_response({"user": public_user(user), "csrf_token": session.csrf})
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=LIFETIME_S,
        httponly=True,
        samesite="Lax",
        secure=request.secure,
        path="/",
    )
    return response


@routes.post("/api/session")
async def create_session(request: web.Request) -> web.Response:
    body = await read_json(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidInput("username and password are required strings", field="username")
    response = await sign_in(request, username, password)
    if response is None:
        return web.json_response(
            {"error": "NotSignedIn", "message": "wrong username or password"}, status=401
        )
    return response


@routes.delete("/api/session")
async def delete_session(request: web.Request) -> web.Response:
    response = web.json_response({"signed_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    user = current_user(request)
    session = current_session(request)
    return web.json_response(
        {"user": public_user(user), "csrf_token": session.csrf if session else None}
    )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
