"""The websocket after its handshake: taken from aiohttp, spoken by ``LiveSocket``.

Real sockets against the real app. Some tests speak raw HTTP and frames on a TCP socket,
to control exactly what a browser (or a proxy reusing a keep-alive connection) sends.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import struct
from collections.abc import Callable

import pytest
from aiohttp import WSMsgType
from websockets.server import ServerProtocol

from tests.conftest import sign_in
from tests.integration.helpers import make_user
from tests.integration.test_ws_pops import connect, next_of
from web.handover import _Husk
from web.live_socket import MAX_MESSAGE, LiveSocket
from web.sessions import COOKIE
from web.socket_state import Conn
from web.ws import GREETING, HUB


@pytest.fixture
async def olga(tl):
    return await make_user(tl, "olga", tier="cold", extension="101")


async def _cookie(aiohttp_client, server, username: str) -> str:
    browser = await aiohttp_client(server)
    await sign_in(browser, username)
    return browser.session.cookie_jar.filter_cookies(browser.make_url("/"))[COOKIE].value


async def _until(done: Callable[[], bool]) -> None:
    """Wait up to a second for ``done()``: the server learns of a close a moment later."""
    for _ in range(100):
        if done():
            return
        await asyncio.sleep(0.01)


def _upgrade(cookie: str, host: str, **headers: str) -> bytes:
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        f"Cookie: {COOKIE}={cookie}",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _head(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return int(head.split(b" ", 2)[1]), head


async def _frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
    size = b1 & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return b0 & 0x0F, await reader.readexactly(size)


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + mask + body


async def test_aiohttp_lets_go_of_the_connection(web_client, aiohttp_client, olga) -> None:
    """After hello, aiohttp holds nothing of the socket: no request handler, no task."""
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    [conn] = web_client.server.app[HUB].sockets(olga.id)
    aiohttp_server = web_client.server.runner.server

    def held() -> list:
        return [h for h in aiohttp_server.connections if isinstance(h.transport, _Husk)]

    await _until(lambda: not held())
    assert held() == []
    assert all(h.transport is not conn.sock.transport for h in aiohttp_server.connections)
    # ...and the socket still works both ways.
    await ws.send_json({"type": "pong"})
    web_client.server.app[HUB].send_to_user(olga.id, {"type": "queue_changed", "n": 1})
    assert (await next_of(ws, "queue_changed"))["n"] == 1


async def test_a_keep_alive_connection_can_be_upgraded(web_client, aiohttp_client, olga) -> None:
    """A proxy may reuse an idle keep-alive connection for the upgrade: the request before
    it is answered normally, then the same connection becomes the socket."""
    cookie = await _cookie(aiohttp_client, web_client.server, "olga")
    host = f"{web_client.server.host}:{web_client.server.port}"
    reader, writer = await asyncio.open_connection(web_client.server.host, web_client.server.port)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status, head = await _head(reader)
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    assert status == 200 and json.loads(await reader.readexactly(length))["status"] == "ok"

    writer.write(_upgrade(cookie, host))
    status, head = await _head(reader)
    assert status == 101, head
    opcode, payload = await _frame(reader)
    assert (opcode, json.loads(payload)["type"]) == (1, "hello")
    # A masked ping from the client is answered with a pong carrying the same data (the
    # hub's own heartbeat may come first: its slot for a new socket can fall due at once).
    writer.write(_masked(0x9, b"are you there"))
    frame = await _frame(reader)
    while frame[0] == 0x1 and json.loads(frame[1])["type"] == "ping":
        frame = await _frame(reader)
    assert frame == (0xA, b"are you there")
    writer.close()


async def test_not_a_handshake_is_refused_with_a_json_error(
    web_client, aiohttp_client, olga
) -> None:
    cookie = await _cookie(aiohttp_client, web_client.server, "olga")
    resp = await web_client.get("/ws", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "NotAWebsocket" and "not a websocket handshake" in body["message"]
    assert web_client.server.app[HUB].sockets() == []


async def test_a_page_of_another_origin_is_refused(web_client, aiohttp_client, olga) -> None:
    cookie = await _cookie(aiohttp_client, web_client.server, "olga")
    host = f"{web_client.server.host}:{web_client.server.port}"
    for origin, expected in (
        ("https://evil.example", 403),
        (f"http://{host}", 101),  # the page Tierline itself served
    ):
        reader, writer = await asyncio.open_connection(
            web_client.server.host, web_client.server.port
        )
        writer.write(_upgrade(cookie, host, Origin=origin))
        status, head = await _head(reader)
        assert status == expected, (origin, head)
        writer.close()


async def test_shutdown_waits_for_a_hello_still_reading_then_cancels_it(
    web_client, aiohttp_client, olga, monkeypatch
) -> None:
    """Handed over, the handler is not aiohttp's to wait for: a hello still reading live calls
    at shutdown is waited for (a moment), then cancelled and let go of its connection, before
    the app's cleanup closes the database."""
    import web.ws as ws_module

    arrived, released = asyncio.Event(), asyncio.Event()

    async def held_calls(*args: object, **kwargs: object) -> list:
        arrived.set()
        try:
            await asyncio.get_running_loop().create_future()  # the database never answers
        finally:
            for _ in range(5):  # giving a connection back takes a few turns of the loop
                await asyncio.sleep(0)
            released.set()
        return []

    monkeypatch.setattr(ws_module, "calls_for_hello", held_calls)
    monkeypatch.setattr(ws_module, "GREETING_TIMEOUT", 0.05)
    cookie = await _cookie(aiohttp_client, web_client.server, "olga")
    host = f"{web_client.server.host}:{web_client.server.port}"
    reader, writer = await asyncio.open_connection(web_client.server.host, web_client.server.port)
    writer.write(_upgrade(cookie, host, Origin=f"http://{host}"))
    status, _ = await _head(reader)
    assert status == 101
    await asyncio.wait_for(arrived.wait(), 5)
    app = web_client.app

    await web_client.close()

    assert released.is_set()
    assert not app[GREETING]
    opcode, payload = await _frame(reader)  # the browser is told to come back
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] in (1001, 1011)
    writer.close()


async def test_trusted_origins_come_from_settings(aiohttp_client, tl, fake_pbx, olga) -> None:
    from web.app import create_app

    tl.settings.trusted_origins = ["https://crm.example.com"]
    client = await aiohttp_client(create_app(tl, pbx=fake_pbx, start_engine=False))
    cookie = await _cookie(aiohttp_client, client.server, "olga")
    ws = await client.ws_connect(
        "/ws", headers={"Origin": "https://crm.example.com", "Cookie": f"{COOKIE}={cookie}"}
    )
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await ws.close()


async def test_an_oversize_message_closes_the_socket_1009(web_client, aiohttp_client, olga) -> None:
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    await ws.send_str("x" * (MAX_MESSAGE + 1))
    msg = await ws.receive(timeout=5)
    while msg.type is WSMsgType.TEXT:  # a ping may come first
        msg = await ws.receive(timeout=5)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1009)
    hub = web_client.server.app[HUB]
    await _until(lambda: not hub.sockets(olga.id))
    assert hub.sockets(olga.id) == []


async def test_a_browser_closing_is_forgotten(web_client, aiohttp_client, olga) -> None:
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    hub = web_client.server.app[HUB]
    assert len(hub.sockets(olga.id)) == 1
    await ws.close()
    assert ws.close_code == 1000  # the server completed the close handshake
    await _until(lambda: not hub.sockets(olga.id))
    assert hub.sockets(olga.id) == []


def _alive(*kinds: type) -> int:
    """Objects of ``kinds`` the collector tracks: alive, or dead in a cycle it has not freed."""
    return sum(isinstance(o, kinds) for o in gc.get_objects())


async def test_a_closed_socket_is_freed_without_the_collector(
    web_client, aiohttp_client, olga
) -> None:
    """However it ends, nothing of the socket is left in a reference cycle: once the heap is
    frozen (web/heap.py) a cycle would stay until the next sweep."""
    hub = web_client.server.app[HUB]
    browser, ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    await ws.close()
    cookie = await _cookie(aiohttp_client, web_client.server, "olga")
    server = web_client.server
    gc.collect()
    gc.disable()
    try:
        for n in range(12):
            if n % 3 == 2:  # the connection drops with no close frame (a killed browser)
                reader, writer = await asyncio.open_connection(server.host, server.port)
                writer.write(_upgrade(cookie, f"{server.host}:{server.port}"))
                assert (await _head(reader))[0] == 101
                assert json.loads((await _frame(reader))[1])["type"] == "hello"
                writer.transport.abort()
                continue
            ws = await browser.ws_connect("/ws")
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            if n % 3 == 1:
                await ws.close()  # the browser closes
            else:
                hub.drop(hub.sockets(olga.id)[0], 4000, "test")  # the server closes
                assert (await ws.receive(timeout=5)).type is WSMsgType.CLOSE
                await ws.close()
            await _until(lambda: not hub.sockets() and not hub._closing)
        await _until(lambda: not hub.sockets() and not hub._closing)
        assert not hub.sockets() and not hub._closing
        assert _alive(Conn, LiveSocket, ServerProtocol) == 0
    finally:
        gc.enable()


async def test_shutdown_closes_every_socket_1001(aiohttp_client, tl, fake_pbx, olga) -> None:
    from web.app import create_app

    client = await aiohttp_client(create_app(tl, pbx=fake_pbx, start_engine=False))
    _, ws, _ = await connect(aiohttp_client, client.server, "olga")
    await client.server.app[HUB].close_all()
    msg = await ws.receive(timeout=5)
    while msg.type is WSMsgType.TEXT:
        msg = await ws.receive(timeout=5)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1001, "server shutdown")
    assert client.server.app[HUB].sockets() == []


async def test_heartbeats_are_spread_over_the_period(aiohttp_client, tl, fake_pbx, olga) -> None:
    """Each socket is pinged once a period, but not all at once: their pongs would come
    back together and hold the loop ahead of any pop."""
    from web.app import create_app
    from web.hub import HEARTBEAT_TICK, Hub

    app = create_app(tl, pbx=fake_pbx, start_engine=False)
    app[HUB] = Hub(heartbeat=2 * HEARTBEAT_TICK)  # two slices, a tick apart
    client = await aiohttp_client(app)
    sockets = [(await connect(aiohttp_client, client.server, "olga"))[1] for _ in range(4)]
    loop = asyncio.get_running_loop()
    pings: list[float] = []

    async def listen(ws) -> None:  # type: ignore[no-untyped-def]
        end = loop.time() + 6 * HEARTBEAT_TICK
        while (left := end - loop.time()) > 0:
            try:
                msg = await ws.receive_json(timeout=left)
            except TimeoutError:
                return
            assert msg["type"] == "ping"
            pings.append(loop.time())
            await ws.send_json({"type": "pong"})

    await asyncio.gather(*(listen(ws) for ws in sockets))
    # Pings come in bursts, one per tick; each burst is one slice: half the sockets.
    bursts: list[list[float]] = []
    for at in sorted(pings):
        if bursts and at - bursts[-1][-1] < HEARTBEAT_TICK / 2:
            bursts[-1].append(at)
        else:
            bursts.append([at])
    assert len(bursts) >= 4, bursts
    assert all(len(b) == 2 for b in bursts[1:-1]), [len(b) for b in bursts]
    assert not any(ws.closed for ws in sockets)  # every socket answered its pings
