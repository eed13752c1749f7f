"""Pilot economics: what the calling costs and what it brings, per operator and on average.

For a range of whole days in the department's zone (``from`` and ``to`` both included):

- calls: the operator's Call rows started in the range, counted as the KPI slices count
  them (every outbound call, inbound calls only when answered: a missed ring is no work);
- talk_s: the sum of those calls' ``duration_s`` (answer to hangup);
- successes: KpiEvent "payment" rows credited to the operator; invoices as a second figure;
- success_rate: successes / calls (None without calls);
- cost: logged call time (talk_s) × the operator's hourly cost, from the AppSetting
  "economics" {"default_hourly_cost", "hourly_cost": {user_id: n}, "currency"};
- cost_per_success: cost / successes, None when there was no success.

The average is over the operators who made at least one call in the range; its rates are
ratios of the totals (not means of ratios, which would weigh a one-call day like a full one).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import InvalidInput
from engine.models import Call, KpiEvent, Role, User

SETTING = "economics"
DEFAULTS: dict[str, Any] = {"default_hourly_cost": 0, "hourly_cost": {}, "currency": "RUB"}
MAX_DAYS = 366
CENT = Decimal("0.01")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Line:
    user_id: int | None  # None for the average and total lines
    username: str
    display_name: str
    calls: int
    talk_s: int
    successes: int
    invoices: int
    hourly_cost: Decimal | None
    cost: Decimal

    @property
    def success_rate(self) -> float | None:
        return round(self.successes / self.calls, 4) if self.calls else None

    @property
    def cost_per_success(self) -> Decimal | None:
        return (
            (self.cost / self.successes).quantize(CENT, ROUND_HALF_UP) if self.successes else None
        )

    def to_json(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "calls": self.calls,
            "talk_s": self.talk_s,
            "successes": self.successes,
            "invoices": self.invoices,
            "success_rate": self.success_rate,
            "hourly_cost": _num(self.hourly_cost),
            "cost": _num(self.cost),
            "cost_per_success": _num(self.cost_per_success),
        }


@dataclass(frozen=True)
class Economics:
    start: date
    end: date  # included
    currency: str
    operators: list[Line]
    average: Line
    total: Line

    def to_json(self) -> dict[str, object]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "currency": self.currency,
            "operators": [o.to_json() for o in self.operators],
            "average": self.average.to_json(),
            "total": self.total.to_json(),
        }


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _money(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"{field} must be a number ≥ 0", field=field)
    if value != value or value == float("inf"):  # NaN, infinity
        raise InvalidInput(f"{field} must be a finite number", field=field)
    return Decimal(str(value))


def check_config(body: dict[str, Any]) -> dict[str, Any]:
    """Validate an edit of the "economics" setting; every error names its field."""
    unknown = sorted(set(body) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(
            f"unknown setting {unknown[0]!r}; known: {', '.join(DEFAULTS)}", field=unknown[0]
        )
    out = dict(DEFAULTS)
    if "default_hourly_cost" in body:
        _money(body["default_hourly_cost"], "default_hourly_cost")
        out["default_hourly_cost"] = body["default_hourly_cost"]
    if "currency" in body:
        currency = body["currency"]
        if not isinstance(currency, str) or not _CURRENCY.match(currency.strip().upper()):
            raise InvalidInput("currency must be a 3-letter code such as RUB", field="currency")
        out["currency"] = currency.strip().upper()
    costs = body.get("hourly_cost", {})
    if not isinstance(costs, dict):
        raise InvalidInput("hourly_cost must be an object {user_id: cost}", field="hourly_cost")
    clean: dict[str, Any] = {}
    for key, value in costs.items():
        if not str(key).isdigit():
            raise InvalidInput(f"hourly_cost keys are user ids, not {key!r}", field="hourly_cost")
        _money(value, f"hourly_cost.{key}")
        clean[str(int(key))] = value
    out["hourly_cost"] = clean
    return out


def config_from(stored: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **stored}


def parse_range(start: str | None, end: str | None, now: datetime, tz: str) -> tuple[date, date]:
    """``from``/``to`` as YYYY-MM-DD; missing ones default to today in the department's zone."""
    today = now.astimezone(ZoneInfo(tz)).date()
    days = []
    for name, text in (("from", start), ("to", end)):
        try:
            days.append(date.fromisoformat(text) if text else today)
        except ValueError:
            raise InvalidInput(f"{name} must be YYYY-MM-DD, not {text!r}", field=name) from None
    if days[0] > days[1]:
        raise InvalidInput("from must not be after to", field="from")
    if (days[1] - days[0]).days >= MAX_DAYS:
        raise InvalidInput(f"take at most {MAX_DAYS} days at once", field="to")
    return days[0], days[1]


async def economics(
    session: AsyncSession, start: date, end: date, tz: str, config: dict[str, Any]
) -> Economics:
    zone = ZoneInfo(tz)
    lo = datetime.combine(start, time(), zone)
    hi = datetime.combine(end + timedelta(days=1), time(), zone)
    config = config_from(config)
    counted = or_(col(Call.direction) == "outbound", col(Call.answered_at).is_not(None))
    calls = {
        uid: (int(n), int(talk or 0))
        for uid, n, talk in await session.exec(
            select(Call.operator_id, func.count(), func.sum(Call.duration_s))
            .where(
                col(Call.operator_id).is_not(None),
                col(Call.started_at) >= lo,
                col(Call.started_at) < hi,
                counted,
            )
            .group_by(col(Call.operator_id))
        )
    }
    events: dict[tuple[int, str], int] = {
        (cast(int, uid), kind): int(n)  # the query asks for user_id IS NOT NULL
        for uid, kind, n in await session.exec(
            select(KpiEvent.user_id, KpiEvent.kind, func.count())
            .where(
                col(KpiEvent.user_id).is_not(None),
                col(KpiEvent.kind).in_(("payment", "invoice")),
                col(KpiEvent.at) >= lo,
                col(KpiEvent.at) < hi,
            )
            .group_by(col(KpiEvent.user_id), col(KpiEvent.kind))
        )
    }
    worked = set(calls) | {uid for uid, _ in events}
    users = await session.exec(
        select(User)
        .where(
            or_(
                and_(col(User.role) == Role.OPERATOR, col(User.active).is_(True)),
                col(User.id).in_(worked or {-1}),
            )
        )
        .order_by(col(User.tier), col(User.username))
    )
    default = Decimal(str(config["default_hourly_cost"] or 0))
    costs = {str(k): Decimal(str(v)) for k, v in (config.get("hourly_cost") or {}).items()}
    lines: list[Line] = []
    for u in users:
        n, talk = calls.get(u.id, (0, 0))
        rate = costs.get(str(u.id), default)
        lines.append(
            Line(
                user_id=u.id,
                username=u.username,
                display_name=u.display_name or u.username,
                calls=n,
                talk_s=talk,
                successes=events.get((u.id, "payment"), 0),  # type: ignore[arg-type]
                invoices=events.get((u.id, "invoice"), 0),  # type: ignore[arg-type]
                hourly_cost=rate,
                cost=(Decimal(talk) * rate / 3600).quantize(CENT, ROUND_HALF_UP),
            )
        )
    total = Line(
        None, "", "TOTAL",
        calls=sum(x.calls for x in lines),
        talk_s=sum(x.talk_s for x in lines),
        successes=sum(x.successes for x in lines),
        invoices=sum(x.invoices for x in lines),
        hourly_cost=None,
        cost=sum((x.cost for x in lines), Decimal(0)),
    )  # fmt: skip
    working = max(1, sum(1 for x in lines if x.calls))
    # Rates of the average line are the totals' rates, not ratios of rounded means.
    average = _AverageLine(
        None, "", "AVERAGE",
        calls=round(total.calls / working),
        talk_s=round(total.talk_s / working),
        successes=round(total.successes / working),
        invoices=round(total.invoices / working),
        hourly_cost=None,
        cost=(total.cost / working).quantize(CENT, ROUND_HALF_UP),
        of=total,
    )  # fmt: skip
    return Economics(start, end, config["currency"], lines, average, total)


@dataclass(frozen=True)
class _AverageLine(Line):
    of: Line | None = None

    @property
    def success_rate(self) -> float | None:
        return self.of.success_rate if self.of else None

    @property
    def cost_per_success(self) -> Decimal | None:
        return self.of.cost_per_success if self.of else None


def economics_csv(report: Economics) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["from", "to", "username", "operator", "calls", "talk_s", "successes", "invoices",
         "success_rate", "hourly_cost", "cost", "cost_per_success", "currency"]
    )  # fmt: skip
    for line in [*report.operators, report.average, report.total]:
        j = line.to_json()
        writer.writerow(
            [report.start.isoformat(), report.end.isoformat(), _safe(line.username),
             _safe(line.display_name), *(_blank(j[k]) for k in (
                 "calls", "talk_s", "successes", "invoices", "success_rate", "hourly_cost",
                 "cost", "cost_per_success")), report.currency]
        )  # fmt: skip
    return out.getvalue()


def _blank(value: object) -> object:
    return "" if value is None else value


def _safe(text: str) -> str:
    # A spreadsheet would run "=HYPERLINK(...)" typed as a display name: make it text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
