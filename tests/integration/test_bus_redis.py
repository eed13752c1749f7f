"""The event bus: in process, and across two "nodes" through a real Redis.

Redis is at TIERLINE_TEST_REDIS (default redis://127.0.0.1:6379/0). If it cannot be reached
the Redis tests fail under CI=true and skip, saying why, elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis

from cti_adapter.pops import POPS_CHANNEL, addressed
from engine.bus import LocalBus, make_bus, to_json
from engine.bus_redis import RedisBus
from engine.errors import Unavailable
from engine.models import Role
from web.hub import Hub
from web.live_socket import text_frame
from web.socket_state import Conn, SocketUser

REDIS_URL = os.environ.get("TIERLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
WAIT = 2.0  # seconds for a message to cross Redis on loopback: generous, rarely used up


def require_redis() -> None:
    """Fail under CI=true, else skip with the reason, when Redis does not answer PING."""
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
        if not reply.startswith((b"+PONG", b"-NOAUTH")):
            raise OSError(f"unexpected reply {reply!r}")
    except OSError as exc:
        message = f"Redis at {REDIS_URL} is not reachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: a missing service is a failure)")
        pytest.skip(message)


Received = list[tuple[str, dict[str, Any]]]


def recorder() -> tuple[Callable[[str, dict[str, Any]], None], Received, asyncio.Queue]:
    got: Received = []
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def handler(channel: str, message: dict[str, Any]) -> None:
        got.append((channel, message))
        queue.put_nowait((channel, message))

    return handler, got, queue


async def next_message(queue: asyncio.Queue) -> tuple[str, dict[str, Any]]:
    return await asyncio.wait_for(queue.get(), WAIT)


async def drain_until_sentinel(queue: asyncio.Queue) -> Received:
    """Everything received before the sentinel. Redis delivers in publish order, so a
    duplicate of an earlier message would show up here."""
    seen: Received = []
    while True:
        channel, message = await next_message(queue)
        if message.get("sentinel"):
            return seen
        seen.append((channel, message))


@pytest.fixture
def prefix() -> str:
    # Our own namespace: other tests on the same Redis never see our messages, nor we theirs.
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def nodes(prefix: str) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    require_redis()
    a, b = RedisBus(REDIS_URL, prefix), RedisBus(REDIS_URL, prefix)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


# --- two nodes through Redis --------------------------------------------------------------


async def test_a_message_reaches_every_node_exactly_once(nodes: tuple[RedisBus, RedisBus]) -> None:
    a, b = nodes
    on_a, got_a, queue_a = recorder()
    on_b, got_b, queue_b = recorder()
    a.subscribe(on_a)
    b.subscribe(on_b)
    pop = {"type": "screen_pop", "call_id": "1763884800.42", "client": {"name": "Анна"}}

    await a.publish("operator:101", pop)
    # The publisher's own node hears it through Redis, not also directly.
    assert got_a == []
    assert await next_message(queue_a) == ("operator:101", pop)
    assert await next_message(queue_b) == ("operator:101", pop)

    await a.publish("operator:101", {"sentinel": True})
    assert await drain_until_sentinel(queue_a) == []
    assert await drain_until_sentinel(queue_b) == []
    assert len(got_a) == len(got_b) == 2


async def test_a_pop_published_on_one_node_reaches_a_socket_on_the_other_as_encoded(
    nodes: tuple[RedisBus, RedisBus],
) -> None:
    """A pop crosses the bus encoded once (``addressed``); the node holding the socket frames
    that text as it is, keeps the call id for de-duplication, and delivers only to that user."""
    a, b = nodes
    hub = Hub()
    b.subscribe(hub.on_bus)
    after_hub, _, arrived = recorder()
    b.subscribe(after_hub)  # handlers run in order: this one hears a message after the hub
    olga = Conn(hub, SocketUser(7, Role.OPERATOR, "cold"), 0.0)
    boris = Conn(hub, SocketUser(8, Role.OPERATOR, "cold"), 0.0)
    hub.add(olga)
    hub.add(boris)  # not ready yet: what reaches them waits in their queues
    pop = {"type": "screen_pop", "call_id": "c1", "client": {"name": 'Пётр "Петя" Иванов'}}
    state = {"type": "call_state", "call_id": "c1", "state": "answered"}
    await a.publish(POPS_CHANNEL, addressed(7, pop))
    await a.publish(POPS_CHANNEL, addressed(7, state))
    for _ in range(2):
        await next_message(arrived)
    assert list(olga.queue or ()) == [
        ("c1", text_frame(to_json(pop))),
        (None, text_frame(to_json(state))),  # not a pop: never de-duplicated
    ]
    assert boris.queue is None


async def test_either_node_publishes_and_order_is_kept(nodes: tuple[RedisBus, RedisBus]) -> None:
    a, b = nodes
    on_a, _, queue_a = recorder()
    a.subscribe(on_a)
    for i in range(20):
        await b.publish("queue", {"type": "queue_changed", "n": i})
    await b.publish("queue", {"sentinel": True})
    assert [m["n"] for _, m in await drain_until_sentinel(queue_a)] == list(range(20))


async def test_unsubscribe_stops_delivery(nodes: tuple[RedisBus, RedisBus]) -> None:
    a, b = nodes
    gone, got_gone, _ = recorder()
    stays, _, queue = recorder()
    unsubscribe = b.subscribe(gone)
    b.subscribe(stays)
    await a.publish("c", {"n": 1})
    await a.publish("c", {"sentinel": True})
    await drain_until_sentinel(queue)
    assert got_gone == [("c", {"n": 1}), ("c", {"sentinel": True})]

    unsubscribe()
    unsubscribe()  # twice is harmless
    await a.publish("c", {"n": 2})
    await a.publish("c", {"sentinel": True})
    assert await drain_until_sentinel(queue) == [("c", {"n": 2})]
    assert len(got_gone) == 2


async def test_a_raising_handler_does_not_stop_the_others(
    nodes: tuple[RedisBus, RedisBus], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = nodes

    def broken(channel: str, message: dict[str, Any]) -> None:
        raise RuntimeError("socket queue is closed")

    b.subscribe(broken)
    after, _, queue = recorder()
    b.subscribe(after)
    with caplog.at_level(logging.ERROR, logger="engine.bus"):
        await a.publish("c", {"n": 1})
        await a.publish("c", {"n": 2})
        assert await next_message(queue) == ("c", {"n": 1})
        assert await next_message(queue) == ("c", {"n": 2})  # the reader survived too
    assert "socket queue is closed" in caplog.text


async def test_prefixes_isolate_deployments_even_with_glob_characters() -> None:
    require_redis()
    base = uuid.uuid4().hex[:8]
    starry, plain = RedisBus(REDIS_URL, f"{base}*"), RedisBus(REDIS_URL, f"{base}x")
    await starry.start()
    await plain.start()
    try:
        on_starry, got_starry, queue_starry = recorder()
        starry.subscribe(on_starry)
        # "{base}*:*" unescaped would match "{base}x:c" too.
        await plain.publish("c", {"n": 1})
        await starry.publish("c", {"sentinel": True})
        assert await drain_until_sentinel(queue_starry) == []
        assert got_starry == [("c", {"sentinel": True})]
    finally:
        await starry.close()
        await plain.close()


async def test_garbage_on_our_channel_is_dropped(
    nodes: tuple[RedisBus, RedisBus], prefix: str
) -> None:
    a, b = nodes
    on_b, _, queue = recorder()
    b.subscribe(on_b)
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        await raw.publish(f"{prefix}:c", b"not json {")
        await raw.publish(f"{prefix}:c", b"[1, 2]")
    finally:
        await raw.aclose()
    await a.publish("c", {"sentinel": True})
    assert await drain_until_sentinel(queue) == []


async def test_publish_checks_its_arguments(nodes: tuple[RedisBus, RedisBus]) -> None:
    a, _ = nodes
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await a.publish("c", {"at": object()})
    with pytest.raises(ValueError, match="non-empty string"):
        await a.publish("", {"n": 1})


async def test_publish_before_start_is_unavailable(prefix: str) -> None:
    bus = RedisBus(REDIS_URL, prefix)
    with pytest.raises(Unavailable, match="not started"):
        await bus.publish("c", {"n": 1})


async def test_start_against_nothing_is_unavailable_and_hides_the_password(prefix: str) -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = RedisBus(f"redis://user:hunter2@127.0.0.1:{port}/0", prefix, timeout=0.5)
    with pytest.raises(Unavailable) as info:
        await bus.start()
    assert f"127.0.0.1:{port}" in info.value.message
    assert "hunter2" not in info.value.message
    with pytest.raises(Unavailable):
        await bus.publish("c", {"n": 1})
    await bus.close()


# --- Redis goes away and comes back -------------------------------------------------------


class DroppableProxy:
    """A TCP relay in front of Redis that a test can unplug: Redis itself stays up for
    everyone else on this machine."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.target_port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.path = parts.path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.path}"

    async def plug(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def unplug(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, redis_w))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(client_r, redis_w), pipe(redis_r, client_w))
        self._writers.difference_update((client_w, redis_w))


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):  # 5 s at most; socket-level waits, usually a few milliseconds
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def test_redis_drops_publish_fails_then_the_bus_reconnects(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis()
    proxy = DroppableProxy(REDIS_URL)
    await proxy.plug()
    flaky = RedisBus(proxy.url, prefix, reconnect_delay=0.02, max_reconnect_delay=0.1)
    steady = RedisBus(REDIS_URL, prefix)
    await flaky.start()
    await steady.start()
    try:
        on_flaky, _, queue = recorder()
        flaky.subscribe(on_flaky)
        assert flaky.connected

        with caplog.at_level(logging.WARNING, logger="engine.bus"):
            await proxy.unplug()
            await wait_for(lambda: not flaky.connected, "the reader noticed")
            with pytest.raises(Unavailable):
                await flaky.publish("c", {"n": "lost"})
            # Several retries with backoff while Redis is away, each logged.
            await asyncio.sleep(0.25)
            await proxy.plug()
            await wait_for(lambda: flaky.connected, "the reader came back")
        assert "redis bus lost" in caplog.text
        assert "redis bus reconnected" in caplog.text

        await steady.publish("c", {"n": "after"})
        await flaky.publish("c", {"sentinel": True})
        assert await drain_until_sentinel(queue) == [("c", {"n": "after"})]
    finally:
        await flaky.close()
        await steady.close()
        with contextlib.suppress(AssertionError):
            await proxy.unplug()


async def test_close_is_idempotent_and_stops_delivery(prefix: str) -> None:
    require_redis()
    a, b = RedisBus(REDIS_URL, prefix), RedisBus(REDIS_URL, prefix)
    await a.start()
    await a.start()  # a second start is a no-op
    await b.start()
    on_b, got_b, _ = recorder()
    b.subscribe(on_b)
    await b.close()
    await b.close()
    assert not b.connected
    await a.publish("c", {"n": 1})
    await asyncio.sleep(0.05)
    assert got_b == []
    await a.close()


# --- the in-process bus -------------------------------------------------------------------


async def test_local_bus_delivers_before_publish_returns() -> None:
    bus = LocalBus()
    await bus.start()
    first, got_first, _ = recorder()
    second, got_second, _ = recorder()
    bus.subscribe(first)
    bus.subscribe(second)
    await bus.publish("operator:101", {"type": "screen_pop", "n": 1})
    assert got_first == got_second == [("operator:101", {"type": "screen_pop", "n": 1})]
    await bus.close()


async def test_local_bus_a_raising_handler_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = LocalBus()
    before, got_before, _ = recorder()
    after, got_after, _ = recorder()

    def broken(channel: str, message: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    bus.subscribe(before)
    bus.subscribe(broken)
    bus.subscribe(after)
    with caplog.at_level(logging.ERROR, logger="engine.bus"):
        await bus.publish("c", {"n": 1})
    assert got_before == got_after == [("c", {"n": 1})]
    assert "boom" in caplog.text


async def test_local_bus_unsubscribe_even_from_inside_a_handler() -> None:
    bus = LocalBus()
    calls: list[str] = []

    def once(channel: str, message: dict[str, Any]) -> None:
        calls.append("once")
        stop_once()

    stop_once = bus.subscribe(once)
    other, got_other, _ = recorder()
    stop_other = bus.subscribe(other)
    # The same function subscribed twice is two subscriptions, each with its own unsubscribe.
    again = bus.subscribe(other)
    await bus.publish("c", {"n": 1})
    await bus.publish("c", {"n": 2})
    assert calls == ["once"]
    assert len(got_other) == 4
    stop_other()
    stop_other()
    await bus.publish("c", {"n": 3})
    assert got_other[-1] == ("c", {"n": 3}) and len(got_other) == 5
    again()
    await bus.publish("c", {"n": 4})
    assert len(got_other) == 5


async def test_local_bus_behaves_like_redis_for_messages() -> None:
    bus = LocalBus()
    handler, got, _ = recorder()
    bus.subscribe(handler)
    message = {"client": {"tags": ["vip"]}}
    await bus.publish("c", message)
    # Handlers get what Redis would give them: a copy, not the publisher's own dict.
    got[0][1]["client"]["tags"].append("mutated")
    assert message == {"client": {"tags": ["vip"]}}
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await bus.publish("c", {"at": {1, 2}})
    with pytest.raises(TypeError, match="is a dict"):
        await bus.publish("c", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert len(got) == 1


def test_make_bus() -> None:
    assert isinstance(make_bus(None), LocalBus)
    assert isinstance(make_bus(""), LocalBus)
    bus = make_bus("redis://127.0.0.1:6379/0")
    assert isinstance(bus, RedisBus) and bus.prefix == "tierline"
