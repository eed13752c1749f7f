"""The conversion funnel: how many clients got from cold to sales to key accounts, and how fast.

Read from the transition history: a client *enters* a tier at its first transition into it
from another tier (enrolment counts: its from_tier is empty). The funnel starts at a stage
(cold for the department, the campaign's tier for a campaign) and counts, for each later
stage, the clients of the start cohort who entered it after they started, with the time
it took (median and 90th percentile, in days) from their start.

For the department, a client starts when it first entered the start tier (optionally only
clients who started within [since, until)). For a campaign, each member starts at its
enrolment, so both arms are measured from the same moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.models import Campaign, CampaignMember, TransitionRecord

STAGES = ("cold", "sales", "key_account")


@dataclass(frozen=True)
class Stage:
    tier: str
    reached: int
    share: float | None  # of the cohort that started the funnel
    median_days: float | None  # from the start to entering this tier
    p90_days: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "reached": self.reached,
            "share": self.share,
            "median_days": self.median_days,
            "p90_days": self.p90_days,
        }


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def build_funnel(
    starts: dict[int, datetime],
    entries: Iterable[tuple[int, str, datetime]],
    stages: tuple[str, ...],
) -> list[Stage]:
    """Pure: ``starts`` (client -> start time), ``entries`` (client, tier entered, when)."""
    first: dict[tuple[int, str], datetime] = {}
    for client_id, tier, at in entries:
        start = starts.get(client_id)
        if start is None or at < start or tier not in stages[1:]:
            continue
        key = (client_id, tier)
        if key not in first or at < first[key]:
            first[key] = at
    cohort = len(starts)
    out = [Stage(stages[0], cohort, 1.0 if cohort else None, 0.0 if cohort else None,
                 0.0 if cohort else None)]  # fmt: skip
    for tier in stages[1:]:
        days = [
            (at - starts[cid]).total_seconds() / 86400
            for (cid, t), at in first.items()
            if t == tier
        ]
        out.append(
            Stage(
                tier,
                len(days),
                len(days) / cohort if cohort else None,
                _round(percentile(days, 0.5)),
                _round(percentile(days, 0.9)),
            )
        )
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _tier_entries():
    t = TransitionRecord
    return select(t.client_id, t.to_tier, t.at).where(col(t.to_tier) != col(t.from_tier))


async def department_funnel(
    session: AsyncSession,
    *,
    stages: tuple[str, ...] = STAGES,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Stage]:
    """Everyone who entered ``stages[0]`` (within [since, until) if given)."""
    starts: dict[int, datetime] = {}
    later: list[tuple[int, str, datetime]] = []
    rows = await session.exec(_tier_entries().where(col(TransitionRecord.to_tier).in_(stages)))
    for cid, tier, at in rows:
        if tier == stages[0]:
            if cid not in starts or at < starts[cid]:
                starts[cid] = at
        else:
            later.append((cid, tier, at))
    starts = {
        cid: at
        for cid, at in starts.items()
        if (since is None or at >= since) and (until is None or at < until)
    }
    return build_funnel(starts, later, stages)


async def campaign_funnel(
    session: AsyncSession, campaign: Campaign, *, stages: tuple[str, ...] = STAGES
) -> dict[str, list[Stage]]:
    """Per arm: members start at their enrolment in the campaign's tier."""
    tail = stages[stages.index(campaign.tier) :] if campaign.tier in stages else (campaign.tier,)
    m = CampaignMember
    members = await session.exec(
        select(m.client_id, m.arm, m.enrolled_at).where(m.campaign_id == campaign.id)
    )
    arms: dict[str, dict[int, datetime]] = {"called": {}, "control": {}}
    for cid, arm, at in members:
        arms.setdefault(arm, {})[cid] = at
    ids = [cid for starts in arms.values() for cid in starts]
    entries: list[tuple[int, str, datetime]] = []
    for start in range(0, len(ids), 1000):
        q = _tier_entries().where(col(TransitionRecord.client_id).in_(ids[start : start + 1000]))
        entries.extend(await session.exec(q))
    return {arm: build_funnel(starts, entries, tail) for arm, starts in arms.items()}
