"""KPI slices: each operator's day so far, against their norms, as the supervisor takes it.

A slice is "the day in the department's time zone, from midnight up to the slice moment"
(11:00, 14:00, 17:00 or now). What counts, per operator:

- calls: Call rows of the operator started in that span: every outbound call, and inbound
  calls answered by the slice moment (a missed ring is not the operator's call);
- long_calls: those calls of 10 minutes or more that had ended by the slice moment (the
  flag is set at hangup), so a slice taken later for 11:00 shows what 11:00 showed;
- presentations / invoices / payments: KpiEvent rows credited to the operator.

Norms (``User.norms``, e.g. {"calls": 60, "long_calls": 5, ...}) are for the whole working
day, which is the calling window (``settings.calling_window``) read in the department's
zone. At a slice the norm is prorated linearly: expected = floor(norm × elapsed share of
the working day) — 0 before the window opens, the full norm after it closes. A figure is
``behind`` when actual < expected; flooring means nobody is behind on a fraction of a
payment. On a day off (``workdays``/``holidays``) nothing is expected.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.calendar import CallingPolicy
from engine.errors import InvalidInput
from engine.models import Call, KpiEvent, Role, User

FIGURES = ("calls", "long_calls", "presentations", "invoices", "payments")
KPI_FIGURE = {"presentation": "presentations", "invoice": "invoices", "payment": "payments"}


@dataclass(frozen=True)
class Figure:
    name: str
    actual: int
    norm: int | None  # the whole day's norm; None when the operator has none for it
    expected: int | None  # the norm prorated to the slice moment
    behind: bool

    def to_json(self) -> dict[str, object]:
        return {
            "actual": self.actual,
            "norm": self.norm,
            "expected": self.expected,
            "behind": self.behind,
        }


@dataclass(frozen=True)
class OperatorSlice:
    user_id: int
    username: str
    display_name: str
    tier: str | None
    figures: list[Figure]

    @property
    def behind(self) -> bool:
        return any(f.behind for f in self.figures)

    def to_json(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "tier": self.tier,
            "behind": self.behind,
            "figures": {f.name: f.to_json() for f in self.figures},
        }


@dataclass(frozen=True)
class KpiSlice:
    day: date
    label: str  # "11:00" or "now"
    at: datetime  # the slice moment (UTC)
    share: float  # elapsed share of the working day, 0..1
    operators: list[OperatorSlice]
    tiers: dict[str, list[Figure]] = field(default_factory=dict)  # totals per tier

    def to_json(self) -> dict[str, object]:
        return {
            "day": self.day.isoformat(),
            "at": self.label,
            "moment": self.at.isoformat(),
            "share_of_day": round(self.share, 4),
            "operators": [o.to_json() for o in self.operators],
            "tiers": {
                tier: {
                    "behind": any(f.behind for f in figs),
                    "figures": {f.name: f.to_json() for f in figs},
                }
                for tier, figs in self.tiers.items()
            },
        }


def parse_at(text: str | None) -> time | None:
    """'HH:MM' -> time; 'now' or nothing -> None."""
    if text is None or text == "" or text == "now":
        return None
    try:
        return time.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"at must be HH:MM or 'now', not {text!r}", field="at") from exc


def parse_day(text: str | None, now: datetime, tz: str) -> date:
    if not text:
        return now.astimezone(ZoneInfo(tz)).date()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"day must be YYYY-MM-DD, not {text!r}", field="day") from exc


def _share(moment: datetime, day: date, zone: ZoneInfo, policy: CallingPolicy) -> float:
    if not policy.is_workday(day):
        return 0.0
    start = datetime.combine(day, policy.window_start, zone)
    end = datetime.combine(day, policy.window_end, zone)
    if end <= start:
        return 1.0 if moment >= start else 0.0
    return min(1.0, max(0.0, (moment - start) / (end - start)))


async def take_slice(
    session: AsyncSession,
    *,
    day: date,
    at: time | None,
    tz: str,
    policy: CallingPolicy,
    now: datetime,
    tier: str | None = None,
) -> KpiSlice:
    zone = ZoneInfo(tz)
    day_start = datetime.combine(day, time(), zone)
    day_end = day_start + timedelta(days=1)
    moment = datetime.combine(day, at, zone) if at is not None else min(now, day_end)
    share = _share(moment, day, zone, policy)

    users_q = select(User).where(User.role == Role.OPERATOR, col(User.active).is_(True))
    if tier:
        users_q = users_q.where(User.tier == tier)
    users = list(await session.exec(users_q.order_by(col(User.tier), col(User.username))))
    ids = [u.id for u in users]
    counts: dict[int, dict[str, int]] = {uid: dict.fromkeys(FIGURES, 0) for uid in ids}  # type: ignore[misc]
    if ids:
        counted = or_(
            col(Call.direction) == "outbound",
            and_(col(Call.answered_at).is_not(None), col(Call.answered_at) <= moment),
        )
        long = and_(counted, col(Call.long_call).is_(True), col(Call.ended_at) <= moment)
        rows = await session.exec(
            select(
                Call.operator_id,
                func.sum(case((counted, 1), else_=0)),
                func.sum(case((long, 1), else_=0)),
            )
            .where(
                col(Call.operator_id).in_(ids),
                col(Call.started_at) >= day_start,
                col(Call.started_at) <= moment,
            )
            .group_by(col(Call.operator_id))
        )
        for uid, calls, longs in rows:
            assert uid is not None  # the query asks for operator_id IN (ids)
            counts[uid]["calls"] = int(calls or 0)
            counts[uid]["long_calls"] = int(longs or 0)
        events = await session.exec(
            select(KpiEvent.user_id, KpiEvent.kind, func.count())
            .where(
                col(KpiEvent.user_id).in_(ids),
                col(KpiEvent.at) >= day_start,
                col(KpiEvent.at) <= moment,
            )
            .group_by(col(KpiEvent.user_id), col(KpiEvent.kind))
        )
        for uid, kind, n in events:
            if kind in KPI_FIGURE:
                counts[uid][KPI_FIGURE[kind]] = int(n)  # type: ignore[index]

    operators = [
        OperatorSlice(
            user_id=u.id,  # type: ignore[arg-type]
            username=u.username,
            display_name=u.display_name or u.username,
            tier=u.tier,
            figures=[_figure(name, counts[u.id][name], u.norms, share) for name in FIGURES],  # type: ignore[index]
        )
        for u in users
    ]
    label = at.strftime("%H:%M") if at is not None else "now"
    return KpiSlice(day, label, moment, share, operators, _tier_totals(operators))


def _figure(name: str, actual: int, norms: dict, share: float) -> Figure:
    norm = norms.get(name) if isinstance(norms, dict) else None
    if not isinstance(norm, int) or isinstance(norm, bool) or norm < 0:
        return Figure(name, actual, None, None, False)
    # A tiny epsilon so that exactly-on-the-hour shares do not floor one short.
    expected = math.floor(norm * share + 1e-9)
    return Figure(name, actual, norm, expected, actual < expected)


def _tier_totals(operators: list[OperatorSlice]) -> dict[str, list[Figure]]:
    totals: dict[str, list[Figure]] = {}
    for tier in sorted({o.tier or "" for o in operators}):
        members = [o for o in operators if (o.tier or "") == tier]
        figures = []
        for i, name in enumerate(FIGURES):
            parts = [m.figures[i] for m in members]
            actual = sum(p.actual for p in parts)
            normed = [p for p in parts if p.norm is not None]
            norm = sum(p.norm for p in normed) if normed else None  # type: ignore[misc]
            expected = sum(p.expected for p in normed) if normed else None  # type: ignore[misc]
            behind = expected is not None and actual < expected
            figures.append(Figure(name, actual, norm, expected, behind))
        totals[tier] = figures
    return totals


def slice_csv(kpi: KpiSlice) -> str:
    """One line per operator, then one total line per tier; ``behind`` as yes/no."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    header = ["day", "at", "tier", "username", "operator"]
    for name in FIGURES:
        header += [name, f"{name}_expected", f"{name}_norm", f"{name}_behind"]
    header.append("behind")
    writer.writerow(header)

    def cells(figures: list[Figure]) -> list[object]:
        row: list[object] = []
        for f in figures:
            row += [f.actual, _blank(f.expected), _blank(f.norm), "yes" if f.behind else "no"]
        return row

    day, at = kpi.day.isoformat(), kpi.label
    for o in kpi.operators:
        behind = "yes" if o.behind else "no"
        names = [_safe(o.tier or ""), _safe(o.username), _safe(o.display_name)]
        row = [day, at, *names, *cells(o.figures), behind]
        writer.writerow(row)
    for tier, figures in kpi.tiers.items():
        behind = "yes" if any(f.behind for f in figures) else "no"
        writer.writerow([day, at, _safe(tier), "", "TOTAL", *cells(figures), behind])
    return out.getvalue()


def _blank(value: int | None) -> object:
    return "" if value is None else value


def _safe(text: str) -> str:
    # A spreadsheet would run "=HYPERLINK(...)" typed as a display name: make it text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
