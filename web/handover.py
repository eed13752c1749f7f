"""Taking a websocket's connection from aiohttp once its handshake is accepted.

aiohttp authenticates and routes ``GET /ws`` like any request; ``take_over`` then checks the
Origin and the handshake, answers 101 and hands the transport to a ``LiveSocket``
(``web/live_socket.py``). aiohttp is let go through public interfaces: its protocol gets a
husk transport that drops what is written to it, so the response it finishes is not sent
(the 101 already was), and when it closes the husk it is told the connection is lost, so it
forgets the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol

from engine.errors import PermissionDenied, TierlineError
from web.live_socket import WRITE_HIGH_WATER, LiveSocket, SocketListener, end_parser


class NotAWebsocket(TierlineError):
    status = 400


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
    end_parser(handshake)
    if response.status_code != 101:
        raise NotAWebsocket(
            f"not a websocket handshake: {handshake.handshake_exc}", path=request.path
        )
    inner = request.protocol
    # Any transport that can change protocols will do: uvloop's (gunicorn's uvloop worker)
    # are not subclasses of asyncio.Transport, and a check for that class refused them all.
    transport = inner.transport
    if transport is None or transport.is_closing():
        raise NotAWebsocket("the connection closed during the handshake")
    sock = LiveSocket(transport, listener)
    transport.set_protocol(sock)
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
    inner.transport = _Husk(transport, inner)
    transport.write(response.serialize())
    if not transport.is_reading():  # aiohttp may have paused it; the socket reads from now
        transport.resume_reading()
    return sock


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
