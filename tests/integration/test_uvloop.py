"""Tierline under uvloop, as gunicorn's ``GunicornUVLoopWebWorker`` would run it.

The websocket hand-over takes the connection's transport from aiohttp; uvloop's transports
are not subclasses of ``asyncio.Transport``, and a check for that class once refused every
websocket under uvloop ("the connection closed during the handshake"). Here the whole path
runs on a real uvloop loop: sign-in, ``GET /ws`` and its hello, a signed ringing webhook, and
the card arriving on the socket. A plain (sync) test with a loop of its own: the suite's
fixtures live on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

from cti_adapter.webhook import SIGNATURE_HEADER, sign
from engine.service import Tierline
from engine.settings import Settings
from tests.integration.helpers import make_client, make_user
from web.app import create_app

SECRET = "uvloop-pbx-secret"


async def _scenario(tmp_path: Path) -> dict:
    settings = Settings(
        data_dir=tmp_path,
        pbx_secret=SECRET,
        session_secret="uvloop-session-secret-0123456789",
        default_region="RU",
        timezone="Europe/Moscow",
    )
    tl = Tierline.build(settings)
    await tl.start(timers=False)
    runner = web.AppRunner(create_app(tl, start_engine=False))
    try:
        await make_user(tl, "olga", tier="cold", extension="101")
        await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            signed = await browser.post(
                base + "/api/session",
                json={"username": "olga", "password": "correct horse battery"},
            )
            assert signed.status == 200, await signed.text()
            async with browser.ws_connect(base + "/ws") as ws:
                hello = await ws.receive_json(timeout=5)
                assert hello["type"] == "hello"
                body = json.dumps(
                    {"event": "ringing", "call_id": "uv-1", "from": "8 916 123-45-67",
                     "to": "7000", "extension": "101"}
                ).encode()  # fmt: skip
                sent = await browser.post(
                    base + "/cti/events", data=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
                )
                assert sent.status == 202, await sent.text()
                while True:
                    message = await ws.receive_json(timeout=5)
                    if message["type"] == "screen_pop":
                        return message
                    assert message["type"] == "ping", message
    finally:
        await runner.cleanup()
        await tl.stop()


def test_a_pop_reaches_the_operator_under_uvloop(tmp_path: Path) -> None:
    loop = uvloop.new_event_loop()
    try:
        assert not isinstance(loop, asyncio.BaseEventLoop)  # really not asyncio's own loop
        pop = loop.run_until_complete(asyncio.wait_for(_scenario(tmp_path), 30))
    finally:
        loop.close()
    assert pop["call_id"] == "uv-1"
    assert pop["client"]["name"] == "Ivan Petrov"
