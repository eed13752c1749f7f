"""The call simulator against a real HTTP server that checks the webhook contract."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.simulate import SimulationError, post_events, simulate_call
from cti_adapter.webhook import SIGNATURE_HEADER, parse_events, verify_signature
from engine.errors import TierlineError

SECRET = "pbx-s3cret"


@dataclass
class Pbx:
    """What the test server saw, in arrival order, interleaved with the simulator's sleeps."""

    events: list[CallEvent] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    answer_status: int = 202


PbxServer = tuple[str, Pbx]  # base URL, what it saw


@pytest.fixture
async def pbx_server(aiohttp_server: AiohttpServer) -> PbxServer:
    seen = Pbx()

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            verify_signature(SECRET, raw, request.headers.get(SIGNATURE_HEADER))
            events = parse_events(raw)
        except TierlineError as err:
            return web.json_response(err.to_json(), status=err.status)
        seen.signatures.append(request.headers[SIGNATURE_HEADER])
        seen.events.extend(events)
        seen.log.extend(f"post {e.event.value}" for e in events)
        if seen.answer_status != 202:
            return web.Response(status=seen.answer_status, text="maintenance")
        return web.json_response({"accepted": len(events)}, status=202)

    app = web.Application()
    app.router.add_post("/cti/events", receive)
    server: TestServer = await aiohttp_server(app)
    return str(server.make_url("")), seen


def fake_sleep(seen: Pbx) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        seen.log.append(f"sleep {seconds}")

    return sleep


async def test_a_whole_call_arrives_signed_and_in_order(pbx_server: PbxServer) -> None:
    base_url, seen = pbx_server
    call_id = await simulate_call(
        base_url, SECRET, "+7 916 123-45-67", "101", sleep=fake_sleep(seen)
    )

    assert seen.log == ["post ringing", "sleep 1.0", "post answered", "sleep 5.0", "post hangup"]
    assert [e.event for e in seen.events] == [
        CallEventType.RINGING,
        CallEventType.ANSWERED,
        CallEventType.HANGUP,
    ]
    for e in seen.events:
        assert e.call_id == call_id
        assert e.direction is Direction.INBOUND
        assert (e.from_number, e.to_number, e.extension) == ("+7 916 123-45-67", "7000", "101")
        assert e.at is not None and e.at.tzinfo is not None
    assert len(seen.signatures) == 3
    assert all(s.startswith("sha256=") for s in seen.signatures)
    assert len(set(seen.signatures)) == 3  # each body signed on its own


async def test_an_unanswered_call_rings_then_hangs_up(pbx_server: PbxServer) -> None:
    base_url, seen = pbx_server
    await simulate_call(
        base_url + "/",
        SECRET,
        "89161234567",
        "102",
        to="7001",
        answer_after=None,
        hangup_after=2.5,
        sleep=fake_sleep(seen),
    )
    assert seen.log == ["post ringing", "sleep 2.5", "post hangup"]
    assert {e.to_number for e in seen.events} == {"7001"}


async def test_a_call_left_ringing_sends_only_ringing(pbx_server: PbxServer) -> None:
    base_url, seen = pbx_server
    await simulate_call(
        base_url,
        SECRET,
        "1",
        "101",
        answer_after=None,
        hangup_after=None,
        sleep=fake_sleep(seen),
    )
    assert seen.log == ["post ringing"]


async def test_a_ring_group_rings_all_and_the_first_answers(pbx_server: PbxServer) -> None:
    """As a PBX reports a ring group: each leg's own events; when one answers, the others
    stop ringing (their hangup), and the call ends on the answering leg."""
    base_url, seen = pbx_server
    await simulate_call(
        base_url, SECRET, "+7 916 123-45-67", ["101", "102", "103"], sleep=fake_sleep(seen)
    )
    assert [(e.event.value, e.extension) for e in seen.events] == [
        ("ringing", "101"),
        ("ringing", "102"),
        ("ringing", "103"),
        ("answered", "101"),
        ("hangup", "102"),
        ("hangup", "103"),
        ("hangup", "101"),
    ]
    assert len({e.call_id for e in seen.events}) == 1
    assert seen.log[3:5] == ["sleep 1.0", "post answered"]

    seen.events.clear()
    await simulate_call(
        base_url, SECRET, "1", ["101", "102"], answer_after=None, sleep=fake_sleep(seen)
    )
    assert [(e.event.value, e.extension) for e in seen.events] == [
        ("ringing", "101"), ("ringing", "102"), ("hangup", "101"), ("hangup", "102"),
    ]  # fmt: skip


async def test_post_events_sends_one_signed_array(pbx_server: PbxServer) -> None:
    base_url, seen = pbx_server
    events = [
        {
            "event": "dialing",
            "call_id": "c1",
            "from": "101",
            "to": "+79161234567",
            "extension": "101",
        },
        {
            "event": "answered",
            "call_id": "c1",
            "from": "101",
            "to": "+79161234567",
            "extension": "101",
            "direction": "outbound",
        },
    ]
    async with aiohttp.ClientSession() as session:
        answer = await post_events(base_url, SECRET, events, session=session)
        assert not session.closed  # a caller's session is left open for reuse
    assert answer == {"accepted": 2}
    assert len(seen.signatures) == 1
    assert [e.event for e in seen.events] == [CallEventType.DIALING, CallEventType.ANSWERED]
    assert {e.direction for e in seen.events} == {Direction.OUTBOUND}


async def test_a_wrong_secret_raises_with_status_and_body(pbx_server: PbxServer) -> None:
    base_url, seen = pbx_server
    with pytest.raises(SimulationError) as info:
        await simulate_call(base_url, "not-the-secret", "1", "101", sleep=fake_sleep(seen))
    err = info.value
    assert err.status == 401
    assert json.loads(err.body)["error"] == "SignatureError"
    assert "401" in str(err) and "wrong X-Tierline-Signature" in str(err)
    assert seen.events == [] and seen.log == []  # stopped at the first refusal


async def test_a_bad_event_raises_with_the_servers_400(pbx_server: PbxServer) -> None:
    base_url, _ = pbx_server
    with pytest.raises(SimulationError) as info:
        await post_events(base_url, SECRET, [{"event": "ringing", "call_id": "c1"}])
    assert info.value.status == 400
    assert json.loads(info.value.body) == {
        "error": "InvalidInput",
        "message": "event 0: missing field 'from'",
        "field": "from",
        "index": 0,
    }


async def test_any_answer_but_202_is_an_error(pbx_server: PbxServer) -> None:
    base_url, seen = pbx_server
    seen.answer_status = 200
    with pytest.raises(SimulationError) as info:
        await simulate_call(base_url, SECRET, "1", "101", sleep=fake_sleep(seen))
    assert info.value.status == 200
    assert info.value.body == "maintenance"
    assert "answered 200, expected 202: maintenance" in str(info.value)


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_events(f"http://127.0.0.1:{port}", SECRET, [{"event": "ringing"}])
