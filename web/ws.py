"""``GET /ws``: the operator's live channel (screen pops, call states, queue nudges).

The hub keeps each user's sockets (every tab and device). Each socket has a bounded queue
and one writer task, so a slow or dead browser only ever fills its own queue: nobody else's
pop waits for it. Messages are encoded once, not once per socket.

Overflow policy: a socket whose queue is full is **disconnected** (close code 1013, "try
again later"), not trimmed. Dropping the oldest message would silently lose a pop or a
hangup; a reconnecting browser instead gets ``hello`` with every call still ringing or in
progress, read from the database, so it comes back whole.

Heartbeats: every ``heartbeat`` seconds each socket gets ``{"type": "ping"}``; a socket that
has sent nothing (a ``pong`` or anything else) for ``dead_after`` seconds is closed.
Messages reach the hub through the bus (``pops``, ``followups``, ``queues``), so with Redis
the node holding the socket delivers whatever node produced the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from cti_adapter.pops import POPS_CHANNEL, live_calls
from engine.models import Role, User
from engine.users import USERS_CHANNEL, public_user
from web.keys import TIERLINE
from web.middleware import current_user

log = logging.getLogger("tierline.ws")

routes = web.RouteTableDef()

LIVE_CALL_WINDOW = timedelta(hours=4)  # older "ringing" rows are calls whose hangup was lost
_SEEN_CALLS = 256  # pops remembered per socket for de-duplication
ACCOUNT_CHANGED = 4001  # close code: the user's access changed; reconnect to be re-authorised


# A socket's waiting messages: a plain deque, not an asyncio.Queue, so an idle socket holds
# no queue machinery and no writer task (10,000 sockets: ~5 KB each saved).
Outbox = deque[tuple[str | None, str]]


@dataclass(eq=False, slots=True)
class Conn:
    """One socket. Slots, and the outbox and the seen-calls memory only while needed: an
    idle socket is most sockets, and each byte here is 10 MB at 10,000 of them."""

    user: User
    ws: web.WebSocketResponse
    request: web.Request
    last_seen: float
    queue: Outbox | None = None  # None while there is nothing to send
    seen: OrderedDict[str, None] | None = None
    writer: asyncio.Task[None] | None = None
    ready: bool = False  # hello sent: messages may go out
    closed: bool = False
    close_reason: str = ""

    def queued(self) -> int:
        return 0 if self.queue is None else len(self.queue)

    def remember(self, call_id: str) -> bool:
        """Mark a call as popped on this socket; False if it already was."""
        if self.seen is None:
            self.seen = OrderedDict()
        elif call_id in self.seen:
            return False
        self.seen[call_id] = None
        while len(self.seen) > _SEEN_CALLS:
            self.seen.popitem(last=False)
        return True


class Hub:
    def __init__(
        self,
        *,
        queue_size: int = 256,
        heartbeat: float = 20.0,
        dead_after: float | None = None,
        yield_every: int = 50,
    ) -> None:
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self.dead_after = dead_after if dead_after is not None else 2.5 * heartbeat
        self.yield_every = yield_every
        self.by_user: dict[int, set[Conn]] = {}
        self.overflows = 0  # sockets disconnected because their queue was full
        self._closing: set[asyncio.Task[None]] = set()

    # --- delivery (synchronous: called from bus handlers on the event loop) -------------

    def sockets(self, user_id: int | None = None) -> list[Conn]:
        if user_id is not None:
            return list(self.by_user.get(user_id, ()))
        return [c for conns in self.by_user.values() for c in conns]

    def send_to_user(self, user_id: int, message: dict[str, Any]) -> int:
        conns = self.by_user.get(user_id)
        if not conns:
            return 0
        item = _item(message)
        for conn in tuple(conns):
            self._enqueue(conn, item)
        return len(conns)

    def send_where(self, message: dict[str, Any], wanted: Any) -> int:
        item = _item(message)
        sent = 0
        for conn in self.sockets():
            if wanted(conn.user):
                self._enqueue(conn, item)
                sent += 1
        return sent

    async def broadcast(self, message: dict[str, Any]) -> int:
        """Send to every socket, yielding to the loop every ``yield_every`` sockets so a pop
        queued meanwhile is written after at most that many others, not after all of them.

        An idle socket (nothing queued, its kernel buffer empty) is written to right here:
        a writer task per socket would put 10,000 tasks in the loop's ready queue ahead of
        any pop pushed meanwhile (measured: pop p99 2.2 s at 10,000 sockets). A busy one
        gets the message in its outbox, behind what it already has."""
        item = _item(message)
        sent = 0
        for conn in self.sockets():
            await self._deliver_bulk(conn, item)
            sent += 1
            if self.yield_every and sent % self.yield_every == 0:
                await asyncio.sleep(0)
        return sent

    async def _deliver_bulk(self, conn: Conn, item: tuple[str | None, str]) -> None:
        transport = conn.request.transport
        if (
            conn.closed
            or not conn.ready
            or conn.writer is not None
            or conn.queue
            or transport is None
            or transport.get_write_buffer_size()
        ):
            self._enqueue(conn, item)
            return
        try:
            # Uncompressed and with an empty buffer, this writes and returns without
            # waiting for the peer: a slow browser's socket is never written to here.
            await conn.ws.send_str(item[1])
        except Exception as exc:  # the peer went away
            self.drop(conn, WSCloseCode.GOING_AWAY, f"write failed: {exc}")

    def _enqueue(self, conn: Conn, item: tuple[str | None, str]) -> None:
        if conn.closed:
            return
        if conn.queue is None:
            conn.queue = deque()
        if len(conn.queue) < self.queue_size:
            conn.queue.append(item)
            if conn.writer is None and conn.ready:
                # The writer lives only while there is something to write.
                conn.writer = asyncio.get_running_loop().create_task(self.write(conn))
        else:
            self.overflows += 1
            log.warning(
                "websocket of user %s is not reading (%d queued): disconnected",
                conn.user.id,
                conn.queued(),
            )
            self.drop(conn, WSCloseCode.TRY_AGAIN_LATER, "too slow: reconnect")

    def on_bus(self, channel: str, message: dict[str, Any]) -> None:
        if channel == POPS_CHANNEL:
            user_id, inner = message.get("user_id"), message.get("message")
            if isinstance(user_id, int) and isinstance(inner, dict):
                self.send_to_user(user_id, inner)
        elif channel == USERS_CHANNEL:
            user_id = message.get("user_id")
            if message.get("access") and isinstance(user_id, int):
                # Active, tier or extension changed: what the sockets were authorised for
                # may no longer hold. They reconnect, and are authorised afresh (or refused).
                for conn in self.sockets(user_id):
                    self.drop(conn, ACCOUNT_CHANGED, "account changed: reconnect")
        elif channel in ("followups", "queues"):
            owner, tier = message.get("owner_id"), message.get("tier")
            if message.get("type") == "follow_up_escalated" and message.get("step") == "supervisor":
                self.send_where(message, lambda u: u.role in (Role.SUPERVISOR, Role.ADMIN))
            elif isinstance(owner, int):
                self.send_to_user(owner, message)
            elif tier:
                self.send_where(message, lambda u: u.role == Role.OPERATOR and u.tier == tier)

    # --- connections ----------------------------------------------------------------------

    def add(self, conn: Conn) -> None:
        self.by_user.setdefault(conn.user.id, set()).add(conn)  # type: ignore[arg-type]

    def remove(self, conn: Conn) -> None:
        conns = self.by_user.get(conn.user.id)  # type: ignore[arg-type]
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_user[conn.user.id]  # type: ignore[arg-type]

    def drop(self, conn: Conn, code: int, reason: str) -> None:
        """Forget a socket now and close it in the background (it may be stuck writing)."""
        if conn.closed:
            return
        conn.closed, conn.close_reason = True, reason
        self.remove(conn)
        if conn.writer is not None:
            conn.writer.cancel()
        task = asyncio.get_running_loop().create_task(_close(conn, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def write(self, conn: Conn) -> None:
        """The socket's one writer, until its queue is empty: pops are de-duplicated per
        call id on the way out."""
        try:
            while conn.queue:
                call_id, text = conn.queue.popleft()
                if not conn.queue:
                    conn.queue = None  # an empty deque still holds a 64-slot block
                if call_id is not None and not conn.remember(call_id):
                    continue
                await conn.ws.send_str(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-write
            self.drop(conn, WSCloseCode.GOING_AWAY, f"write failed: {exc}")
        finally:
            # No await between the empty check and this: a message enqueued later starts
            # a new writer.
            if conn.writer is asyncio.current_task():
                conn.writer = None

    def start_writing(self, conn: Conn) -> None:
        """After hello: what was queued meanwhile goes out, and later messages start the
        writer themselves."""
        conn.ready = True
        if conn.queue and conn.writer is None and not conn.closed:
            conn.writer = asyncio.get_running_loop().create_task(self.write(conn))

    async def heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        ping = _item({"type": "ping"})
        while True:
            await asyncio.sleep(self.heartbeat)
            now = loop.time()
            for n, conn in enumerate(self.sockets(), 1):
                if now - conn.last_seen > self.dead_after:
                    self.drop(conn, WSCloseCode.GOING_AWAY, "no pong")
                else:
                    await self._deliver_bulk(conn, ping)
                if self.yield_every and n % self.yield_every == 0:
                    await asyncio.sleep(0)  # as broadcast(): pops keep flowing meanwhile

    async def close_all(self) -> None:
        for conn in self.sockets():
            self.drop(conn, WSCloseCode.GOING_AWAY, "server shutdown")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _item(message: dict[str, Any]) -> tuple[str | None, str]:
    call_id = message.get("call_id") if message.get("type") == "screen_pop" else None
    return call_id, json.dumps(message, separators=(",", ":"), ensure_ascii=False)


async def _close(conn: Conn, code: int, reason: str) -> None:
    try:
        async with asyncio.timeout(1.0):
            await conn.ws.close(code=code, message=reason.encode()[:120])
    except Exception as exc:  # closing a dead or stalled socket: nothing more to do for it
        log.debug("socket close did not complete: %s", exc)
    finally:
        transport = conn.request.transport
        if not conn.ws.closed and transport is not None:
            transport.abort()  # it would not even take a close frame


HUB = web.AppKey("ws_hub", Hub)


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    user = current_user(request)  # 401 before the upgrade
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=64 * 1024)
    await ws.prepare(request)
    loop = asyncio.get_running_loop()
    conn = Conn(user, ws, request, loop.time())
    # Registered before hello is read, so a pop pushed meanwhile waits in the queue.
    hub.add(conn)
    try:
        await ws.send_str(await _hello(request, conn))
        hub.start_writing(conn)
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                conn.last_seen = loop.time()  # a pong, or anything: the browser is alive
    finally:
        hub.remove(conn)
        conn.ready = False
        if conn.writer is not None:
            conn.writer.cancel()
    return ws


async def _hello(request: web.Request, conn: Conn) -> str:
    """The hello message. Its own coroutine: the session and the pops it read are freed on
    return, not held by the socket's handler for the socket's lifetime."""
    tl = request.app[TIERLINE]
    async with tl.db.session() as session:
        live = await live_calls(
            session,
            tl.cache,
            conn.user,
            region=tl.settings.default_region,
            default_tz=tl.settings.timezone,
            since=tl.clock.now() - LIVE_CALL_WINDOW,
        )
    for pop in live:
        conn.remember(str(pop["call_id"]))
    return json.dumps({"type": "hello", "user": public_user(conn.user), "live_calls": live})


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
    # Before the server waits for handlers to finish: an open socket's handler never would.
    await app[HUB].close_all()


def setup(app: web.Application) -> None:
    app[HUB] = Hub()
    app.add_routes(routes)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
