"""FakePbx is a faithful PbxConnector: what the engine and web app run against in tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.fake import FakePbx
from cti_adapter.port import OriginateRequest, PbxConnector
from engine.clock import FakeClock
from engine.errors import InvalidInput, PbxUnavailable


async def take(pbx: FakePbx, n: int) -> list[CallEvent]:
    stream = pbx.events()
    out = [await asyncio.wait_for(anext(stream), 1) for _ in range(n)]
    await stream.aclose()
    return out


def test_it_is_a_pbx_connector() -> None:
    pbx = FakePbx()
    assert isinstance(pbx, PbxConnector)
    assert pbx.name == "fake"


async def test_an_inbound_call_rings_answers_and_hangs_up() -> None:
    clock = FakeClock(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
    pbx = FakePbx(now=clock.now)
    call_id = pbx.ring("+7 916 123-45-67", "101")
    pbx.answer(call_id, "101")
    pbx.hang_up(call_id, "101")

    events = await take(pbx, 3)
    assert [e.event for e in events] == [
        CallEventType.RINGING,
        CallEventType.ANSWERED,
        CallEventType.HANGUP,
    ]
    for e in events:
        assert e.call_id == call_id
        assert e.direction is Direction.INBOUND
        assert (e.from_number, e.to_number, e.extension) == ("+7 916 123-45-67", "7000", "101")
        assert e.customer_number == "+7 916 123-45-67"
        assert e.at == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert pbx.pushed == events


async def test_ring_takes_a_call_id_and_generates_distinct_ones() -> None:
    pbx = FakePbx()
    assert pbx.ring("1", "101", to="7001", call_id="1763884800.42") == "1763884800.42"
    a, b = pbx.ring("2", "101"), pbx.ring("3", "102")
    assert a != b
    events = await take(pbx, 3)
    assert events[0].to_number == "7001"
    assert [e.call_id for e in events] == ["1763884800.42", a, b]


async def test_originate_records_the_request_and_pushes_dialing() -> None:
    pbx = FakePbx()
    req = OriginateRequest(extension="101", number="+79161234567", request_id="req-1")
    assert await pbx.originate(req) == "req-1"
    assert pbx.originated == [req]
    pbx.answer("req-1", "101")

    dialing, answered = await take(pbx, 2)
    assert dialing.event is CallEventType.DIALING
    assert dialing.direction is Direction.OUTBOUND
    assert (dialing.call_id, dialing.to_number, dialing.extension) == (
        "req-1",
        "+79161234567",
        "101",
    )
    assert dialing.customer_number == "+79161234567"
    # Later events of the call keep its direction and numbers, as a PBX reports them.
    assert answered.direction is Direction.OUTBOUND
    assert answered.customer_number == "+79161234567"


async def test_originate_when_the_pbx_is_down() -> None:
    pbx = FakePbx()
    pbx.down = True
    with pytest.raises(PbxUnavailable) as info:
        await pbx.originate(OriginateRequest("101", "+79161234567", "req-1"))
    assert info.value.status == 503
    assert pbx.originated == []
    assert pbx.pushed == []


async def test_originate_refused() -> None:
    pbx = FakePbx()
    pbx.refuse = "extension 101 is not registered"
    with pytest.raises(InvalidInput) as info:
        await pbx.originate(OriginateRequest("101", "+79161234567", "req-1"))
    assert info.value.message == "the PBX refused the call: extension 101 is not registered"
    assert pbx.originated == []

    pbx.refuse = None
    assert await pbx.originate(OriginateRequest("101", "+79161234567", "req-2")) == "req-2"


async def test_a_reader_waits_for_events_pushed_later() -> None:
    pbx = FakePbx()
    reader = asyncio.create_task(take(pbx, 1))
    await asyncio.sleep(0)
    assert not reader.done()
    pbx.ring("1", "101", call_id="late")
    [event] = await reader
    assert event.call_id == "late"


async def test_close_ends_the_stream_and_takes_the_pbx_down() -> None:
    pbx = FakePbx()
    pbx.ring("1", "101", call_id="c1")
    await pbx.close()
    seen = [e.call_id async for e in pbx.events()]
    assert seen == ["c1"]  # what was pushed before close is still delivered
    assert [e async for e in pbx.events()] == []  # a second reader ends too
    with pytest.raises(PbxUnavailable):
        await pbx.originate(OriginateRequest("101", "+79161234567", "req-1"))
    with pytest.raises(RuntimeError):
        pbx.ring("1", "101")
    await pbx.close()  # idempotent


async def test_emit_sends_an_event_as_given() -> None:
    pbx = FakePbx()
    odd = CallEvent(CallEventType.HANGUP, "x", Direction.OUTBOUND, "a", "b", "999")
    pbx.emit(odd)
    pbx.emit(odd)  # PBXes repeat themselves; the fake can too
    assert await take(pbx, 2) == [odd, odd]
