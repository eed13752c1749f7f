"""Escalate follow-ups not done within their grace period, one recorded step at a time.

A personal follow-up first opens to the whole tier (anyone there may take it), then goes
to the supervisor. Each step is written to the audit log and announced.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import col, select

from engine.bus import Bus
from engine.clock import Clock
from engine.models import AuditEntry, FollowUp, FollowUpStatus
from engine.storage.database import Database

log = logging.getLogger("tierline.followups")


async def sweep_escalations(db: Database, bus: Bus, clock: Clock, *, limit: int = 1000) -> int:
    now = clock.now()
    announcements = []
    async with db.transaction() as session:
        rows = (
            await session.exec(
                select(FollowUp)
                .where(
                    col(FollowUp.status) == FollowUpStatus.PENDING,
                    col(FollowUp.escalate_at).is_not(None),
                    col(FollowUp.escalate_at) <= now,
                )
                .order_by(col(FollowUp.escalate_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for fu in rows:
            steps = [s for s in fu.escalation_steps.split(",") if s]
            if fu.escalation_level >= len(steps):
                fu.escalate_at = None  # nothing further up: it stays flagged where it is
                session.add(fu)
                continue
            step = steps[fu.escalation_level]
            fu.escalation_level += 1
            previous_owner = fu.owner_id
            if step == "tier":
                fu.owner_id = None
            more = fu.escalation_level < len(steps)
            fu.escalate_at = now + timedelta(seconds=fu.grace_s or 3600) if more else None
            session.add(fu)
            session.add(
                AuditEntry(
                    at=now,
                    action="followup.escalated",
                    target=f"client:{fu.client_id}",
                    detail={
                        "followup_id": fu.id,
                        "step": step,
                        "level": fu.escalation_level,
                        "previous_owner": previous_owner,
                        "due_at": fu.due_at.isoformat(),
                    },
                )
            )
            announcements.append(
                {
                    "type": "follow_up_escalated",
                    "followup_id": fu.id,
                    "client_id": fu.client_id,
                    "tier": fu.tier,
                    "owner_id": fu.owner_id,
                    "step": step,
                    "level": fu.escalation_level,
                }
            )
    for message in announcements:
        try:
            await bus.publish("followups", message)
        except Exception as exc:  # the audit log and the row already hold the truth
            log.warning("escalation announcement lost: %s", exc)
    return len(announcements)
