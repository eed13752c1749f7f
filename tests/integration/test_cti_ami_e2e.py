"""A recorded Asterisk call, over a real AMI socket, to the operator's browser.

FakeAmiServer replays the real Asterisk 22 recording ``inbound_answered`` (and a ring group
made from it); the app's own pump reads the AmiConnector's events into the pipeline; the
operators' websockets get the pops and the call states.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import select

from cti_adapter.asterisk import AmiConfig, AmiConnector, FakeAmiServer
from engine.models import Call
from tests.integration.helpers import make_client, make_user
from tests.integration.test_ws_pops import connect, next_of
from tests.unit.test_ami_translate import ring_group
from web.app import create_app

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "ami"


@pytest.fixture
async def ami():  # type: ignore[no-untyped-def]
    """The fake Asterisk on a real socket, and a connector that will log in to it."""
    server = FakeAmiServer(RECORDINGS, username="cti", secret="secret")
    server.add_recording("ring_group", ring_group())
    await server.start()
    connector = AmiConnector(
        AmiConfig(host="127.0.0.1", port=server.port, username="cti", secret="secret")
    )
    yield server, connector
    await connector.close()
    await server.stop()


async def _app_on(ami, aiohttp_client, tl):  # type: ignore[no-untyped-def]
    """The app, its pump reading the connector, once the connector has logged in."""
    server, connector = ami
    client = await aiohttp_client(create_app(tl, pbx=connector, start_engine=False))
    async with asyncio.timeout(5):
        await server.wait_for_clients(1)
    return client


async def test_inbound_answered_recording_pops_and_updates(ami, aiohttp_client, tl) -> None:
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    ivan = await make_client(tl, "Ivan Petrov", "8 916 123-45-67")
    client = await _app_on(ami, aiohttp_client, tl)
    _, ws, _ = await connect(aiohttp_client, client.server, "olga")

    await ami[0].replay("inbound_answered")

    pop = await next_of(ws, "screen_pop")
    assert (pop["call_id"], pop["number"]) == ("1795423894.0", "+79161234567")
    assert (pop["client"]["id"], pop["client"]["name"]) == (ivan.id, "Ivan Petrov")
    answered = await next_of(ws, "call_state")
    assert (answered["state"], answered["extension"]) == ("answered", "101")
    hangup = await next_of(ws, "call_state")
    # Asterisk's own timestamps: answered at +3.0 s, hung up at +8.0 s of the recording.
    assert (hangup["state"], hangup["duration_s"], hangup["long_call"]) == ("hangup", 5, False)

    async with tl.db.session() as s:
        [call] = list(await s.exec(select(Call)))
    assert (call.operator_id, call.client_id, call.status) == (olga.id, ivan.id, "ended")


async def test_a_ring_group_over_ami_closes_the_pop_of_who_did_not_answer(
    ami, aiohttp_client, tl
) -> None:
    """Both phones ring; 101 answers; Asterisk hangs 102 up with cause 26 (answered
    elsewhere): Pavel's pop closes, Olga's call goes on and ends as any call does."""
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    pavel = await make_user(tl, "pavel", tier="cold", extension="102")
    await make_client(tl, "Ivan Petrov", "8 916 123-45-67")
    client = await _app_on(ami, aiohttp_client, tl)
    _, olga_ws, _ = await connect(aiohttp_client, client.server, "olga")
    _, pavel_ws, _ = await connect(aiohttp_client, client.server, "pavel")

    await ami[0].replay("ring_group")

    for ws in (olga_ws, pavel_ws):
        assert (await next_of(ws, "screen_pop"))["client"]["name"] == "Ivan Petrov"
    closed = await next_of(pavel_ws, "call_state")
    assert (closed["state"], closed["reason"]) == ("hangup", "answered_elsewhere")
    assert (await next_of(olga_ws, "call_state"))["state"] == "answered"
    ended = await next_of(olga_ws, "call_state")
    assert ended["state"] == "hangup" and "reason" not in ended

    async with tl.db.session() as s:
        calls = {c.operator_id: c for c in await s.exec(select(Call))}
    assert (calls[olga.id].status, calls[pavel.id].status) == ("ended", "taken_elsewhere")
