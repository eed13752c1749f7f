"""One operator socket as the hub sees it (``Conn``), and whose it is (``SocketUser``).

Kept small on purpose: at 10,000 sockets every byte of a ``Conn`` is 10 MB, so it has slots,
and its outbox and its memory of popped calls exist only while needed. The hub
(``web/hub.py``) decides what goes where; this is what it keeps per socket.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.models import User
from web.live_socket import LiveSocket

if TYPE_CHECKING:
    from web.hub import Hub

_SEEN_CALLS = 256  # pops remembered per socket for de-duplication

# A message on its way: the call id of a screen pop (for de-duplication) and the encoded frame.
Item = tuple[str | None, bytes]
# A socket's waiting messages: a plain deque, created only while the socket is busy.
Outbox = deque[Item]


@dataclass(frozen=True, slots=True)
class SocketUser:
    """Whose socket it is, as delivery decides: not the ORM row, which would keep a
    SQLAlchemy instance state (and its reference cycle) alive per socket."""

    id: int
    role: str
    tier: str | None

    @classmethod
    def of(cls, user: User) -> SocketUser:
        assert user.id is not None
        return cls(user.id, user.role, user.tier)


@dataclass(eq=False, slots=True)
class Conn:
    """One socket, as the hub sees it. Slots, and the outbox and the seen-calls memory only
    while needed: an idle socket is most sockets, and each byte here is 10 MB at 10,000."""

    hub: Hub
    user: SocketUser
    last_seen: float
    slot: int = 0  # which slice of the heartbeats pings this socket
    unanswered: int = 0  # pings sent since the browser was last heard
    sock: LiveSocket | None = None
    queue: Outbox | None = None  # None while nothing waits
    seen: OrderedDict[str, None] | None = None
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

    # --- the LiveSocket's listener ------------------------------------------------------------

    def heard(self) -> None:
        self.last_seen = time.monotonic()
        self.unanswered = 0

    def writable(self) -> None:
        self.hub.flush(self)

    def lost(self) -> None:
        self.hub.forget(self)
