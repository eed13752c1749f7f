"""A websocket taken over from aiohttp once its handshake is accepted.

aiohttp authenticates and routes ``GET /ws`` like any request (middlewares, 401 before the
upgrade). Then, instead of a ``WebSocketResponse`` whose request, protocol, reader, writer
and handler task stay alive as long as the socket (~16 KB each, measured: 10,000 sockets
could not fit in 256 MB), the socket's transport is handed to a ``LiveSocket``: one small
protocol object around websockets' Sans-I/O ``ServerProtocol`` (frames, pings, the close
handshake), with no task of its own. Writes are synchronous ``transport.write`` calls, so a
pop or a broadcast to an idle socket never waits for the loop, and an incoming pong is
handled where it is read, without waking a handler.

aiohttp is let go through public interfaces: its protocol gets a husk transport that drops
what is written to it, so the response it finishes is not sent (the 101 already was), and
when it closes the husk it is told the connection is lost, so it forgets the connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from engine.errors import PermissionDenied, TierlineError

log = logging.getLogger("tierline.ws")

MAX_MESSAGE = 64 * 1024  # what a browser may send us in one message (it only sends pongs)
WRITE_HIGH_WATER = 64 * 1024  # unsent bytes beyond which a socket counts as busy
CLOSE_TIMEOUT = 1.0  # seconds a peer gets to answer our close frame before the TCP abort
_HEARD = (Opcode.TEXT, Opcode.BINARY, Opcode.PONG)


class NotAWebsocket(TierlineError):
    status = 400


class SocketListener(Protocol):
    """What a ``LiveSocket`` tells its owner (the hub's record of the socket)."""

    def heard(self) -> None:
        """A message or a pong arrived: the browser is alive."""

    def writable(self) -> None:
        """The socket drained below its high-water mark: queued messages may go."""

    def lost(self) -> None:
        """The connection is gone."""


class _Gone:
    """The listener of a socket whose connection is lost: nothing more to tell."""

    def heard(self) -> None:
        """Nothing is read after the connection is lost."""

    def writable(self) -> None:
        """Nor written."""

    def lost(self) -> None:
        """The owner was told once already."""


_GONE = _Gone()


def text_frame(text: str) -> bytes:
    """A server's text frame: unmasked and without extensions, so one encoding serves every
    socket (a broadcast encodes once, then writes the same bytes 10,000 times)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class LiveSocket(asyncio.Protocol):
    __slots__ = ("_abort_timer", "busy", "listener", "protocol", "transport")

    def __init__(self, transport: asyncio.Transport, listener: SocketListener) -> None:
        self.transport = transport
        self.protocol = ServerProtocol(state=State.OPEN, max_size=MAX_MESSAGE)
        self.listener = listener
        self.busy = False  # the transport holds more than WRITE_HIGH_WATER unsent bytes
        self._abort_timer: asyncio.TimerHandle | None = None

    @property
    def writable(self) -> bool:
        return not self.busy and self.protocol.state is State.OPEN

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    def write(self, frame: bytes) -> bool:
        """Send an encoded frame now (False if the socket is closing)."""
        if self.protocol.state is not State.OPEN or self.transport.is_closing():
            return False
        self.transport.write(frame)
        return True

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake; the TCP connection is aborted if the peer does not
        finish it within CLOSE_TIMEOUT (a stalled browser would never read our frame)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason[:120])
            self._send_pending()
        if self._abort_timer is None and not self.transport.is_closing():
            loop = asyncio.get_running_loop()
            self._abort_timer = loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._send_pending()  # automatic pongs and close replies
        if protocol.close_expected() and self._abort_timer is None:
            self._abort_timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT, self.transport.abort
            )
        if any(event.opcode in _HEARD for event in events):
            self.listener.heard()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._send_pending()
        return None  # let the transport close itself

    def pause_writing(self) -> None:
        self.busy = True

    def resume_writing(self) -> None:
        self.busy = False
        self.listener.writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent: the protocol ends CLOSED
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        listener, self.listener = self.listener, _GONE
        listener.lost()
        # The socket's reference cycles end here, so it is freed the moment its owner lets go
        # instead of waiting for a full collection (or for the heap sweep, once frozen:
        # web/heap.py): the listener's record points back at it, and so does the parser.
        _end_parser(self.protocol)

    def _send_pending(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()  # websockets' signal: our side is done
            else:
                self.transport.close()


def take_over(
    request: web.Request, listener: SocketListener, trusted_origins: frozenset[str]
) -> LiveSocket:
    """Accept the websocket handshake of ``request`` and take its connection from aiohttp.

    Raises ``NotAWebsocket`` (400) for a request that is not a valid handshake, and
    ``PermissionDenied`` (403) for a browser page of another origin; nothing is taken
    over then, and aiohttp answers as for any refused request.
    """
    _check_origin(request, trusted_origins)
    # A throw-away protocol validates the handshake; the socket's own starts OPEN, because
    # one started CONNECTING would read the first frames as an HTTP request.
    handshake = ServerProtocol()
    response = handshake.accept(Request(request.path_qs, Headers(request.headers.items())))
    _end_parser(handshake)
    if response.status_code != 101:
        raise NotAWebsocket(
            f"not a websocket handshake: {handshake.handshake_exc}", path=request.path
        )
    inner = request.protocol
    transport = inner.transport
    if not isinstance(transport, asyncio.Transport) or transport.is_closing():
        raise NotAWebsocket("the connection closed during the handshake")
    sock = LiveSocket(transport, listener)
    transport.set_protocol(sock)
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
    inner.transport = _Husk(transport, inner)
    transport.write(response.serialize())
    if not transport.is_reading():  # aiohttp may have paused it; the socket reads from now
        transport.resume_reading()
    return sock


def _end_parser(protocol: ServerProtocol) -> None:
    """websockets' parser is a generator whose frame holds its protocol, and the error that
    stopped it (a connection dropped mid-frame: EOFError) holds that frame in its traceback:
    reference cycles, which only a collection frees. Once a protocol will parse nothing
    more, end them."""
    parser = getattr(protocol, "parser", None)
    if parser is not None:
        parser.close()
    exc: BaseException | None = getattr(protocol, "parser_exc", None)
    for _ in range(8):  # the error and what it was raised from: never a long chain
        if exc is None:
            break
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def handed_over() -> web.Response:
    """What the ``/ws`` handler returns after ``take_over``: aiohttp 'sends' it to the husk
    (so its access log says 101) and then closes the husk, which lets it forget the
    connection."""
    response = web.Response(status=101)
    response.force_close()
    return response


def _check_origin(request: web.Request, trusted: frozenset[str]) -> None:
    """A browser always sends Origin on a websocket handshake. A page of another site must
    not open an operator's live channel with the operator's cookie (SameSite already stops
    this in current browsers; this stops it everywhere)."""
    origin = request.headers.get("Origin")
    if origin is None or origin in trusted:
        return
    if urlsplit(origin).netloc.lower() != request.host.lower():
        raise PermissionDenied(
            "websocket from another origin refused; add it to TIERLINE_TRUSTED_ORIGINS "
            "if a proxy serves Tierline under another name",
            origin=origin,
        )


class _Husk(asyncio.Transport):
    """Stands in for the transport aiohttp's protocol no longer owns: writes vanish, and
    closing it tells that protocol the connection is lost (as a real transport would)."""

    def __init__(self, real: asyncio.Transport, owner: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._real = real
        self._owner: asyncio.BaseProtocol | None = owner

    def write(self, data: Any) -> None:
        """Dropped: the response aiohttp finishes after the hand-over must not be sent."""

    def writelines(self, list_of_data: Any) -> None:
        """Dropped, as ``write``."""

    def close(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            asyncio.get_running_loop().call_soon(owner.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._owner is None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_reading(self) -> bool:
        return False

    def pause_reading(self) -> None:
        """Reading belongs to the LiveSocket now."""

    def resume_reading(self) -> None:
        """Reading belongs to the LiveSocket now."""

    def can_write_eof(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Nothing is buffered here."""
