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
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, func, update
from sqlmodel import col, select

from engine.bus import Bus
from engine.clock import Clock
from engine.errors import TierlineError
from engine.models import AuditEntry, FollowUp, FollowUpStatus
from engine.runtime import EventRequest, Runtime
from engine.storage.database import Database

log = logging.getLogger("tierline.followups")

FOLLOWUPS_CHANNEL = "followups"


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
        async with self.db.session() as session:
            return (
                await session.exec(
                    select(func.min(FollowUp.due_at)).where(
                        col(FollowUp.status) == FollowUpStatus.PENDING,
                        col(FollowUp.fired_at).is_(None),
                    )
                )
            ).one()

    async def run_due(self) -> DispatchStats:
        """Fire everything due now, batch by batch, until nothing due is left."""
        stats = DispatchStats()
        while await self._announce_batch(stats) + await self._auto_batch(stats):
            pass
        return stats

    def _due(self, now: datetime, *, auto: bool):  # type: ignore[no-untyped-def]
        auto_cond = col(FollowUp.auto_event).is_not(None) if auto else col(
            FollowUp.auto_event
        ).is_(None)
        return (
            col(FollowUp.status) == FollowUpStatus.PENDING,
            col(FollowUp.fired_at).is_(None),
            col(FollowUp.due_at) <= now,
            auto_cond,
        )

    async def _announce_batch(self, stats: DispatchStats) -> int:
        now = self.clock.now()
        async with self.db.transaction() as session:
            rows = (
                await session.exec(
                    select(FollowUp)
                    .where(*self._due(now, auto=False))
                    .order_by(col(FollowUp.due_at))
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            params = [
                {"b_id": r.id, "b_late": _ms(now - r.due_at), "b_now": now} for r in rows
            ]
            conn = await session.connection()
            await conn.execute(
                update(FollowUp.__table__)  # type: ignore[arg-type]
                .where(FollowUp.__table__.c.id == bindparam("b_id"))  # type: ignore[attr-defined]
                .values(fired_at=bindparam("b_now"), lateness_ms=bindparam("b_late")),
                params,
            )
        for r, p in zip(rows, params, strict=True):
            stats.announced += 1
            stats.lateness_ms.append(p["b_late"])
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
        now = self.clock.now()
        async with self.db.transaction() as session:
            rows = (
                await session.exec(
                    select(FollowUp)
                    .where(*self._due(now, auto=True))
                    .order_by(col(FollowUp.due_at))
                    .limit(min(self.batch, 100))
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for fu in rows:
                late = _ms(now - fu.due_at)
                fu.fired_at, fu.lateness_ms = now, late
                session.add(fu)
                await session.flush()  # the claim stands even if the event is refused below
                try:
                    async with session.begin_nested():
                        await self.runtime.apply_in(
                            session, EventRequest(client_id=fu.client_id, event=fu.auto_event or "")
                        )
                    stats.applied += 1
                    stats.lateness_ms.append(late)
                except TierlineError as exc:
                    # The definition no longer allows it (or the client moved): a person must
                    # look. It stays pending, escalated to the supervisor, and is audited.
                    stats.failed += 1
                    fu.fired_at, fu.lateness_ms = now, late
                    fu.escalation_level = 2
                    fu.reason = f"automatic {fu.auto_event!r} failed: {exc.message}"[:500]
                    session.add(fu)
                    session.add(
                        AuditEntry(
                            at=now,
                            action="followup.auto_failed",
                            target=f"client:{fu.client_id}",
                            detail={"followup_id": fu.id, "error": exc.message},
                        )
                    )
                    log.warning("follow-up %s: %s", fu.id, exc.message)
        return len(rows)

    async def _publish(self, message: dict) -> None:
        try:
            await self.bus.publish(FOLLOWUPS_CHANNEL, message)
        except TierlineError as exc:  # the bus is down: the queue still shows the row
            log.warning("announcement of follow-up %s lost: %s", message["followup_id"], exc)


def _ms(delta) -> int:  # type: ignore[no-untyped-def]
    return max(0, int(delta.total_seconds() * 1000))
