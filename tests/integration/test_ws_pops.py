"""Screen pops end to end: PBX event in, the right operator's websocket out.

Real websocket clients against the real app (SQLite and PostgreSQL); the PBX is the signed
webhook or the in-memory FakePbx feeding the app's pump.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import WSMsgType

from cti_adapter.directory import Operator
from cti_adapter.pops import unaddressed
from engine.models import Call
from tests.conftest import sign_in
from tests.integration.helpers import IVAN, ev, make_client, make_user, pbx
from web.api.cti import PIPELINE
from web.app import create_app
from web.hub import Hub
from web.ws import HUB


async def connect(aiohttp_client, server, username: str):
    """A browser of its own (cookie jar) signed in as ``username``, with its socket open."""
    browser = await aiohttp_client(server)
    await sign_in(browser, username)
    ws = await browser.ws_connect("/ws")
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    return browser, ws, hello


async def next_of(ws, *types: str) -> dict:
    """The next message of one of ``types``; heartbeats in between are skipped."""
    while True:
        msg = await ws.receive_json(timeout=5)
        if msg["type"] in types:
            return msg
        assert msg["type"] == "ping", msg


@pytest.fixture
async def olga(tl):
    return await make_user(tl, "olga", tier="cold", extension="101")


async def test_one_match_pops_the_full_card(web_client, aiohttp_client, tl, olga) -> None:
    ivan = await make_client(tl, "Ivan Petrov", "8 916 123-45-67")
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    await pbx(web_client, ev("ringing", "c1"))

    pop = await next_of(ws, "screen_pop")
    assert pop["call_id"] == "c1"
    assert pop["number"] == "+79161234567"
    assert pop["written"] == "8 916 123-45-67"  # as the card writes it
    assert pop["matches"] == []
    card = pop["client"]
    assert (card["id"], card["name"], card["tier"], card["state"]) == (
        ivan.id,
        "Ivan Petrov",
        "cold",
        "new",
    )
    assert card["phones"][0]["e164"] == "+79161234567"
    assert card["events"] and card["script"] and "next_followup" in card
    assert pop["sent_at"].endswith("Z")
    assert pop["direction"] == "inbound"


async def test_several_matches_pop_the_list_and_the_choice_links_the_call(
    web_client, aiohttp_client, tl, olga
) -> None:
    a = await make_client(tl, "Ivan Petrov", IVAN)
    b = await make_client(tl, "Maria Petrova", "89161234567")
    browser, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    await pbx(web_client, ev("ringing", "c2"))

    pop = await next_of(ws, "screen_pop")
    assert pop["client"] is None
    assert pop["written"] == "+7 916 123-45-67"
    assert [(m["id"], m["name"]) for m in pop["matches"]] == [
        (a.id, "Ivan Petrov"),
        (b.id, "Maria Petrova"),
    ]
    resp = await browser.post("/api/calls/c2/link", json={"client_id": b.id})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["name"] == "Maria Petrova"
    async with tl.db.session() as s:
        call = (await s.exec(Call.__table__.select().where(Call.pbx_call_id == "c2"))).one()  # type: ignore[attr-defined]
    assert call.client_id == b.id


async def test_unknown_number_pops_an_empty_card(web_client, aiohttp_client, tl, olga) -> None:
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    await pbx(web_client, ev("ringing", "c3", number="+44 20 7946 0958"))
    await pbx(web_client, ev("ringing", "c4", number="anonymous"))

    unknown = await next_of(ws, "screen_pop")
    assert (unknown["number"], unknown["client"], unknown["matches"]) == ("+442079460958", None, [])
    assert unknown["written"] == "+44 20 7946 0958"  # as people write it, not E.164
    withheld = await next_of(ws, "screen_pop")
    assert (withheld["number"], withheld["client"], withheld["matches"]) == ("anonymous", None, [])
    assert withheld["written"] == "anonymous"


async def test_another_tiers_client_pops_restricted(web_client, aiohttp_client, tl, olga) -> None:
    buyer = await make_client(tl, "Big Buyer", IVAN, state="presentation")  # sales tier
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    await pbx(web_client, ev("ringing", "c5"))

    pop = await next_of(ws, "screen_pop")
    assert pop["client"] == {"id": buyer.id, "tier": "sales", "restricted": True}
    assert "Big Buyer" not in json.dumps(pop)
    assert pop["written"] == "+7 916 123-45-67"  # the number rang, not how the client wrote it


async def test_a_pop_goes_to_its_operator_only(web_client, aiohttp_client, tl, olga) -> None:
    await make_user(tl, "boris", tier="cold", extension="102")
    await make_client(tl, "Ivan Petrov", IVAN)
    _, olga_ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    _, boris_ws, _ = await connect(aiohttp_client, web_client.server, "boris")

    await pbx(web_client, ev("ringing", "for-olga", ext="101"))
    assert (await next_of(olga_ws, "screen_pop"))["call_id"] == "for-olga"
    await pbx(web_client, ev("ringing", "for-boris", ext="102"))

    # Boris's first message after hello is his own call: Olga's never reached him.
    msg = await next_of(boris_ws, "screen_pop", "call_state")
    assert msg["call_id"] == "for-boris"


async def test_every_tab_gets_the_pop_once(web_client, aiohttp_client, tl, olga) -> None:
    await make_client(tl, "Ivan Petrov", IVAN)
    browser, tab1, _ = await connect(aiohttp_client, web_client.server, "olga")
    tab2 = await browser.ws_connect("/ws")
    assert (await tab2.receive_json(timeout=5))["type"] == "hello"

    await pbx(web_client, ev("ringing", "c6"))
    await pbx(web_client, ev("ringing", "c6"))  # the PBX repeats itself
    await pbx(web_client, ev("answered", "c6"))

    for tab in (tab1, tab2):
        assert (await next_of(tab, "screen_pop", "call_state"))["type"] == "screen_pop"
        # The next message is the answer, not the pop again.
        assert (await next_of(tab, "screen_pop", "call_state"))["type"] == "call_state"


async def test_answer_and_hangup_update_the_pop(
    web_client, aiohttp_client, tl, clock, olga
) -> None:
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    await pbx(web_client, ev("ringing", "short"), ev("answered", "short"))
    await clock.advance(timedelta(seconds=599))
    await pbx(web_client, ev("hangup", "short"))
    await pbx(web_client, ev("ringing", "long"), ev("answered", "long"))
    await clock.advance(timedelta(minutes=10))
    await pbx(web_client, ev("hangup", "long"))

    got = [await next_of(ws, "screen_pop", "call_state") for _ in range(6)]
    assert [(m["call_id"], m["type"], m.get("state")) for m in got] == [
        ("short", "screen_pop", None),
        ("short", "call_state", "answered"),
        ("short", "call_state", "hangup"),
        ("long", "screen_pop", None),
        ("long", "call_state", "answered"),
        ("long", "call_state", "hangup"),
    ]
    assert (got[2]["duration_s"], got[2]["long_call"], got[2]["extension"]) == (599, False, "101")
    assert (got[5]["duration_s"], got[5]["long_call"]) == (600, True)


async def test_a_ring_group_answered_by_one_closes_the_others_pops(
    web_client, aiohttp_client, tl, olga
) -> None:
    """Both ring; Olga answers. Pavel's hangup says a colleague took the call (nothing for him
    to wrap up), told apart from a call nobody answered; Olga's is an ordinary hangup."""
    await make_user(tl, "pavel", tier="cold", extension="102")
    await make_user(tl, "boss", role="supervisor", tier=None)
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    olga_browser, olga_ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    _, pavel_ws, _ = await connect(aiohttp_client, web_client.server, "pavel")
    await pbx(web_client, ev("ringing", "group", ext="101"), ev("ringing", "group", ext="102"))
    assert (await next_of(pavel_ws, "screen_pop"))["call_id"] == "group"
    ringing = await (await olga_browser.get(f"/api/clients/{ivan.id}")).json()
    # Ringing, not missed: the console says "missed" only of an ended, unanswered call. One
    # line for the call, however many phones it rings.
    assert [(c["answered"], c["status"]) for c in ringing["calls"]] == [(False, "ringing")]
    # As a PBX reports a ring group: each leg's own events, one request each.
    await pbx(web_client, ev("answered", "group", ext="101"))
    await pbx(web_client, ev("hangup", "group", ext="102"))
    closed = await next_of(pavel_ws, "call_state")
    assert (closed["state"], closed["extension"]) == ("hangup", "102")
    assert closed["reason"] == "answered_elsewhere"
    await pbx(web_client, ev("hangup", "group", ext="101"))
    assert (await next_of(olga_ws, "screen_pop"))["call_id"] == "group"
    assert (await next_of(olga_ws, "call_state"))["state"] == "answered"
    ended = await next_of(olga_ws, "call_state")
    assert ended["state"] == "hangup" and "reason" not in ended
    # The supervisor sees Olga wrapping the call up, and Pavel idle: it was never his call.
    supervisor, _, _ = await connect(aiohttp_client, web_client.server, "boss")
    live = await (await supervisor.get("/api/supervisor/live")).json()
    status = {op["name"]: (op["status"], op["call_id"]) for op in live["operators"]}
    assert status["Olga"] == ("wrap_up", "group") and status["Pavel"] == ("idle", None)

    await pbx(web_client, ev("ringing", "missed", ext="102"), ev("hangup", "missed", ext="102"))
    assert (await next_of(pavel_ws, "screen_pop"))["call_id"] == "missed"
    missed = await next_of(pavel_ws, "call_state")
    assert (missed["call_id"], missed["reason"]) == ("missed", "not_answered")
    # Nobody picked up: nothing for Pavel to wrap up, he is idle (the call waits in the
    # missed calls instead).
    live = await (await supervisor.get("/api/supervisor/live")).json()
    status = {op["name"]: (op["status"], op["call_id"]) for op in live["operators"]}
    assert status["Pavel"] == ("idle", None)
    assert [m["number"] for m in live["missed"]] == ["+79161234567"]

    # The card lists a call once (the leg Pavel missed while Olga answered is not a call of
    # his), and a call nobody answered as such.
    card = await (await olga_browser.get(f"/api/clients/{ivan.id}")).json()
    assert sorted((c["direction"], c["answered"], c["status"]) for c in card["calls"]) == [
        ("inbound", False, "ended"),  # "missed"
        ("inbound", True, "ended"),  # "group", Olga's leg
    ]


async def test_the_card_lists_a_call_once_however_many_phones_it_rang(
    web_client, aiohttp_client, tl, clock, olga
) -> None:
    await make_user(tl, "pavel", tier="cold", extension="102")
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    browser, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    async def lines() -> list[tuple[bool, str]]:
        card = await (await browser.get(f"/api/clients/{ivan.id}")).json()
        return [(c["answered"], c["status"]) for c in card["calls"]]

    await pbx(web_client, ev("ringing", "g", "101"), ev("ringing", "g", "102"))
    await pbx(web_client, ev("answered", "g", "102"))  # olga's phone still rings
    assert await lines() == [(True, "answered")]  # the answered leg stands for the call
    await pbx(web_client, ev("hangup", "g", "101"), ev("hangup", "g", "102"))
    assert await lines() == [(True, "ended")]
    # Rang both, nobody answered: one missed call, not two.
    await clock.advance(timedelta(minutes=1))
    await pbx(web_client, ev("ringing", "m", "101"), ev("ringing", "m", "102"))
    await pbx(web_client, ev("hangup", "m", "101"), ev("hangup", "m", "102"))
    assert await lines() == [(False, "ended"), (True, "ended")]
    # The pop's card (read in one statement on SQLite) says the same.
    await clock.advance(timedelta(minutes=1))
    await pbx(web_client, ev("ringing", "next", "101"))
    pop = await next_of(ws, "screen_pop", "call_state")
    while (pop["type"], pop["call_id"]) != ("screen_pop", "next"):  # the earlier calls' news
        pop = await next_of(ws, "screen_pop", "call_state")
    calls = [(c["answered"], c["status"]) for c in pop["client"]["calls"]]
    assert calls == [(False, "ended"), (True, "ended")]  # read before this call is written


async def test_a_leg_reported_over_before_the_answer_still_closes(
    web_client, aiohttp_client, tl, olga
) -> None:
    """A PBX's webhooks for one call may overtake each other: Pavel's leg is reported over
    before Olga's answer arrives. It looks missed at first; the answer corrects it, and
    Pavel's pop closes then."""
    await make_user(tl, "pavel", tier="cold", extension="102")
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    olga_browser, _, _ = await connect(aiohttp_client, web_client.server, "olga")
    _, pavel_ws, _ = await connect(aiohttp_client, web_client.server, "pavel")
    await pbx(web_client, ev("ringing", "race", ext="101"), ev("ringing", "race", ext="102"))
    assert (await next_of(pavel_ws, "screen_pop"))["call_id"] == "race"
    await pbx(web_client, ev("hangup", "race", ext="102"))
    assert (await next_of(pavel_ws, "call_state"))["reason"] == "not_answered"
    await pbx(web_client, ev("answered", "race", ext="101"))
    closed = await next_of(pavel_ws, "call_state")
    assert (closed["call_id"], closed["state"], closed["extension"]) == ("race", "hangup", "102")
    assert closed["reason"] == "answered_elsewhere"
    card = await (await olga_browser.get(f"/api/clients/{ivan.id}")).json()
    assert [c["answered"] for c in card["calls"]] == [True]  # one call, Olga's


async def test_asterisk_says_answered_elsewhere_in_the_hangup(web_client, tl, olga) -> None:
    """The AMI connector knows it from the hangup's cause (26) even when the answering leg's
    own event has not been recorded first."""
    from cti_adapter.events import CallEvent, CallEventType, Direction

    pushed: list[dict] = []
    tl.bus.subscribe(lambda ch, msg: pushed.append(unaddressed(msg)))
    pipeline = web_client.app[PIPELINE]
    leg = dict(call_id="q1", direction=Direction.INBOUND, from_number=IVAN, to_number="7000")
    await pipeline.handle([CallEvent(CallEventType.RINGING, extension="101", **leg)])
    await pipeline.handle(
        [
            CallEvent(
                CallEventType.HANGUP, extension="101", extra={"reason": "answered_elsewhere"},
                **leg,
            )
        ]
    )  # fmt: skip
    [state] = [m for m in pushed if m["type"] == "call_state"]
    assert (state["state"], state["reason"]) == ("hangup", "answered_elsewhere")


async def test_a_reconnecting_browser_gets_the_live_calls(
    web_client, aiohttp_client, tl, olga
) -> None:
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    browser, ws, hello = await connect(aiohttp_client, web_client.server, "olga")
    assert hello["live_calls"] == [] and hello["user"]["username"] == "olga"
    await pbx(web_client, ev("ringing", "c7"))
    await next_of(ws, "screen_pop")
    await ws.close()

    again = await browser.ws_connect("/ws")
    hello = await again.receive_json(timeout=5)
    [live] = hello["live_calls"]
    assert (live["type"], live["call_id"], live["client"]["id"]) == ("screen_pop", "c7", ivan.id)
    assert (live["state"], live["direction"]) == ("ringing", "inbound")
    # The pop in hello counts as delivered: a late repeat of it does not pop again.
    await pbx(web_client, ev("ringing", "c7"), ev("answered", "c7"))
    assert (await next_of(again, "screen_pop", "call_state"))["type"] == "call_state"

    await pbx(web_client, ev("hangup", "c7"))
    third = await browser.ws_connect("/ws")
    assert (await third.receive_json(timeout=5))["live_calls"] == []


async def test_hello_says_what_became_of_calls_that_ended_meanwhile(
    web_client, aiohttp_client, tl, olga
) -> None:
    """A browser offline while its pops' calls went on: hello gives the calls still live in
    their state now, and the hangups of those that ended (a colleague's answer included)."""
    await make_user(tl, "pavel", tier="cold", extension="102")
    browser, ws, _ = await connect(aiohttp_client, web_client.server, "pavel")
    await pbx(
        web_client,
        ev("ringing", "taken", ext="101"), ev("ringing", "taken", ext="102"),
        ev("ringing", "missed", ext="102"), ev("ringing", "talking", ext="102"),
    )  # fmt: skip
    assert len([await next_of(ws, "screen_pop") for _ in range(3)]) == 3
    await ws.close()  # offline: nothing of what follows reaches this browser

    await pbx(web_client, ev("answered", "taken", ext="101"), ev("hangup", "taken", ext="102"))
    await pbx(web_client, ev("hangup", "missed", ext="102"))
    await pbx(web_client, ev("answered", "talking", ext="102"))
    again = await browser.ws_connect("/ws")
    hello = await again.receive_json(timeout=5)
    assert [(p["call_id"], p["state"]) for p in hello["live_calls"]] == [("talking", "answered")]
    ended = {m["call_id"]: m for m in hello["ended_calls"]}
    assert set(ended) == {"taken", "missed"}
    assert all(m["type"] == "call_state" and m["state"] == "hangup" for m in ended.values())
    assert ended["taken"]["reason"] == "answered_elsewhere"
    assert ended["missed"]["reason"] == "not_answered"


async def test_hello_is_encoded_as_the_pops_are(web_client, aiohttp_client, tl, olga) -> None:
    """One encoding for everything a socket carries (engine.bus.to_json): compact, and a
    Cyrillic name as it is, not six bytes of escape a letter."""
    await make_client(tl, "Иван Петров", IVAN)
    browser, ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    await pbx(web_client, ev("ringing", "c8"))
    pop = await ws.receive_str(timeout=5)
    while json.loads(pop)["type"] == "ping":  # a new socket's heartbeat can fall due at once
        pop = await ws.receive_str(timeout=5)
    await ws.close()
    again = await browser.ws_connect("/ws")
    hello = await again.receive_str(timeout=5)
    assert "Иван Петров" in pop and "Иван Петров" in hello
    assert '", "' not in hello and '": ' not in hello
    live, popped = json.loads(hello)["live_calls"][0], json.loads(pop)
    # (The hello's card is read later: the call it pops is in its last calls by then.)
    assert (live["call_id"], live["client"]["id"]) == (popped["call_id"], popped["client"]["id"])


async def test_unauthenticated_socket_is_401(web_client) -> None:
    resp = await web_client.get("/ws")
    assert resp.status == 401
    assert (await resp.json())["error"] == "NotSignedIn"
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await web_client.ws_connect("/ws")
    assert err.value.status == 401


async def test_pops_from_the_connector_pump(web_client, aiohttp_client, tl, fake_pbx, olga) -> None:
    await make_client(tl, "Ivan Petrov", IVAN)
    _, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    call_id = fake_pbx.ring(IVAN, "101")
    pop = await next_of(ws, "screen_pop")
    assert (pop["call_id"], pop["client"]["name"]) == (call_id, "Ivan Petrov")
    fake_pbx.answer(call_id, "101")
    fake_pbx.hang_up(call_id, "101")
    assert (await next_of(ws, "call_state"))["state"] == "answered"
    assert (await next_of(ws, "call_state"))["state"] == "hangup"


async def test_the_directory_is_warm_before_the_first_ring(aiohttp_client, tl, fake_pbx) -> None:
    """After a restart each operator's first ring pops without a directory read first: the
    app caches every active operator's extension as it starts."""
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    await make_user(tl, "pavel", tier="sales", extension="102")
    app = create_app(tl, pbx=fake_pbx, start_engine=False)
    client = await aiohttp_client(app)
    try:
        directory = app[PIPELINE].directory
        for _ in range(200):
            if directory.cached("102")[0]:
                break
            await asyncio.sleep(0.01)
        assert directory.cached("101") == (True, Operator(olga.id, "operator", "cold", "101"))
        assert directory.cached("102")[0] and directory.cached("103") == (False, None)
    finally:
        await client.close()


async def test_queue_nudges_reach_the_owner_or_the_tier(
    web_client, aiohttp_client, tl, olga
) -> None:
    await make_user(tl, "sam", tier="sales", extension="201")
    _, olga_ws, _ = await connect(aiohttp_client, web_client.server, "olga")
    _, sam_ws, _ = await connect(aiohttp_client, web_client.server, "sam")

    await tl.bus.publish("followups", {"type": "follow_up_due", "tier": "cold", "owner_id": None})
    await tl.bus.publish("queues", {"type": "queue_changed", "tier": "cold", "owner_id": olga.id})
    await tl.bus.publish("queues", {"type": "queue_changed", "tier": "sales", "owner_id": None})

    assert (await next_of(olga_ws, "follow_up_due"))["tier"] == "cold"
    assert (await next_of(olga_ws, "queue_changed"))["owner_id"] == olga.id
    # Sam (sales) saw neither cold message: his first is the sales one.
    assert (await next_of(sam_ws, "follow_up_due", "queue_changed"))["tier"] == "sales"


async def start_app(aiohttp_client, tl, fake_pbx, hub: Hub):
    app = create_app(tl, pbx=fake_pbx, start_engine=False)
    app[HUB] = hub
    return await aiohttp_client(app)


async def test_a_stalled_socket_does_not_delay_another_operators_pop(
    aiohttp_client, tl, fake_pbx, olga
) -> None:
    boris = await make_user(tl, "boris", tier="cold", extension="102")
    await make_client(tl, "Ivan Petrov", IVAN)
    hub = Hub(queue_size=8)
    client = await start_app(aiohttp_client, tl, fake_pbx, hub)
    _, olga_ws, _ = await connect(aiohttp_client, client.server, "olga")
    stalled = await aiohttp_client(client.server)
    await sign_in(stalled, "boris")
    boris_ws = await stalled.ws_connect("/ws")  # and never reads again
    [boris_conn] = hub.sockets(boris.id)

    big = {"type": "queue_changed", "padding": "x" * 1_000_000}
    for _ in range(100):  # until boris's writer is stuck on a full TCP window
        hub.send_to_user(boris.id, big)
        await asyncio.sleep(0.02)
        if boris_conn.queued() >= 2:
            break
    assert boris_conn.queued() >= 2, "the socket never stalled"

    await pbx(client, ev("ringing", "c8", ext="101"))
    assert (await next_of(olga_ws, "screen_pop"))["call_id"] == "c8"
    # Olga had her pop while Boris's messages were still waiting behind his stuck socket.
    assert boris_conn.queued() >= 2 and not boris_conn.closed

    # A broadcast writes to Olga's idle socket at once and queues behind Boris's stuck one;
    # it does not wait for him.
    before = boris_conn.queued()
    async with asyncio.timeout(2):
        assert await hub.broadcast({"type": "dashboard", "n": 1}) == 2
    assert (await next_of(olga_ws, "dashboard"))["n"] == 1
    assert boris_conn.queued() == before + 1

    while not boris_conn.closed:
        hub.send_to_user(boris.id, big)
    assert hub.overflows == 1
    assert hub.sockets(boris.id) == []
    assert boris_conn.close_reason == "too slow: reconnect"
    # A later pop for Olga is unaffected.
    await pbx(client, ev("ringing", "c9", ext="101"))
    assert (await next_of(olga_ws, "screen_pop"))["call_id"] == "c9"
    await boris_ws.close()


async def test_heartbeats_close_a_socket_that_stops_answering(
    aiohttp_client, tl, fake_pbx, olga
) -> None:
    client = await start_app(aiohttp_client, tl, fake_pbx, Hub(heartbeat=0.05, dead_after=0.3))
    browser, alive, _ = await connect(aiohttp_client, client.server, "olga")
    silent = await browser.ws_connect("/ws")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.6
    pings = 0
    while loop.time() < deadline:
        msg = await alive.receive_json(timeout=1)
        assert msg["type"] == "ping"
        pings += 1
        await alive.send_json({"type": "pong"})

    assert pings >= 3
    assert not alive.closed
    # The silent tab read its pings but never answered: closed.
    while True:
        msg = await silent.receive(timeout=1)
        if msg.type is not WSMsgType.TEXT:
            break
        assert json.loads(msg.data)["type"] in ("hello", "ping")
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1001, "no pong")


async def test_a_stalled_server_does_not_close_sockets_it_never_pinged(
    aiohttp_client, tl, fake_pbx, olga
) -> None:
    """The loop stalls longer than ``dead_after`` (as in a long collection): the browser
    was never given the chance to answer, so it is pinged again, not closed."""
    client = await start_app(aiohttp_client, tl, fake_pbx, Hub(heartbeat=0.1, dead_after=0.3))
    _, alive, _ = await connect(aiohttp_client, client.server, "olga")
    for _ in range(2):
        assert (await alive.receive_json(timeout=1))["type"] == "ping"
        await alive.send_json({"type": "pong"})
    assert (await alive.receive_json(timeout=1))["type"] == "ping"

    time.sleep(0.5)  # the whole process stalls with this ping unanswered  # noqa: ASYNC251

    # The next heartbeat pings again (it closed the socket with 1001 before).
    assert (await alive.receive_json(timeout=1))["type"] == "ping"
    await alive.send_json({"type": "pong"})
    assert (await alive.receive_json(timeout=1))["type"] == "ping"
    assert not alive.closed


async def test_click_to_dial_pops_the_chosen_client(
    web_client, aiohttp_client, tl, clock, fake_pbx, olga
) -> None:
    await clock.advance(timedelta(hours=2))  # inside the calling window
    await make_client(tl, "Ivan Petrov", IVAN)
    maria = await make_client(tl, "Maria Petrova", IVAN)  # the same number: two matches
    browser, ws, _ = await connect(aiohttp_client, web_client.server, "olga")

    resp = await browser.post("/api/calls/dial", json={"client_id": maria.id, "number": IVAN})
    assert resp.status == 202, await resp.text()

    pop = await next_of(ws, "screen_pop")
    assert pop["call_id"] == (await resp.json())["call_id"]
    assert (pop["client"]["id"], pop["matches"]) == (maria.id, [])
    assert pop["direction"] == "outbound"


async def test_a_batch_of_ringing_events_pops_each_operator(web_client, aiohttp_client, tl) -> None:
    """One PBX request with more ringing events than one database hop builds (a ring group
    across many phones): every operator gets exactly their own pop, with the right card."""
    from cti_adapter.pop_path import POPS_PER_HOP

    count = POPS_PER_HOP + 3
    sockets = {}
    for i in range(count):
        await make_user(tl, f"ring{i}", tier="cold", extension=f"5{i:02d}")
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    for i in range(count):
        _, sockets[i], _ = await connect(aiohttp_client, web_client.server, f"ring{i}")
    await pbx(web_client, *(ev("ringing", "group1", ext=f"5{i:02d}") for i in range(count)))
    for i in range(count):
        pop = await next_of(sockets[i], "screen_pop")
        assert (pop["call_id"], pop["client"]["id"]) == ("group1", ivan.id)
    calls = await tl.db.read(
        lambda c: c.exec_driver_sql(
            "select count(*) from calls where pbx_call_id = 'group1' and client_id is not null"
        ).scalar()
    )
    assert calls == count  # every leg logged and linked to the client the pop found
