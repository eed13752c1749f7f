"""ThreadLane: one thread, calls in the order given, results and errors back on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.storage.database import Database
from engine.storage.lane import ThreadLane
from engine.storage.urgency import Urgency


async def test_calls_run_in_one_thread_in_the_order_given() -> None:
    lane = ThreadLane("test-lane")
    seen: list[tuple[int, str]] = []

    def call(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    try:
        results = await asyncio.gather(*(lane.run(lambda n=n: call(n)) for n in range(50)))
    finally:
        await lane.stop()
    assert results == [n * n for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-lane"}
    assert threading.current_thread().name != "test-lane"


async def test_an_error_reaches_the_caller_and_the_lane_goes_on() -> None:
    lane = ThreadLane("test-lane")

    def fail() -> None:
        raise ValueError("bad row")

    try:
        with pytest.raises(ValueError, match="bad row"):
            await lane.run(fail)
        assert await lane.run(lambda: "still here") == "still here"
    finally:
        await lane.stop()


async def test_a_call_cancelled_while_queued_is_skipped() -> None:
    lane = ThreadLane("test-lane")
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        release.wait(5)
        ran.append("blocker")

    try:
        first = asyncio.ensure_future(lane.run(blocker))
        queued = asyncio.ensure_future(lane.run(lambda: ran.append("queued")))
        await asyncio.sleep(0.05)
        queued.cancel()
        await asyncio.sleep(0)
        release.set()
        await first
        assert await lane.run(lambda: "after") == "after"
    finally:
        await lane.stop()
    assert queued.cancelled()
    assert ran == ["blocker"]


async def test_stop_finishes_queued_calls_and_the_lane_starts_again() -> None:
    lane = ThreadLane("test-lane")
    threads: list[threading.Thread] = []

    def remember() -> None:
        threads.append(threading.current_thread())

    calls = [asyncio.ensure_future(lane.run(remember)) for _ in range(5)]
    await asyncio.sleep(0)
    await lane.stop()
    await asyncio.gather(*calls)
    assert len(threads) == 5
    assert not threads[0].is_alive()  # stopped: the thread ended

    await lane.run(remember)  # used again: a new thread
    assert threads[-1] is not threads[0]
    await lane.stop()
    assert not threads[-1].is_alive()


async def test_the_results_of_a_burst_share_one_wake_up() -> None:
    lane = ThreadLane("test-lane")
    try:
        await lane.run(lambda: None)  # the thread is up
        waker = lane.waker(asyncio.get_running_loop())
        before = waker.wakeups
        calls = [asyncio.ensure_future(lane.run(lambda n=n: n)) for n in range(20)]
        await asyncio.sleep(0)  # every call is queued
        time.sleep(0.3)  # noqa: ASYNC251 -- the loop busy on purpose: the lane finishes all twenty
        assert await asyncio.gather(*calls) == list(range(20))
        assert waker.wakeups - before == 1  # one self-pipe write, not twenty
    finally:
        await lane.stop()


async def test_a_result_after_a_drain_wakes_the_loop_again() -> None:
    # No lost wake-up: with the loop idle, every call wakes it (a lost one would hang here).
    lane = ThreadLane("test-lane")
    try:
        waker = lane.waker(asyncio.get_running_loop())
        for n in range(200):
            assert await asyncio.wait_for(lane.run(lambda n=n: n), 5) == n
        assert waker.wakeups == 200
    finally:
        await lane.stop()


async def test_sqlite_reads_and_writes_each_have_their_own_thread(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'lanes.db'}")
    try:
        await db.write(lambda c: c.execute(text("CREATE TABLE t (n INTEGER)")))
        writer = await db.write(lambda c: threading.current_thread())
        reader = await db.read(lambda c: threading.current_thread())
        assert (reader.name, writer.name) == ("tierline-db-read", "tierline-db-write")
        # Many reads: still that one reader thread, not a pool.
        readers = await asyncio.gather(
            *(db.read(lambda c: threading.current_thread()) for _ in range(20))
        )
        assert set(readers) == {reader}
    finally:
        await db.dispose()
    assert not reader.is_alive() and not writer.is_alive()


async def test_a_yielding_lane_starts_nothing_while_urgent_work_is_in_flight() -> None:
    urgency = Urgency(max_wait=30)  # longer than the test: only the end of the work frees it
    lane = ThreadLane("test-lane", yields_to=urgency)
    ran: list[str] = []
    try:
        await lane.run(lambda: ran.append("before"))  # the thread is up and idle
        with urgency.urgent():
            with urgency.urgent():  # two pops at once: the lane waits for both
                call = asyncio.ensure_future(lane.run(lambda: ran.append("during")))
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.1)
            assert ran == ["before"] and not call.done()
        await asyncio.wait_for(call, 5)
        assert ran == ["before", "during"]
        assert (urgency.yields, urgency.overruns, urgency.in_flight) == (1, 0, 0)
    finally:
        await lane.stop()


async def test_urgent_work_holds_a_lane_no_longer_than_max_wait() -> None:
    urgency = Urgency(max_wait=0.05)
    lane = ThreadLane("test-lane", yields_to=urgency)
    try:
        with urgency.urgent():  # never ends while the call waits
            assert await asyncio.wait_for(lane.run(lambda: "went ahead"), 5) == "went ahead"
        assert (urgency.yields, urgency.overruns) == (1, 1)
    finally:
        await lane.stop()


async def test_an_urgent_section_ends_on_an_error(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'urgent.db'}")
    try:
        with pytest.raises(RuntimeError), db.urgency.urgent():
            assert db.urgency.in_flight == 1
            raise RuntimeError("the pop failed")
        assert db.urgency.in_flight == 0
        # Writes yield to pops, reads do not: a pop's own read must never wait for itself.
        db.urgency.max_wait = 30  # longer than the test
        release = db.hold_writes()
        assert await db.read_soon(lambda c: "read") == "read"
        write = asyncio.ensure_future(db.write(lambda c: "written"))
        await asyncio.sleep(0.1)
        assert not write.done()
        release(write)  # as a task's done callback would: any arguments
        release()  # a second end is no second release
        assert db.urgency.in_flight == 0
        assert await asyncio.wait_for(write, 5) == "written"
        other = db.hold_writes()
        release()  # the first hold's release does not end another hold
        assert db.urgency.in_flight == 1
        other()
    finally:
        await db.dispose()
