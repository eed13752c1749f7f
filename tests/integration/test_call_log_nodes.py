"""Several nodes on one PostgreSQL: a ring group's legs reported to two nodes at once.

Leg 101's answer reaches node A while leg 102's hangup reaches node B. Each leg's write looks
at the other (an answer closes legs that ended unanswered; a hangup asks whether another leg
answered), so two transactions in flight together would each miss the other's uncommitted
row, and 102 would stay a missed call although 101 took it. The test holds the first node's
transaction open (it waits on an advisory lock the test owns), starts the second, and checks
that the second waits for the first and then sees it: the interleaving is arranged, not hoped
for. PostgreSQL only: SQLite has one writer, so two transactions never overlap there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cti_adapter.call_log import CallLog
from cti_adapter.call_rows import CALL_LOCK_SPACE, CallRow
from cti_adapter.directory import OperatorDirectory
from cti_adapter.events import CallEvent, CallEventType, Direction
from engine.bus import LocalBus
from engine.models import Call, CallStatus
from engine.service import Tierline
from engine.storage.database import Database
from tests.conftest import START
from tests.integration.helpers import make_user

TIMEOUT = 10  # only a guard against a hang: each wait ends on something the test arranged
HOLD = 424242  # the test's own advisory lock (first key 1): a held transaction waits on it


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
async def node_b(settings, clock) -> AsyncIterator[Tierline]:
    """A second node: its own engine and connections on the same database."""
    db = Database(settings.database_url)
    node = Tierline.build(settings, clock=clock, bus=LocalBus(), db=db)
    yield node
    await node.bus.close()
    await db.dispose()


def event(kind: CallEventType, ext: str, seconds: int) -> CallEvent:
    return CallEvent(
        kind, "group-1", Direction.INBOUND, "+79161234567", "100", ext,
        at=START + timedelta(seconds=seconds),
    )  # fmt: skip


def hold_after_apply(log: CallLog, held: asyncio.Event) -> None:
    """Make ``log``'s next write stop, transaction open, once it has applied its events."""
    apply = log.rows.apply

    def apply_then_wait(conn, *args, **kwargs) -> CallRow | None:  # type: ignore[no-untyped-def]
        row = apply(conn, *args, **kwargs)
        held.set()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(1, :k)"), {"k": HOLD})
        return row

    log.rows.apply = apply_then_wait  # type: ignore[method-assign]


async def waiting_for_a_call_lock(db: Database) -> bool:
    async with db.engine.connect() as conn:
        waiting = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND classid = :space"
            ),
            {"space": CALL_LOCK_SPACE},
        )
    return bool(waiting)


@pytest.mark.parametrize("first", ["answer", "hangup"])
async def test_two_nodes_writing_one_calls_legs_at_once_see_each_other(
    tl, node_b, first: str
) -> None:
    await make_user(tl, "cold1", extension="101")
    await make_user(tl, "cold2", extension="102")
    log_a = CallLog(tl, OperatorDirectory(tl.db))
    log_b = CallLog(node_b, OperatorDirectory(node_b.db))
    ring = [event(CallEventType.RINGING, ext, 0) for ext in ("101", "102")]
    await log_a.record(ring, {})
    answer = (log_a, [event(CallEventType.ANSWERED, "101", 5)])
    hangup = (log_b, [event(CallEventType.HANGUP, "102", 6)])
    (held_log, held_events), (other_log, other_events) = (
        (answer, hangup) if first == "answer" else (hangup, answer)
    )

    async with tl.db.engine.connect() as owner:
        await owner.execute(sa.text("SELECT pg_advisory_lock(1, :k)"), {"k": HOLD})
        held = asyncio.Event()
        hold_after_apply(held_log, held)
        first_write = asyncio.create_task(held_log.record(held_events, {}))
        second_write: asyncio.Task | None = None
        try:
            await asyncio.wait_for(held.wait(), TIMEOUT)
            second_write = asyncio.create_task(other_log.record(other_events, {}))
            async with asyncio.timeout(TIMEOUT):
                # The second node's transaction must wait for the first's, not run beside it.
                while not await waiting_for_a_call_lock(tl.db):
                    assert not second_write.done(), "the second node wrote beside the first"
                    await asyncio.sleep(0.01)
        finally:
            await owner.execute(sa.text("SELECT pg_advisory_unlock(1, :k)"), {"k": HOLD})
            await owner.commit()
            writes = [first_write] + ([second_write] if second_write else [])
            done = await asyncio.wait_for(asyncio.gather(*writes), TIMEOUT)

    async with tl.db.session() as s:
        rows = {c.extension: c for c in (await s.exec(sa.select(Call))).scalars()}
    assert rows["101"].status == CallStatus.ANSWERED
    assert rows["102"].status == CallStatus.TAKEN_ELSEWHERE
    assert rows["102"].answered_at is None and rows["102"].ended_at is not None
    (answered,) = [row for _, row in (done[0] if first == "answer" else done[1])]
    if first == "hangup":
        # The answer came second and found the leg already over: its pop closes now.
        assert [leg.extension for leg in answered.closed_legs] == ["102"]
    else:
        assert answered.closed_legs == []
