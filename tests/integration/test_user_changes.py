"""An admin's change to a user takes effect on the live paths at once, not after a cache TTL:
the screen-pop directory follows a new extension, and a deactivated (or moved) operator's
open sockets are closed and cannot come back."""

from __future__ import annotations

import aiohttp
from aiohttp import WSMsgType

from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user
from tests.integration.test_ws_pops import connect, ev, next_of, pbx
from web.hub import ACCOUNT_CHANGED


async def _admin(aiohttp_client, server):  # type: ignore[no-untyped-def]
    browser = await aiohttp_client(server)
    await sign_in(browser, "root")
    return browser


async def test_new_extension_pops_at_once(web_client, aiohttp_client, tl) -> None:
    await make_user(tl, "root", role="admin", tier=None)
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    await make_client(tl, "Ivan Petrov", "8 916 123-45-67")
    admin = await _admin(aiohttp_client, web_client.server)
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    await pbx(web_client, ev("ringing", "before", ext="101"))
    assert (await next_of(ws, "screen_pop"))["call_id"] == "before"  # the directory is warm

    resp = await admin.patch(f"/api/users/{olga.id}", json={"extension": "155"})
    assert resp.status == 200, await resp.text()
    # Her socket was closed (access changed); she reconnects and rings on the new extension.
    closed = await ws.receive(timeout=5)
    while closed.type is WSMsgType.TEXT:  # a heartbeat may come first
        closed = await ws.receive(timeout=5)
    assert closed.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == ACCOUNT_CHANGED
    _, ws2, _ = await connect(aiohttp_client, web_client.server, "olga")

    await pbx(web_client, ev("ringing", "old-ext", ext="101"), ev("ringing", "new-ext", ext="155"))
    assert (await next_of(ws2, "screen_pop"))["call_id"] == "new-ext"
    outcome = await tl.db.read(lambda c: c.exec_driver_sql("select count(*) from calls").scalar())
    assert outcome == 3  # both calls logged; the one on the old extension popped to nobody


async def test_deactivated_operator_is_cut_off(web_client, aiohttp_client, tl) -> None:
    await make_user(tl, "root", role="admin", tier=None)
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    admin = await _admin(aiohttp_client, web_client.server)
    browser, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    resp = await admin.patch(f"/api/users/{olga.id}", json={"active": False})
    assert resp.status == 200
    msg = await ws.receive(timeout=5)
    while msg.type is WSMsgType.TEXT:
        msg = await ws.receive(timeout=5)
    assert ws.close_code == ACCOUNT_CHANGED
    try:
        await browser.ws_connect("/ws")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 401
    else:
        raise AssertionError("a deactivated operator opened a socket")


async def test_display_name_change_keeps_sockets(web_client, aiohttp_client, tl) -> None:
    await make_user(tl, "root", role="admin", tier=None)
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    await make_client(tl, "Ivan Petrov", "8 916 123-45-67")
    admin = await _admin(aiohttp_client, web_client.server)
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    resp = await admin.patch(f"/api/users/{olga.id}", json={"display_name": "Olga K."})
    assert resp.status == 200
    await pbx(web_client, ev("ringing", "c1", ext="101"))
    assert (await next_of(ws, "screen_pop"))["call_id"] == "c1"  # same socket, still open


async def test_bad_updates_are_refused(web_client, aiohttp_client, tl) -> None:
    await make_user(tl, "root", role="admin", tier=None)
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    admin = await _admin(aiohttp_client, web_client.server)
    for body, field in (
        ({"tier": "nowhere"}, "tier"),
        ({"tier": None}, "tier"),  # an operator works one tier
        ({"extension": 155}, "extension"),
        ({"extension": "1" * 40}, "extension"),
        ({"active": "no"}, "active"),
        ({"display_name": ["x"]}, "display_name"),
    ):
        resp = await admin.patch(f"/api/users/{olga.id}", json=body)
        assert resp.status == 400, (body, await resp.text())
        assert (await resp.json())["field"] == field, body
    await make_user(tl, "boris", tier="cold", extension="102")
    resp = await admin.patch(f"/api/users/{olga.id}", json={"extension": "102"})
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["field"] == "extension"
    resp = await admin.get("/api/users")
    mine = next(u for u in (await resp.json())["users"] if u["id"] == olga.id)
    assert (mine["tier"], mine["extension"], mine["active"]) == ("cold", "101", True)
