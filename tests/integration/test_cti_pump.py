"""The connector pump: pops go out while an earlier batch is still being written, and the
call log still gets every event once, in the order the PBX sent them.

Real database (SQLite and PostgreSQL). The database's write boundary is held by the test
(``HeldWrites``): each write of the call log waits until the test lets it run on the real
database, or fails it, so "while batch N's commit is in flight" is a fact the test arranges,
not a race it hopes to win. One test holds SQLite's own write lock instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

import web.api.cti as cti
from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.pipeline import CtiPipeline
from cti_adapter.pops import POPS_CHANNEL, unaddressed
from engine.models import Call, CallEventRecord
from engine.service import Tierline
from tests.conftest import START
from tests.integration.helpers import make_client, make_user

T = TypeVar("T")
IVAN = "+7 916 123-45-67"
# Only a guard against a hang: every wait below ends on an event the test arranged.
TIMEOUT = 5


class Pbx:
    """A connector the test feeds: ``send`` events, ``end`` the stream, or ``fail`` it."""

    name = "test"

    def __init__(self) -> None:
        self.queue: asyncio.Queue[CallEvent | Exception | None] = asyncio.Queue()

    async def events(self) -> AsyncIterator[CallEvent]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    async def originate(self, request: Any) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        self.queue.put_nowait(None)

    def send(self, *events: CallEvent) -> None:
        for ev in events:
            self.queue.put_nowait(ev)


@dataclass
class HeldWrite:
    go: asyncio.Future[Exception | None]
    done: asyncio.Future[None]  # the write has returned (committed) or raised

    def release(self) -> None:
        self.go.set_result(None)

    def fail(self) -> None:
        self.go.set_result(OperationalError("INSERT INTO call_events", {}, Exception("locked")))


class HeldWrites:
    """The database's write boundary, held: each write waits for the test's verdict."""

    def __init__(self, write: Callable[[Callable[[Connection], T]], Awaitable[T]]) -> None:
        self._write = write
        self.arrived: asyncio.Queue[HeldWrite] = asyncio.Queue()

    async def write(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        held = HeldWrite(loop.create_future(), loop.create_future())
        self.arrived.put_nowait(held)
        try:
            error = await held.go
            if error is not None:
                raise error
            return await self._write(fn)
        finally:
            held.done.set_result(None)

    async def next(self) -> HeldWrite:
        return await asyncio.wait_for(self.arrived.get(), TIMEOUT)

    async def release_all(self, until: Callable[[], Awaitable[bool]]) -> None:
        while not await until():
            held = await self.next()
            held.release()
            await held.done


class Pushed:
    """What the pipeline pushed to operators (pops and call states), in order."""

    def __init__(self, tl: Tierline) -> None:
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        tl.bus.subscribe(self._on_bus)

    def _on_bus(self, channel: str, message: dict) -> None:
        if channel == POPS_CHANNEL:
            self.messages.put_nowait(unaddressed(message))

    async def next(self) -> dict:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def pops(self, count: int) -> list[str]:
        got = [await self.next() for _ in range(count)]
        assert {m["type"] for m in got} == {"screen_pop"}, got
        return [m["call_id"] for m in got]


def call(kind: str, call_id: str, second: int = 0, ext: str = "101") -> CallEvent:
    return CallEvent(
        CallEventType(kind), call_id, Direction.INBOUND, IVAN, "7000", ext,
        at=START + timedelta(seconds=second),
    )  # fmt: skip


async def settle() -> None:
    """Let whatever can run on the loop run (turns of the loop, no clock)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def call_log(tl: Tierline) -> list[tuple[str, str]]:
    records = CallEventRecord.__table__  # type: ignore[attr-defined]
    query = sa.select(records.c.pbx_call_id, records.c.event).order_by(records.c.id)
    return [(r[0], r[1]) for r in await tl.db.read(lambda c: c.execute(query).all())]


async def logged(tl: Tierline, count: int) -> bool:
    return len(await call_log(tl)) >= count


async def call_row(tl: Tierline, call_id: str) -> Any:
    calls = Call.__table__  # type: ignore[attr-defined]
    query = sa.select(calls).where(calls.c.pbx_call_id == call_id)
    return await tl.db.read(lambda c: c.execute(query).one())


@pytest.fixture
async def ivan(tl):
    await make_user(tl, "olga", tier="cold", extension="101")
    return await make_client(tl, "Ivan Petrov", IVAN)


@pytest.fixture
def writes(tl, monkeypatch) -> HeldWrites:
    held = HeldWrites(tl.db.write)
    monkeypatch.setattr(tl.db, "write", held.write)
    return held


@pytest.fixture
def pushed(tl) -> Pushed:
    return Pushed(tl)


@pytest.fixture
def pbx() -> Pbx:
    return Pbx()


@pytest.fixture
async def pumping(tl, ivan, pbx) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(cti.pump(pbx, CtiPipeline(tl)))
    yield task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_pop_goes_out_while_the_batch_before_waits_for_the_sqlite_lock(
    tl, pbx, pushed, writes, pumping
) -> None:
    lock = sqlite3.connect(make_url(tl.db.url).database, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
        pbx.send(call("ringing", "c1"))
        assert await pushed.pops(1) == ["c1"]
        first = await writes.next()
        first.release()  # into the driver, where it waits for the lock

        pbx.send(call("ringing", "c2"))

        assert await pushed.pops(1) == ["c2"]
        assert not first.done.done()
        assert await call_log(tl) == []
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await asyncio.wait_for(first.done, TIMEOUT)
    await writes.release_all(lambda: logged(tl, 2))
    assert await call_log(tl) == [("c1", "ringing"), ("c2", "ringing")]


async def test_events_that_waited_behind_a_commit_are_recorded_after_it_in_order(
    tl, ivan, pbx, pushed, writes, pumping
) -> None:
    pbx.send(call("ringing", "c1", 0))
    first = await writes.next()  # held: the first batch is being written
    # Two chunks, each taken and popped while the first batch's commit is still in flight.
    pbx.send(call("answered", "c1", 3), call("ringing", "c2", 4))
    assert await pushed.pops(2) == ["c1", "c2"]
    pbx.send(call("hangup", "c1", 8), call("ringing", "c3", 9))
    assert await pushed.pops(1) == ["c3"]
    assert not first.done.done()

    first.release()
    await first.done
    assert await call_log(tl) == [("c1", "ringing")]
    await writes.release_all(lambda: logged(tl, 5))

    assert await call_log(tl) == [
        ("c1", "ringing"), ("c1", "answered"), ("c2", "ringing"), ("c1", "hangup"),
        ("c3", "ringing"),
    ]  # fmt: skip
    c1 = await call_row(tl, "c1")
    assert (c1.status, c1.duration_s, c1.client_id) == ("ended", 5, ivan.id)
    states = [await pushed.next() for _ in range(2)]
    assert [(m["call_id"], m["state"]) for m in states] == [("c1", "answered"), ("c1", "hangup")]
    assert states[1]["duration_s"] == 5


async def test_a_failing_batch_is_retried_before_the_later_ones_are_recorded(
    tl, ivan, pbx, pushed, writes, pumping, monkeypatch
) -> None:
    monkeypatch.setattr(cti, "PUMP_RETRY_DELAYS", (0, 0))
    pbx.send(call("ringing", "c1", 0))
    first = await writes.next()
    pbx.send(call("answered", "c1", 3), call("hangup", "c1", 8), call("ringing", "c2", 9))
    assert await pushed.pops(2) == ["c1", "c2"]  # the later pops do not wait for the retry

    first.fail()
    retry = await writes.next()
    retry.release()
    await retry.done
    # The retry was the first batch alone: the later ones had not overtaken it.
    assert await call_log(tl) == [("c1", "ringing")]
    await writes.release_all(lambda: logged(tl, 4))

    assert await call_log(tl) == [
        ("c1", "ringing"), ("c1", "answered"), ("c1", "hangup"), ("c2", "ringing"),
    ]  # fmt: skip
    c1 = await call_row(tl, "c1")
    assert (c1.status, c1.duration_s, c1.client_id) == ("ended", 5, ivan.id)


async def test_a_batch_that_keeps_failing_is_dropped_and_the_later_ones_follow(
    tl, ivan, pbx, pushed, writes, pumping, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(cti, "PUMP_RETRY_DELAYS", (0, 0))
    caplog.set_level(logging.WARNING, logger="tierline.cti")
    pbx.send(call("ringing", "c1", 0))
    first = await writes.next()
    pbx.send(call("answered", "c1", 3), call("hangup", "c1", 8), call("ringing", "c2", 9))
    assert await pushed.pops(2) == ["c1", "c2"]

    first.fail()
    for _ in cti.PUMP_RETRY_DELAYS:  # every retry is the first batch again
        retry = await writes.next()
        retry.fail()
        await retry.done
        assert await call_log(tl) == []
    await writes.release_all(lambda: logged(tl, 3))

    [dropped] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert dropped.getMessage().startswith(
        "1 call event(s) dropped after retries (('c1', 'ringing', '101'))"
    )
    assert await call_log(tl) == [("c1", "answered"), ("c1", "hangup"), ("c2", "ringing")]
    # The answer made the call's row itself (its ringing never reached the log), before the
    # hangup: the call lasted 5 s, not 0.
    c1 = await call_row(tl, "c1")
    assert (c1.status, c1.duration_s, c1.client_id) == ("ended", 5, ivan.id)


async def test_behind_a_held_write_the_backlog_is_bounded_and_the_reader_stops(
    tl, ivan, pbx, pushed, writes, monkeypatch
) -> None:
    monkeypatch.setattr(cti, "PUMP_BATCH", 2)  # backlog 2 events, the reader's queue 8
    task = asyncio.create_task(cti.pump(pbx, CtiPipeline(tl)))
    pbx.send(call("ringing", "c1"))
    first = await writes.next()
    later = [f"c{i}" for i in range(2, 14)]
    pbx.send(*(call("ringing", c) for c in later))

    assert await pushed.pops(3) == ["c1", "c2", "c3"]
    await settle()
    # The backlog holds c2 and c3, the reader's queue c4..c11, the reader c12 in hand: it
    # stopped reading the PBX, and nothing more was popped.
    assert pbx.queue.qsize() == 1
    assert pushed.messages.empty()
    assert not first.done.done()

    first.release()
    await writes.release_all(lambda: logged(tl, 13))
    assert await pushed.pops(10) == later[2:]
    assert await call_log(tl) == [(c, "ringing") for c in ["c1", *later]]
    await pbx.close()
    await asyncio.wait_for(task, TIMEOUT)


async def test_cancelled_mid_flight_the_pump_ends_and_a_handed_over_write_commits(
    tl, ivan, pbx, pushed, writes, pumping
) -> None:
    pbx.send(call("ringing", "c1"))
    await writes.release_all(lambda: logged(tl, 1))
    pbx.send(call("ringing", "c2"))
    second = await writes.next()  # handed to the database, held there
    pbx.send(call("ringing", "c3"))
    assert await pushed.pops(3) == ["c1", "c2", "c3"]  # c3 waits in the backlog

    pumping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pumping, TIMEOUT)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("cti-")]

    second.release()
    await second.done
    # The committed batch stays, the one handed over commits; c3, popped but never handed
    # over, is lost with the shutdown (as events not yet read would be).
    assert await call_log(tl) == [("c1", "ringing"), ("c2", "ringing")]
    assert writes.arrived.empty()


async def test_cancelled_the_pump_waits_for_its_pops_to_give_their_connections_back(
    tl, ivan, pbx, pushed, writes, pumping, monkeypatch
) -> None:
    """A pop cancelled mid-lookup still holds a database connection: the pump returns only
    once it has let go, so the app's cleanup closes the database after, not under it."""
    pbx.send(call("ringing", "c1"))
    assert await pushed.pops(1) == ["c1"]
    first = await writes.next()  # c1's record, held: c2 will wait in the backlog

    read_soon = tl.db.read_soon
    arrived, released = asyncio.Event(), asyncio.Event()

    async def held_read(fn: Any) -> Any:
        arrived.set()
        try:
            await asyncio.get_running_loop().create_future()  # never answers
        finally:
            for _ in range(5):  # giving a connection back takes a few turns of the loop
                await asyncio.sleep(0)
            released.set()
        return await read_soon(fn)

    # The pop's read, as PostgreSQL's runs: a task of its own, holding a connection.
    monkeypatch.setattr(tl.db, "read_soon", lambda fn: asyncio.ensure_future(held_read(fn)))
    pbx.send(call("ringing", "c2"))
    await asyncio.wait_for(arrived.wait(), TIMEOUT)

    pumping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pumping, TIMEOUT)
    assert released.is_set()
    assert not [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "PopPath.run"]
    first.release()
    await first.done


@pytest.mark.parametrize("ending", ["end", "error"])
async def test_when_the_connector_ends_everything_read_is_recorded_and_the_pump_returns(
    tl, ivan, pbx, pushed, ending, caplog
) -> None:
    pbx.send(call("ringing", "c1", 0), call("answered", "c1", 3), call("hangup", "c1", 8))
    pbx.queue.put_nowait(None if ending == "end" else ConnectionResetError("AMI went away"))

    await asyncio.wait_for(cti.pump(pbx, CtiPipeline(tl)), TIMEOUT)

    assert await call_log(tl) == [("c1", "ringing"), ("c1", "answered"), ("c1", "hangup")]
    assert (await call_row(tl, "c1")).duration_s == 5
    failed = [r for r in caplog.records if "event stream failed" in r.getMessage()]
    assert len(failed) == (ending == "error")


async def test_the_apps_shutdown_waits_for_a_write_under_way(
    aiohttp_client, tl, ivan, pbx, pushed, writes
) -> None:
    """The server stops (the pump is cancelled, then the database closes): a batch already
    handed to the database commits first, its connection back in the pool."""
    from web.app import create_app

    client = await aiohttp_client(create_app(tl, pbx=pbx, start_engine=False))
    pbx.send(call("ringing", "c1"))
    assert await pushed.pops(1) == ["c1"]
    held = await writes.next()

    closing = asyncio.create_task(client.close())
    await settle()
    assert not closing.done()  # the app's cleanup waits for the write
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("cti-")]
    held.release()
    await asyncio.wait_for(closing, TIMEOUT)
    assert await call_log(tl) == [("c1", "ringing")]
    assert tl.db.engine.pool.checkedout() == 0
