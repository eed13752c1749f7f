"""Segment classes (key / important / regular) from configurable rules, applied in bulk.

Rules (AppSetting "segment_rules"), e.g.::

    {"revenue_field": "revenue",
     "key": {"min_revenue": 1000000},
     "important": {"min_revenue": 100000, "or_min_calls_90d": 5}}

Revenue is the client's custom field ``revenue_field`` read as a number (a missing or
non-numeric value is no revenue); activity is the number of the client's calls started in
the last 90 days. A class matches when all its ``min_*`` conditions hold, or any of its
``or_min_*`` conditions does. ``key`` is tried first, then ``important``; everyone else is
``regular``. Reclassifying is one UPDATE over the whole base, never a loop over clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, false, func, literal, or_, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import InvalidInput
from engine.filters import JsonNumber, custom_value
from engine.models import Call, CallStatus, Client, SegmentClass

SETTING = "segment_rules"
ACTIVITY_DAYS = 90
RANKED = (SegmentClass.KEY, SegmentClass.IMPORTANT)  # tried in this order
CONDITIONS = ("min_revenue", "min_calls_90d", "or_min_revenue", "or_min_calls_90d")
DEFAULT_RULES: dict[str, Any] = {
    "revenue_field": "revenue",
    "key": {"min_revenue": 1_000_000},
    "important": {"min_revenue": 100_000, "or_min_calls_90d": 5},
}
_FIELD_NAME = re.compile(r"^[\w\- ]{1,64}$")


@dataclass(frozen=True)
class Reclassified:
    changed: int
    counts: dict[str, int]  # clients per class after the update

    def to_json(self) -> dict[str, object]:
        return {"changed": self.changed, "counts": self.counts}


def check_rules(body: dict[str, Any]) -> dict[str, Any]:
    """Validate rules; every error names its field (``important.or_min_calls_90d``)."""
    if not isinstance(body, dict):
        raise InvalidInput("the rules must be a JSON object", field="rules")
    allowed = {"revenue_field", *RANKED}
    for name in body:
        if name not in allowed:
            hint = " (regular is whoever matches no rule)" if name == SegmentClass.REGULAR else ""
            raise InvalidInput(
                f"unknown rule {name!r}{hint}; rules are revenue_field, key, important",
                field=name,
            )
    out: dict[str, Any] = {}
    field = body.get("revenue_field", "revenue")
    if not isinstance(field, str) or not _FIELD_NAME.match(field):
        raise InvalidInput(
            "revenue_field must be a custom field name (letters, digits, _ - space)",
            field="revenue_field",
        )
    out["revenue_field"] = field
    for cls in RANKED:
        if cls not in body:
            continue
        rule = body[cls]
        if not isinstance(rule, dict) or not rule:
            raise InvalidInput(
                f"{cls} must be an object with at least one of {', '.join(CONDITIONS)}", field=cls
            )
        clean: dict[str, float | int] = {}
        for name, value in rule.items():
            where = f"{cls}.{name}"
            if name not in CONDITIONS:
                raise InvalidInput(
                    f"unknown condition {name!r}; conditions are {', '.join(CONDITIONS)}",
                    field=where,
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidInput(f"{where} must be a number ≥ 0", field=where)
            if "calls" in name and not isinstance(value, int):
                raise InvalidInput(f"{where} must be a whole number of calls", field=where)
            if value != value or value == float("inf"):
                raise InvalidInput(f"{where} must be a finite number", field=where)
            clean[name] = value
        out[cls] = clean
    return out


def rules_from(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored rules, or the defaults when nothing was ever stored."""
    return stored if stored else dict(DEFAULT_RULES)


def _matches(rule: dict[str, Any], revenue: Any, calls: Any) -> Any:
    figure = {"revenue": revenue, "calls_90d": calls}
    every = [figure[k.removeprefix("min_")] >= v for k, v in rule.items() if k.startswith("min_")]
    anyof = [figure[k.removeprefix("or_min_")] >= v for k, v in rule.items() if k.startswith("or_")]
    parts = ([and_(*every)] if every else []) + anyof
    return or_(*parts) if parts else false()


async def reclassify(session: AsyncSession, now: datetime, rules: dict[str, Any]) -> Reclassified:
    """Set every client's segment_class from ``rules`` (validated here too) in one UPDATE."""
    rules = check_rules(rules)
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    revenue = custom_value(JsonNumber, rules["revenue_field"], dialect)
    uses_calls = any("calls" in k for cls in RANKED for k in rules.get(cls, {}))
    if uses_calls:
        activity = (
            select(col(Call.client_id).label("client_id"), func.count().label("n"))
            .where(
                col(Call.client_id).is_not(None),
                col(Call.started_at) >= now - timedelta(days=ACTIVITY_DAYS),
                col(Call.status) != CallStatus.TAKEN_ELSEWHERE,  # a ring group's call counts once
            )
            .group_by(col(Call.client_id))
            .subquery()
        )
        calls: Any = func.coalesce(activity.c.n, 0)
    else:
        calls = literal(0)
    whens = [
        (_matches(rules[cls], revenue, calls), literal(cls.value)) for cls in RANKED if cls in rules
    ]
    wanted = (
        case(*whens, else_=literal(SegmentClass.REGULAR.value))
        if whens
        else literal(SegmentClass.REGULAR.value)
    )
    target = select(col(Client.id).label("cid"), wanted.label("cls"))
    if uses_calls:
        target = target.select_from(Client).outerjoin(
            activity, activity.c.client_id == col(Client.id)
        )
    target_sq = target.subquery()
    # UPDATE ... FROM (PostgreSQL, SQLite ≥ 3.33): each row's class computed once, and only
    # rows whose class changes are written.
    conn = await session.connection()
    result = await conn.execute(
        update(Client)
        .where(col(Client.id) == target_sq.c.cid, col(Client.segment_class) != target_sq.c.cls)
        .values(segment_class=target_sq.c.cls, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    counts = dict.fromkeys((c.value for c in SegmentClass), 0)
    for cls, n in await conn.execute(
        select(col(Client.segment_class), func.count()).group_by(col(Client.segment_class))
    ):
        counts[cls] = int(n)
    return Reclassified(changed=int(result.rowcount or 0), counts=counts)
