"""Did calling help? The called arm against the held-out control arm.

Per arm: the conversion rate (a member converts when, after the launch, the client reached
``paid``, was credited a payment KPI, or answered the campaign "accepted") and the revenue
per member (recorded revenue; none counts as 0). Between the arms: the difference with a
confidence interval — Newcombe's hybrid score interval (Wilson intervals of each arm
combined) for the proportions, which behaves at rates near 0 where Wald does not; Welch's
interval for the revenue means — and the relative lift.

The statistics are pure functions over counts and sums, so they are tested on synthetic
data with a known effect. Student's t quantile: scipy is not a dependency, so it is the
Cornish–Fisher expansion around the normal quantile (error < 1e-3 from 5 degrees of
freedom; campaigns have hundreds).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from statistics import NormalDist

from sqlalchemy import Float, case, cast, exists, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.models import Arm, Campaign, CampaignMember, KpiEvent, TransitionRecord

CONVERTED_STATE = "paid"
PAYMENT_KPI = "payment"


@dataclass(frozen=True)
class ArmStats:
    n: int
    conversions: int
    revenue_sum: float = 0.0
    revenue_sum_sq: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.conversions / self.n if self.n else None

    @property
    def revenue_mean(self) -> float | None:
        return self.revenue_sum / self.n if self.n else None

    @property
    def revenue_var(self) -> float | None:
        """Sample variance (n - 1)."""
        if self.n < 2:
            return None
        mean = self.revenue_sum / self.n
        return max(0.0, (self.revenue_sum_sq - self.n * mean * mean) / (self.n - 1))


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n <= 0:
        raise ValueError("wilson needs n > 0")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def diff_of_proportions(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> Interval:
    """p1 - p2 with Newcombe's hybrid score interval (his method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(d, low, high, confidence)


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile by the Cornish–Fisher expansion (Abramowitz & Stegun 26.7.5)."""
    z = NormalDist().inv_cdf(p)
    if math.isinf(df):
        return z
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def welch(a: ArmStats, b: ArmStats, confidence: float = 0.95) -> Interval | None:
    """mean(a) - mean(b) with Welch's interval; None when an arm has fewer than 2 members."""
    va, vb = a.revenue_var, b.revenue_var
    if va is None or vb is None:
        return None
    d = a.revenue_mean - b.revenue_mean  # type: ignore[operator]
    sa, sb = va / a.n, vb / b.n
    se = math.sqrt(sa + sb)
    if se == 0:
        return Interval(d, d, d, confidence)
    df = (sa + sb) ** 2 / (sa**2 / (a.n - 1) + sb**2 / (b.n - 1))
    half = t_quantile(1 - (1 - confidence) / 2, df) * se
    return Interval(d, d - half, d + half, confidence)


@dataclass(frozen=True)
class Comparison:
    called: ArmStats
    control: ArmStats
    conversion_diff: Interval | None  # called - control, in proportion points (0.03 = 3 pts)
    lift: float | None  # (rate called - rate control) / rate control
    revenue_diff: Interval | None  # per member, called - control
    significant: bool  # the conversion interval excludes 0

    def to_json(self) -> dict[str, object]:
        def arm(s: ArmStats) -> dict[str, object]:
            return {
                "members": s.n,
                "conversions": s.conversions,
                "conversion_rate": s.rate,
                "revenue": s.revenue_sum,
                "revenue_per_member": s.revenue_mean,
            }

        return {
            "called": arm(self.called),
            "control": arm(self.control),
            "conversion_diff": asdict(self.conversion_diff) if self.conversion_diff else None,
            "lift": self.lift,
            "revenue_diff": asdict(self.revenue_diff) if self.revenue_diff else None,
            "significant": self.significant,
        }


def compare(called: ArmStats, control: ArmStats, confidence: float = 0.95) -> Comparison:
    diff = None
    if called.n and control.n:
        diff = diff_of_proportions(
            called.conversions, called.n, control.conversions, control.n, confidence
        )
    lift = None
    if called.rate is not None and control.rate:
        lift = (called.rate - control.rate) / control.rate
    return Comparison(
        called=called,
        control=control,
        conversion_diff=diff,
        lift=lift,
        revenue_diff=welch(called, control, confidence),
        significant=diff is not None and not diff.contains(0.0),
    )


async def arm_stats(session: AsyncSession, campaign: Campaign) -> dict[str, ArmStats]:
    """Both arms' counts for a launched campaign, one grouped query."""
    since: datetime = campaign.launched_at or campaign.created_at
    m = CampaignMember
    paid = exists().where(
        col(TransitionRecord.client_id) == col(m.client_id),
        col(TransitionRecord.to_state) == CONVERTED_STATE,
        col(TransitionRecord.at) >= since,
    )
    payment = exists().where(
        col(KpiEvent.client_id) == col(m.client_id),
        col(KpiEvent.kind) == PAYMENT_KPI,
        col(KpiEvent.at) >= since,
    )
    converted = case((or_(col(m.response) == "accepted", paid, payment), 1), else_=0)
    revenue = func.coalesce(cast(col(m.revenue), Float), 0.0)
    rows = await session.exec(
        select(  # type: ignore[call-overload]  # sqlmodel types select() up to 4 columns
            col(m.arm),
            func.count(),
            func.sum(converted),
            func.sum(revenue),
            func.sum(revenue * revenue),
        )
        .where(col(m.campaign_id) == campaign.id)
        .group_by(col(m.arm))
    )
    out = {arm.value: ArmStats(0, 0) for arm in Arm}
    for arm, n, conv, rsum, rsq in rows:
        out[arm] = ArmStats(int(n), int(conv or 0), float(rsum or 0), float(rsq or 0))
    return out
