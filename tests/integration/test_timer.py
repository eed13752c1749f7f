"""The wake-up timer with the real clock: nobody calls run_due by hand here.

Real waits are tiny and bounded: follow-ups are made due a fraction of a second ahead and
the test polls the database for at most a few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from engine.bus import LocalBus
from engine.clock import SystemClock
from engine.models import Client, FollowUp, FollowUpStatus
from engine.runtime import EventRequest
from engine.service import Tierline
from engine.settings import Settings
from engine.storage.database import Database
from tests.integration.helpers import make_client

LIMIT_S = 4.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Poll ``check`` until it holds; return the seconds it took (fails after LIMIT_S)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        if loop.time() - started > LIMIT_S:
            pytest.fail(f"timed out after {LIMIT_S}s waiting for: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - started


@pytest.fixture
async def node(settings: Settings, db: Database) -> AsyncIterator[Callable[..., Awaitable]]:
    """Build engines on the test database with the real clock; their timers stop at the end."""
    built: list[Tierline] = []

    async def build(*, timers: bool) -> Tierline:
        service = Tierline.build(settings, clock=SystemClock(), bus=LocalBus(), db=db)
        built.append(service)
        await service.start(timers=timers)
        return service

    yield build
    for service in built:
        await service.timer.stop()


async def pending_of(tl: Tierline, client_id: int) -> FollowUp:
    async with tl.db.session() as s:
        (fu,) = (
            await s.exec(
                select(FollowUp).where(
                    FollowUp.client_id == client_id, FollowUp.status == FollowUpStatus.PENDING
                )
            )
        ).all()
        return fu


async def set_due(tl: Tierline, followup_id: int, due: datetime) -> None:
    async with tl.db.transaction() as s:
        await s.exec(
            update(FollowUp).where(col(FollowUp.id) == followup_id).values(due_at=due)  # type: ignore[call-overload]
        )


async def get(tl: Tierline, model: type, row_id: int):  # type: ignore[no-untyped-def]
    async with tl.db.session() as s:
        return await s.get(model, row_id)


async def test_a_follow_up_due_shortly_is_fired_by_the_timer_and_it_rearms(node):
    tl = await node(timers=True)
    first = await make_client(tl, "First", state="not_interested")
    second = await make_client(tl, "Second", state="not_interested")
    fu1, fu2 = await pending_of(tl, first.id), await pending_of(tl, second.id)
    now = tl.clock.now()
    due1, due2 = now + timedelta(milliseconds=300), now + timedelta(milliseconds=600)
    await set_due(tl, fu1.id, due1)
    await set_due(tl, fu2.id, due2)
    # Only the first is announced to the timer; the second is found when it re-arms
    # after the first run (the 5 s safety poll would be too late for this test).
    tl.timer.wake_at(due1)

    async def done(fid: int) -> bool:
        return (await get(tl, FollowUp, fid)).status == FollowUpStatus.DONE

    await eventually(lambda: done(fu1.id), "the first recycle follow-up fired")
    await eventually(lambda: done(fu2.id), "the second fired after re-arming")
    for fid, due in ((fu1.id, due1), (fu2.id, due2)):
        row = await get(tl, FollowUp, fid)
        assert row.fired_at >= due  # never early
        assert row.lateness_ms is not None and row.lateness_ms < 2000
    assert (await get(tl, Client, first.id)).state == "new"
    assert (await get(tl, Client, second.id)).state == "new"
    assert tl.clock.now() - now < timedelta(seconds=LIMIT_S)
    assert await tl.check_followups() == []


async def test_apply_arms_the_timer_for_the_follow_up_it_schedules(node):
    tl = await node(timers=True)
    client = await make_client(tl)
    # "qualified" hands the client to sales automatically, at once: tl.apply wakes the
    # timer for it, nobody calls run_due.
    await tl.apply(EventRequest(client.id, "offer_accepted"))

    async def handed() -> bool:
        return (await get(tl, Client, client.id)).state == "presentation"

    await eventually(handed, "the automatic hand-off to sales")
    assert await tl.check_followups() == []


async def test_start_with_timers_fires_what_came_due_while_down(node):
    seed = await node(timers=False)
    recycled = await make_client(seed, "Recycle me", state="not_interested")
    caller = await make_client(seed, "Call me")
    hour_ago = seed.clock.now() - timedelta(hours=1)
    recycle_fu, call_fu = await pending_of(seed, recycled.id), await pending_of(seed, caller.id)
    await set_due(seed, recycle_fu.id, hour_ago)
    await set_due(seed, call_fu.id, hour_ago)

    restarted = Tierline.build(seed.settings, clock=SystemClock(), bus=LocalBus(), db=seed.db)
    heard: list[dict] = []
    restarted.bus.subscribe(lambda ch, msg: heard.append(msg) if ch == "followups" else None)
    try:
        await restarted.start(timers=True)  # no wait: start runs the first dispatch itself
        assert (await get(restarted, Client, recycled.id)).state == "new"
        row = await get(restarted, FollowUp, recycle_fu.id)
        assert row.status == FollowUpStatus.DONE and row.lateness_ms >= 3_600_000
        call = await get(restarted, FollowUp, call_fu.id)
        assert call.fired_at is not None and call.lateness_ms >= 3_600_000
        assert call_fu.id in [m["followup_id"] for m in heard]
    finally:
        await restarted.timer.stop()
    assert await restarted.check_followups() == []
