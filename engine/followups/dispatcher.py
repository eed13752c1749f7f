"""Fire the follow-ups that came due, exactly once, whichever node gets there first.

"Fire" means two things. A follow-up with an automatic event (recycling, a hand-off,
giving up after the last unanswered attempt) has its event applied; the claim and the
transition commit in one transaction, so a crash before the commit leaves it due and a
crash after leaves it done — never half, never twice. Any other follow-up is a call an
operator owes: firing stamps ``fired_at`` (with the lateness) and announces it on the bus.
The queue an operator sees is a query over pending rows, so an announcement lost in a
crash hides nothing. No follow-up is ever dropped for being late: lateness is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.bus import Bus
from engine.clock import Clock
from engine.errors import TierlineError
from engine.models import AuditEntry, FollowUp, FollowUpStatus
from engine.runtime import EventRequest, Runtime
from engine.storage.database import Database

log = logging.getLogger("tierline.followups")

FOLLOWUPS_CHANNEL = "followups"

_F = FollowUp.__table__  # type: ignore[attr-defined]
# What firing needs of a row: enough to announce it or to apply its event.
_CLAIMED = (
    _F.c.id,
    _F.c.client_id,
    _F.c.tier,
    _F.c.owner_id,
    _F.c.kind,
    _F.c.due_at,
    _F.c.reason,
    _F.c.auto_event,
)


@dataclass
class DispatchStats:
    announced: int = 0
    applied: int = 0
    failed: int = 0
    lateness_ms: list[int] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self, db: Database, runtime: Runtime, bus: Bus, clock: Clock, *, batch: int = 500
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.bus = bus
        self.clock = clock
        self.batch = batch

    async def next_due_at(self) -> datetime | None:
        async with self.db.engine.connect() as conn:
            return await conn.scalar(
                select(func.min(_F.c.due_at)).where(
                    _F.c.status == FollowUpStatus.PENDING, _F.c.fired_at.is_(None)
                )
            )

    async def run_due(self) -> DispatchStats:
        """Fire everything due now, batch by batch, until nothing due is left."""
        stats = DispatchStats()
        # Each kind is drained before the other is looked at: every claim walks the due
        # part of the pending index, fired call rows included (they stay pending until the
        # call is made), so interleaving the two kinds doubled the walks in a burst.
        while await self._drain(self._announce_batch, stats) + await self._drain(
            self._auto_batch, stats
        ):
            pass  # until one whole round finds nothing due
        return stats

    async def _drain(
        self, batch: Callable[[DispatchStats], Awaitable[int]], stats: DispatchStats
    ) -> int:
        total = 0
        while True:
            n = await batch(stats)
            total += n
            if n < self.batch:  # a short batch: nothing more of this kind is due (or free)
                return total

    def _due(self, now: datetime, *, auto: bool):
        auto_cond = _F.c.auto_event.is_not(None) if auto else _F.c.auto_event.is_(None)
        return (
            _F.c.status == FollowUpStatus.PENDING,
            _F.c.fired_at.is_(None),
            _F.c.due_at <= now,
            auto_cond,
        )

    async def _claim(self, conn: AsyncConnection, now: datetime, *, auto: bool) -> Sequence[Row]:
        """Stamp up to a batch of due rows fired (with their lateness) and return them.

        Plain columns, not ORM objects: two statements whatever the batch size. On
        PostgreSQL the rows stay locked to this transaction; another node skips them.
        """
        rows = (
            await conn.execute(
                select(*_CLAIMED)
                .where(*self._due(now, auto=auto))
                .order_by(_F.c.due_at)
                .limit(self.batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if rows:
            await conn.execute(
                update(_F)
                .where(_F.c.id == bindparam("b_id"))
                .values(fired_at=bindparam("b_now"), lateness_ms=bindparam("b_late")),
                [{"b_id": r.id, "b_late": _ms(now - r.due_at), "b_now": now} for r in rows],
            )
        return rows

    async def _announce_batch(self, stats: DispatchStats) -> int:
        now = self.clock.now()
        async with self.db.transaction() as session:
            conn = await session.connection()
            rows = await self._claim(conn, now, auto=False)
        for r in rows:  # announced only once the claim is committed
            stats.announced += 1
            stats.lateness_ms.append(_ms(now - r.due_at))
            await self._publish(
                {
                    "type": "follow_up_due",
                    "followup_id": r.id,
                    "client_id": r.client_id,
                    "tier": r.tier,
                    "owner_id": r.owner_id,
                    "kind": r.kind,
                    "due_at": r.due_at.isoformat(),
                    "reason": r.reason,
                }
            )
        return len(rows)

    async def _auto_batch(self, stats: DispatchStats) -> int:
        """Claim due automatic follow-ups and apply their events, in one transaction: a crash
        before the commit leaves them due, after it leaves them done — never half, never twice.
        """
        now = self.clock.now()
        async with self.db.transaction() as session:
            conn = await session.connection()
            rows = await self._claim(conn, now, auto=True)
            if not rows:
                return 0
            results = await self.runtime.apply_many_in(
                session, [EventRequest(client_id=r.client_id, event=r.auto_event) for r in rows]
            )
            failed: list[tuple[Row, TierlineError]] = []
            for r, res in zip(rows, results, strict=True):
                if isinstance(res, TierlineError):
                    failed.append((r, res))
                else:
                    stats.applied += 1
                    stats.lateness_ms.append(_ms(now - r.due_at))
            if failed:
                await _escalate_failed(conn, failed, now)
                stats.failed += len(failed)
        return len(rows)

    async def _publish(self, message: dict) -> None:
        try:
            await self.bus.publish(FOLLOWUPS_CHANNEL, message)
        except TierlineError as exc:  # the bus is down: the queue still shows the row
            log.warning("announcement of follow-up %s lost: %s", message["followup_id"], exc)


async def _escalate_failed(
    conn: AsyncConnection, failed: list[tuple[Row, TierlineError]], now: datetime
) -> None:
    """The definition no longer allows the event (or the client moved): a person must
    look. The follow-up stays pending (claimed, so not retried in a loop), escalated to
    the supervisor, and audited."""
    await conn.execute(
        update(_F)
        .where(_F.c.id == bindparam("b_id"))
        .values(escalation_level=2, reason=bindparam("b_reason")),
        [
            {"b_id": r.id, "b_reason": f"automatic {r.auto_event!r} failed: {e.message}"[:500]}
            for r, e in failed
        ],
    )
    await conn.execute(
        insert(AuditEntry.__table__),  # type: ignore[attr-defined]
        [
            {
                "at": now,
                "actor_id": None,
                "action": "followup.auto_failed",
                "target": f"client:{r.client_id}",
                "allowed": True,
                "detail": {"followup_id": r.id, "error": e.message},
            }
            for r, e in failed
        ],
    )
    for r, e in failed:
        log.warning("follow-up %s: %s", r.id, e.message)


def _ms(delta) -> int:
    return max(0, int(delta.total_seconds() * 1000))
