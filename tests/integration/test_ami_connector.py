"""AmiConnector over real TCP against FakeAmiServer, which speaks AMI like Asterisk 22."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cti_adapter.asterisk import AmiConfig, AmiConnector, FakeAmiServer, backoff_delay
from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.port import OriginateRequest, PbxConnector
from engine.errors import InvalidInput, PbxUnavailable

_LOCAL = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "pbx" / "asterisk-ami"
RECORDINGS = _LOCAL if (_LOCAL / "inbound_answered.txt").exists() else _SHARED

WAIT = 5.0  # generous ceiling; every wait below ends as soon as the socket delivers


@pytest.fixture
async def server() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer(RECORDINGS, username="cti", secret="s3cret") as srv:
        yield srv


def config(server: FakeAmiServer, **overrides: object) -> AmiConfig:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": "cti",
        "secret": "s3cret",
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
        "connect_timeout": 1.0,
        "originate_timeout": 1.0,
    }
    values.update(overrides)
    return AmiConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def connector(server: FakeAmiServer) -> AsyncIterator[AmiConnector]:
    conn = AmiConnector(config(server), rng=random.Random(7))
    yield conn
    await conn.close()


async def take(events: AsyncIterator[CallEvent], n: int) -> list[CallEvent]:
    async with asyncio.timeout(WAIT):
        return [await anext(events) for _ in range(n)]


async def nothing_more(events: AsyncIterator[CallEvent]) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await anext(events)


async def test_logs_in_and_follows_an_inbound_call(
    server: FakeAmiServer, connector: AmiConnector
) -> None:
    assert isinstance(connector, PbxConnector)
    events = connector.events()
    async with asyncio.timeout(WAIT):
        await connector.wait_connected()
    login = server.actions[0]
    assert (login["Action"], login["Username"], login["Secret"]) == ("Login", "cti", "s3cret")
    assert connector.state == "connected"

    await server.replay("inbound_answered")
    got = await take(events, 3)
    assert [(e.event, e.call_id, e.from_number, e.to_number, e.extension) for e in got] == [
        (CallEventType.RINGING, "1795423894.0", "+79161234567", "7000", "101"),
        (CallEventType.ANSWERED, "1795423894.0", "+79161234567", "7000", "101"),
        (CallEventType.HANGUP, "1795423894.0", "+79161234567", "7000", "101"),
    ]
    assert all(e.direction is Direction.INBOUND and e.at is not None for e in got)
    await nothing_more(events)


async def test_a_whole_call_in_one_segment_is_split_into_its_events(
    server: FakeAmiServer, connector: AmiConnector
) -> None:
    """A busy Asterisk packs many events into one TCP segment (send_events writes a call's
    ~90 events at once; send_encoded sends pre-encoded bytes, the benchmark's path)."""
    from cti_adapter.asterisk.protocol import encode_message

    events = connector.events()
    async with asyncio.timeout(WAIT):
        await connector.wait_connected()
    recorded = [
        b.fields
        for b in server.recording("inbound_answered")
        if b.banner is None and "Event" in b.fields
        and b.fields["Event"] not in ("FullyBooted", "SuccessfulAuth")
    ]  # fmt: skip
    await server.send_events(recorded)
    first = await take(events, 3)
    moved = [
        {k: v.replace("1795423894", "1795429999") for k, v in fields.items()} for fields in recorded
    ]
    await server.send_encoded(b"".join(encode_message(f) for f in moved))
    second = await take(events, 3)
    expected = [CallEventType.RINGING, CallEventType.ANSWERED, CallEventType.HANGUP]
    assert [e.event for e in first] == [e.event for e in second] == expected
    assert {e.call_id for e in first} == {"1795423894.0"}
    assert {e.call_id for e in second} == {"1795429999.0"}
    await nothing_more(events)


async def test_refused_login_is_reported_and_not_retried_in_a_loop(
    server: FakeAmiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tierline.cti.asterisk")
    conn = AmiConnector(config(server, secret="wrong"))
    try:
        conn.start()
        async with asyncio.timeout(WAIT):
            while conn.state != "auth_failed":  # noqa: ASYNC110 - a test polling public state
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # ten times the reconnect backoff
        logins = [a for a in server.actions if a["Action"] == "Login"]
        assert len(logins) == 1
        assert conn.last_error == "Authentication failed"
        assert any("refused login" in r.getMessage() for r in caplog.records)
        assert "wrong" not in caplog.text  # the secret is never logged
        with pytest.raises(PbxUnavailable, match="Authentication failed"):
            await conn.originate(OriginateRequest("101", "+79161234567", "r-1"))
    finally:
        await conn.close()


async def test_originate_sends_the_right_action_and_events_tie_back(
    server: FakeAmiServer, connector: AmiConnector
) -> None:
    events = connector.events()
    call_id = await connector.originate(
        OriginateRequest(extension="205", number="+74951112233", request_id="req-42")
    )
    assert call_id == "req-42"
    sent = next(a for a in server.actions if a["Action"] == "Originate")
    assert sent["Channel"] == "PJSIP/205"
    assert sent["Exten"] == "+74951112233"
    assert sent["ChannelId"] == "req-42"
    assert (sent["Context"], sent["Priority"], sent["Async"]) == ("from-internal", "1", "true")
    assert sent["ActionID"]

    got = await take(events, 3)
    assert [(e.event, e.call_id, e.extension, e.to_number) for e in got] == [
        (CallEventType.DIALING, "req-42", "205", "+74951112233"),
        (CallEventType.ANSWERED, "req-42", "205", "+74951112233"),
        (CallEventType.HANGUP, "req-42", "205", "+74951112233"),
    ]
    assert all(e.direction is Direction.OUTBOUND for e in got)


async def test_originate_refused_by_asterisk_is_invalid_input(
    server: FakeAmiServer, connector: AmiConnector
) -> None:
    server.originate_error = "Extension does not exist."
    with pytest.raises(InvalidInput, match="Extension does not exist"):
        await connector.originate(OriginateRequest("999", "+74951112233", "req-1"))


@pytest.mark.parametrize(
    ("extension", "number"),
    [("101&PJSIP/102", "+74951112233"), ("101", "+7495\r\nAction: Command"), ("", "1")],
)
async def test_originate_refuses_what_would_inject_into_the_action(
    server: FakeAmiServer, connector: AmiConnector, extension: str, number: str
) -> None:
    with pytest.raises(InvalidInput):
        await connector.originate(OriginateRequest(extension, number, "req-1"))
    assert not any(a["Action"] == "Originate" for a in server.actions)


async def test_originate_without_answer_is_pbx_unavailable(
    server: FakeAmiServer, connector: AmiConnector
) -> None:
    server.silent_actions.add("originate")
    async with asyncio.timeout(WAIT):
        await connector.wait_connected()
    conn = AmiConnector(config(server, originate_timeout=0.05))
    try:
        with pytest.raises(PbxUnavailable, match="did not answer Originate"):
            await conn.originate(OriginateRequest("101", "+74951112233", "req-1"))
    finally:
        await conn.close()


async def test_originate_while_asterisk_is_down_is_pbx_unavailable(server: FakeAmiServer) -> None:
    await server.stop()
    conn = AmiConnector(config(server, connect_timeout=0.1))
    try:
        with pytest.raises(PbxUnavailable, match="not connected"):
            await conn.originate(OriginateRequest("101", "+74951112233", "req-1"))
    finally:
        await conn.close()


async def test_reconnects_and_resynchronises_after_the_socket_drops(
    server: FakeAmiServer, connector: AmiConnector
) -> None:
    events = connector.events()
    async with asyncio.timeout(WAIT):
        await connector.wait_connected()
    # A call rings, then Asterisk goes away; while we are cut off, that call ends and
    # another one starts and is answered.
    await server.replay("inbound_noanswer", stop=3.0)
    assert [e.event for e in await take(events, 1)] == [CallEventType.RINGING]
    await server.stop(keep_calls=True)
    await server.replay("inbound_noanswer", start=3.0)
    await server.replay("inbound_answered", stop=6.0)
    await server.start()  # same port

    got = await take(events, 3)
    assert sorted((e.event.value, e.call_id, e.extension, e.extra.get("reason")) for e in got) == [
        ("answered", "1795423894.0", "101", None),
        ("hangup", "1795423914.2", "101", "resync"),
        ("ringing", "1795423894.0", "101", None),
    ]
    assert server.logins == 2
    assert [a["Action"] for a in server.actions].count("CoreShowChannels") == 2
    assert connector.resyncs == 2

    # Following live events again, without repeating what the resync said.
    await server.replay("inbound_answered", start=6.0)
    assert [(e.event, e.call_id) for e in await take(events, 1)] == [
        (CallEventType.HANGUP, "1795423894.0")
    ]
    await nothing_more(events)


async def test_drop_clients_reconnects_after_a_backoff(server: FakeAmiServer) -> None:
    conn = AmiConnector(config(server, reconnect_min=0.2, reconnect_max=0.2))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(WAIT):
            await conn.wait_connected()
            for n in (2, 3):
                dropped_at = loop.time()
                await server.drop_clients()
                await server.wait_for_logins(n)
                # Jitter keeps the delay within [50 %, 100 %] of the 0.2 s step.
                assert loop.time() - dropped_at >= 0.1
                await conn.wait_connected()
        assert conn.connected and conn.logins == 3
    finally:
        await conn.close()


async def test_a_silent_asterisk_is_noticed_by_ping_and_reconnected(
    server: FakeAmiServer,
) -> None:
    server.silent_actions.add("ping")
    conn = AmiConnector(config(server, ping_interval=0.02, action_timeout=0.05))
    try:
        async with asyncio.timeout(WAIT):
            await conn.wait_connected()
            await server.wait_for_logins(2)
        assert any(a["Action"] == "Ping" for a in server.actions)
    finally:
        await conn.close()


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    cfg = AmiConfig("h", username="u", reconnect_min=0.5, reconnect_max=30.0)
    rng = random.Random(1)
    delays = [backoff_delay(n, cfg, rng) for n in range(12)]
    for n, delay in enumerate(delays):
        step = min(30.0, 0.5 * 2**n)
        assert step / 2 <= delay <= step
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not lock-step


async def test_close_ends_the_event_stream(connector: AmiConnector) -> None:
    events = connector.events()
    async with asyncio.timeout(WAIT):
        await connector.wait_connected()
        await connector.close()
        assert [e async for e in events] == []
    assert connector.state == "closed"
