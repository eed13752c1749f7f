"""``GET /ws``: the operator's live channel (screen pops, call states, queue nudges).

aiohttp authenticates the handshake (the operator's session, the Origin); then the connection
becomes a ``LiveSocket`` (``web/live_socket.py``) held by the hub (``web/hub.py``: delivery,
overflow policy, heartbeats) and the handler returns. The first message is ``hello``: the
user and every call still ringing or in progress for them, so a browser that reconnects
shows its pops again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from aiohttp import web

from cti_adapter.pops import calls_for_hello
from engine.bus import to_json
from engine.models import User
from engine.users import public_user
from web.handover import handed_over, take_over
from web.hub import SERVER_ERROR, Hub
from web.keys import TIERLINE
from web.live_socket import text_frame
from web.middleware import current_user
from web.socket_state import Conn, SocketUser

routes = web.RouteTableDef()

LIVE_CALL_WINDOW = timedelta(hours=4)  # older "ringing" rows are calls whose hangup was lost

HUB = web.AppKey("ws_hub", Hub)
# Handlers between the hand-over and hello: reading live calls from the database.
GREETING: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("ws_greeting")
GREETING_TIMEOUT = 5.0  # seconds shutdown waits for them before cancelling


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    user = current_user(request)  # 401 before the upgrade
    hub = request.app[HUB]
    conn = Conn(hub, SocketUser.of(user), time.monotonic())
    # From here the connection is ours, not aiohttp's: this handler returns right after
    # hello, and the socket lives on as a LiveSocket and this Conn.
    conn.sock = take_over(request, conn, hub.trusted_origins)
    hub.add(conn)  # before hello is read, so a pop pushed meanwhile waits in the outbox
    # Handed over, this handler is no longer aiohttp's to wait for at shutdown: ours is.
    greeting = request.app[GREETING]
    me = asyncio.current_task()
    assert me is not None  # a request handler runs in a task of its own
    greeting.add(me)
    try:
        hello = await _hello(request, conn, user)
    except BaseException:
        hub.drop(conn, SERVER_ERROR, "server error: reconnect")
        raise
    finally:
        greeting.discard(me)
    if not conn.closed:
        conn.sock.write(text_frame(hello))
        hub.start_writing(conn)
    return handed_over()


async def _hello(request: web.Request, conn: Conn, user: User) -> str:
    """The hello message: the user, every call still ringing or in progress for them, and
    the hangups of their latest ended calls (for pops a browser still shows from before it
    was offline)."""
    tl = request.app[TIERLINE]
    async with tl.db.session() as session:
        calls = await calls_for_hello(
            session,
            tl.cache,
            user,
            region=tl.settings.default_region,
            default_tz=tl.settings.timezone,
            since=tl.clock.now() - LIVE_CALL_WINDOW,
        )
    for pop in calls.live:
        conn.remember(str(pop["call_id"]))
    return to_json(
        {
            "type": "hello",
            "user": public_user(user),
            "live_calls": calls.live,
            "ended_calls": calls.ended,
        }
    )


async def broadcast(app: web.Application, message: dict[str, Any]) -> int:
    """Send ``message`` to every socket of this node (dashboards)."""
    return await app[HUB].broadcast(message)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    unsubscribe = app[TIERLINE].bus.subscribe(hub.on_bus)
    beats = asyncio.get_running_loop().create_task(hub.heartbeats(), name="ws-heartbeats")
    yield
    unsubscribe()
    beats.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beats


async def _on_shutdown(app: web.Application) -> None:
    # The sockets are no longer aiohttp's connections: its shutdown would not close them,
    # nor wait for a hello still reading the database (which closes after this).
    await app[HUB].close_all()
    greeting = app[GREETING].copy()
    if greeting:
        _, late = await asyncio.wait(greeting, timeout=GREETING_TIMEOUT)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


def setup(app: web.Application) -> None:
    app[HUB] = Hub(trusted_origins=frozenset(app[TIERLINE].settings.trusted_origins))
    app[GREETING] = set()
    app.add_routes(routes)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
