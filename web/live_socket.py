"""A websocket after its handshake: one small protocol object per connection.

aiohttp authenticates and routes ``GET /ws`` like any request (middlewares, 401 before the
upgrade), and ``web/handover.py`` takes the connection from it. Then, instead of a
``WebSocketResponse`` whose request, protocol, reader, writer and handler task stay alive as
long as the socket (~16 KB each, measured: 10,000 sockets could not fit in 256 MB), the
socket's transport belongs to a ``LiveSocket``: one small protocol object around websockets'
Sans-I/O ``ServerProtocol`` (frames, pings, the close handshake), with no task of its own.
Writes are synchronous ``transport.write`` calls, so a pop or a broadcast to an idle socket
never waits for the loop, and an incoming pong is handled where it is read, without waking
a handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

log = logging.getLogger("tierline.ws")

MAX_MESSAGE = 64 * 1024  # what a browser may send us in one message (it only sends pongs)
WRITE_HIGH_WATER = 64 * 1024  # unsent bytes beyond which a socket counts as busy
CLOSE_TIMEOUT = 1.0  # seconds a peer gets to answer our close frame before the TCP abort
_HEARD = (Opcode.TEXT, Opcode.BINARY, Opcode.PONG)


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
        if any(isinstance(event, Frame) and event.opcode in _HEARD for event in events):
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
        end_parser(self.protocol)

    def _send_pending(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()  # websockets' signal: our side is done
            else:
                self.transport.close()


def end_parser(protocol: ServerProtocol) -> None:
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
