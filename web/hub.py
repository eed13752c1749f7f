"""The websocket hub: each user's sockets (every tab and device), and how a message
reaches them.

A message is encoded once into a frame and written straight to each idle socket; a socket
with more than 64 KB unsent is busy, and its messages wait in its own bounded outbox, so a
slow or dead browser only ever fills its own: nobody else's pop waits for it.

Overflow policy: a socket whose queue is full is **disconnected** (close code 1013, "try
again later"), not trimmed. Dropping the oldest message would silently lose a pop or a
hangup; a reconnecting browser instead gets ``hello`` with every call still ringing or in
progress, read from the database, so it comes back whole.

Heartbeats: every ``heartbeat`` seconds each socket gets ``{"type": "ping"}``; a socket that
has sent nothing (a ``pong`` or anything else) for ``dead_after`` seconds, while at least
two pings went unanswered, is closed. The second condition is for a server whose loop
stalled (a long collection, a swapped page): it had not sent the pings, so the silence is
its own, and closing every socket then would start a reconnect storm.
Messages reach the hub through the bus (``pops``, ``followups``, ``queues``), so with Redis
the node holding the socket delivers whatever node produced the message. No aiohttp here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cti_adapter.pops import POPS_CHANNEL, pop_key
from engine.bus import to_json
from engine.models import Role
from engine.users import USERS_CHANNEL
from web.live_socket import CLOSE_TIMEOUT, text_frame
from web.socket_state import Conn, Item, SocketUser

log = logging.getLogger("tierline.ws")

GOING_AWAY, TRY_AGAIN_LATER, SERVER_ERROR = 1001, 1013, 1011
ACCOUNT_CHANGED = 4001  # close code: the user's access changed; reconnect to be re-authorised
HEARTBEAT_TICK = 0.25  # seconds between two slices of heartbeats


class Hub:
    """Every socket of this node, by user. Delivery is synchronous: a message is written to
    each idle socket at once (a ``transport.write``), and waits in the outbox of a busy one
    (more than 64 KB unsent) until it drains. No task per socket or per message."""

    def __init__(
        self,
        *,
        queue_size: int = 256,
        heartbeat: float = 20.0,
        dead_after: float | None = None,
        yield_every: int = 100,
        trusted_origins: frozenset[str] = frozenset(),
    ) -> None:
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self.dead_after = dead_after if dead_after is not None else 2.5 * heartbeat
        self.yield_every = yield_every
        self.trusted_origins = trusted_origins
        self.by_user: dict[int, set[Conn]] = {}
        self.overflows = 0  # sockets disconnected because their queue was full
        self.last_sent = 0.0  # time.monotonic() of the last message to one operator
        self._added = 0  # sockets ever added: each gets the next heartbeat slot
        self._closing: set[Conn] = set()  # dropped, the peer not yet gone
        self._all_gone: asyncio.Event | None = None  # set when _closing empties at shutdown

    # --- delivery (synchronous: called from bus handlers on the event loop) -------------

    def sockets(self, user_id: int | None = None) -> list[Conn]:
        if user_id is not None:
            return list(self.by_user.get(user_id, ()))
        return [c for conns in self.by_user.values() for c in conns]

    def send_to_user(self, user_id: int, message: dict[str, Any]) -> int:
        return self._send_item(user_id, _item(message))

    def _send_item(self, user_id: int, item: Item) -> int:
        conns = self.by_user.get(user_id)
        if not conns:
            return 0
        self.last_sent = time.monotonic()
        for conn in tuple(conns):
            self.deliver(conn, item)
        return len(conns)

    def send_where(self, message: dict[str, Any], wanted: Callable[[SocketUser], bool]) -> int:
        item = _item(message)
        sent = 0
        for conn in self.sockets():
            if wanted(conn.user):
                self.deliver(conn, item)
                sent += 1
        return sent

    async def broadcast(self, message: dict[str, Any]) -> int:
        """Send to every socket, encoded once, yielding to the loop every ``yield_every``
        sockets so a pop pushed meanwhile waits for at most that many writes."""
        item = _item(message)
        sent = 0
        for conn in self.sockets():
            self.deliver(conn, item)
            sent += 1
            if self.yield_every and sent % self.yield_every == 0:
                await asyncio.sleep(0)
        return sent

    def deliver(self, conn: Conn, item: Item) -> None:
        if conn.closed:
            return
        sock = conn.sock
        if conn.ready and not conn.queue and sock is not None and sock.writable:
            self._write(conn, item)
        elif conn.queue is None:
            conn.queue = deque((item,))
        elif len(conn.queue) < self.queue_size:
            conn.queue.append(item)
        else:
            self.overflows += 1
            log.warning(
                "websocket of user %s is not reading (%d queued): disconnected",
                conn.user.id,
                conn.queued(),
            )
            self.drop(conn, TRY_AGAIN_LATER, "too slow: reconnect")

    def flush(self, conn: Conn) -> None:
        """Write what waits, until the socket is busy again: pops de-duplicated on the way."""
        sock = conn.sock
        while conn.queue and conn.ready and not conn.closed and sock is not None:
            if not sock.writable:
                return
            item = conn.queue.popleft()
            if not conn.queue:
                conn.queue = None  # an empty deque still holds a 64-slot block
            self._write(conn, item)

    def _write(self, conn: Conn, item: Item) -> None:
        call_id, frame = item
        if call_id is not None and not conn.remember(call_id):
            return
        if conn.sock is not None and not conn.sock.write(frame):
            self.drop(conn, GOING_AWAY, "socket closing")

    def on_bus(self, channel: str, message: dict[str, Any]) -> None:
        if channel == POPS_CHANNEL:  # cti_adapter.pops.addressed: already encoded
            user_id, text, pop = message.get("user_id"), message.get("text"), message.get("pop")
            if isinstance(user_id, int) and isinstance(text, str):
                self._send_item(user_id, (pop if isinstance(pop, str) else None, text_frame(text)))
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
        self._added += 1
        conn.slot = self._added
        self.by_user.setdefault(conn.user.id, set()).add(conn)

    def remove(self, conn: Conn) -> None:
        conns = self.by_user.get(conn.user.id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_user[conn.user.id]

    def forget(self, conn: Conn) -> None:
        """The connection is gone (closed by either side)."""
        conn.closed, conn.ready, conn.queue = True, False, None
        self.remove(conn)
        self._closing.discard(conn)
        if not self._closing and self._all_gone is not None:
            self._all_gone.set()

    def drop(self, conn: Conn, code: int, reason: str) -> None:
        """Forget a socket now and close it: a close frame, then a TCP abort if the peer
        does not answer within a second (it may be stuck not reading)."""
        if conn.closed:
            return
        conn.closed, conn.close_reason, conn.queue = True, reason, None
        self.remove(conn)
        if conn.sock is not None and not conn.sock.closed:
            self._closing.add(conn)
            conn.sock.close(code, reason)

    def start_writing(self, conn: Conn) -> None:
        """After hello: what was queued meanwhile goes out."""
        conn.ready = True
        self.flush(conn)

    async def heartbeats(self) -> None:
        """Ping each socket once per ``heartbeat``, a slice of them every HEARTBEAT_TICK:
        all at once, 10,000 pongs would come back together and hold the loop ~0.2 s ahead
        of any pop (measured: pop p99 95 ms at 10,000 sockets)."""
        ping = _item({"type": "ping"})
        slices = max(1, round(self.heartbeat / HEARTBEAT_TICK))
        tick = 0
        while True:
            await asyncio.sleep(self.heartbeat / slices)
            tick = (tick + 1) % slices
            # A call of its own, so that no socket stays referenced between two ticks.
            await self._ping_slice(ping, slices, tick)

    async def _ping_slice(self, ping: Item, slices: int, tick: int) -> None:
        now = time.monotonic()
        for n, conn in enumerate(self.sockets(), 1):
            if conn.slot % slices != tick:
                continue
            if conn.unanswered >= 2 and now - conn.last_seen > self.dead_after:
                self.drop(conn, GOING_AWAY, "no pong")
            else:
                conn.unanswered += 1
                self.deliver(conn, ping)
            if self.yield_every and n % self.yield_every == 0:
                await asyncio.sleep(0)  # as broadcast(): pops keep flowing meanwhile

    async def close_all(self) -> None:
        """Close every socket, and wait until each is gone (a stalled one is aborted after
        CLOSE_TIMEOUT)."""
        for conn in self.sockets():
            self.drop(conn, GOING_AWAY, "server shutdown")
        if self._closing:
            self._all_gone = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * CLOSE_TIMEOUT):
                    await self._all_gone.wait()


def _item(message: dict[str, Any]) -> Item:
    return pop_key(message), text_frame(to_json(message))
