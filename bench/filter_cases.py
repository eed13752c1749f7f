"""What bench.import_filters measures: the criteria, a lived-in client base, and query plans.

An import leaves every client new, cold and never called, which no filter worth timing
looks at. ``spread`` gives the imported base the shape of a department that has worked it
for a while, deterministically (seeded): the older clients (low ids) are spread over the
whole workflow, the newest 40% are mostly still new. That correlation is the one that
hurts keyset paging in id order (a walk along the primary key meets the matching rows late
or never), so the figures show it instead of hiding it behind a uniform spread.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.definitions import current_version
from engine.filters import Context, where_for
from engine.models import Client
from engine.service import Tierline

# Issue #5's filter: the figures README quotes.
ISSUE5 = {
    "all": [
        {"field": "tier", "op": "eq", "value": "cold"},
        {"field": "custom.industry", "op": "in", "value": ["retail", "it"]},
        {"not": {"field": "company", "op": "contains", "value": "7"}},
        {"field": "custom.employees", "op": "gte", "value": 50},
    ]
}

# Typical supervisor filters, measured on the spread base.
CASES: dict[str, dict[str, Any]] = {
    "issue5": ISSUE5,
    "tier+state": {
        "all": [
            {"field": "tier", "op": "eq", "value": "sales"},
            {"field": "state", "op": "eq", "value": "invoice_sent"},
        ]
    },
    "state_new": {"field": "state", "op": "eq", "value": "new"},
    "key_accounts": {"field": "tier", "op": "eq", "value": "key_account"},
    "last_outcome": {"field": "last_outcome", "op": "eq", "value": "no_answer"},
    "days_since>=30": {"field": "days_since_contact", "op": "gte", "value": 30},
    "days_since<7": {"field": "days_since_contact", "op": "lt", "value": 7},
    "custom_eq": {"field": "custom.industry", "op": "eq", "value": "banking"},
    "custom_eq_none": {"field": "custom.industry", "op": "eq", "value": "mining"},
    "segment_key": {"field": "segment_class", "op": "eq", "value": "key"},
    "timezone_in": {
        "field": "timezone",
        "op": "in",
        "value": ["Asia/Yekaterinburg", "Asia/Novosibirsk"],
    },
    "cold_stale": {
        "all": [
            {"field": "tier", "op": "eq", "value": "cold"},
            {"field": "days_since_contact", "op": "gte", "value": 14},
            {"not": {"field": "last_outcome", "op": "eq", "value": "not_interested"}},
        ]
    },
    # The newest clients only: a walk along the primary key meets them last.
    "source_latest": {"field": "source", "op": "eq", "value": "expo"},
    "name_contains_none": {"field": "name", "op": "contains", "value": "zzz"},
}

ZONES = ["Europe/Moscow", "Europe/Samara", "Asia/Yekaterinburg", "Asia/Novosibirsk"]
INDUSTRIES = ["retail", "banking", "logistics", "it", "construction", "food", "media"]


def csv_row(i: int, rows: int, rnd: random.Random) -> str:
    """One contact line; columns as in ``CSV_HEADER``. The last 5% came from the expo."""
    zone = rnd.choice(ZONES) if rnd.random() < 0.7 else ""
    segment = rnd.choices(["key", "important", "regular"], [2, 10, 88])[0]
    source = "expo" if i >= rows * 0.95 else rnd.choice(["fair", "web", "partner", "cold_base"])
    return (
        f"Client {i},+7916{i:07d},Company {rnd.randrange(10_000)},c{i}@example.com,"
        f"{rnd.choice(INDUSTRIES)},{rnd.randrange(1, 1000)},{zone},{segment},{source}\n"
    )


CSV_HEADER = "Full name,Phone,Company,E-mail,Industry,Employees,Time zone,Segment,Source\n"
CSV_MAPPING = {"custom.industry": "Industry", "custom.employees": "Employees"}


async def spread(tl: Tierline, now: datetime, batch: int = 20_000) -> None:
    """Move imported clients along the workflow, with the outcome that brought them there."""
    rnd = random.Random(7)
    async with tl.db.session() as s:
        defn = await tl.cache.get(s, (await current_version(s)).id)  # type: ignore[arg-type]
        low, high = (await s.exec(select(func.min(Client.id), func.max(Client.id)))).one()
    states = [name for name in defn.states if name != defn.initial]
    arrivals = {name: [t.event for t in defn.transitions if t.target == name] for name in states}
    table = Client.__table__  # type: ignore[attr-defined]
    stmt = (
        update(table)
        .where(table.c.id == bindparam("cid"))
        .values(
            state=bindparam("st"),
            tier=bindparam("tr"),
            last_outcome=bindparam("lo"),
            last_contact_at=bindparam("lc"),
        )
    )
    span = max(1, high - low)
    for start in range(low, high + 1, batch):
        rows = []
        for cid in range(start, min(start + batch, high + 1)):
            age = (cid - low) / span  # 0 = the oldest client, 1 = the newest
            if rnd.random() < (0.9 if age >= 0.6 else 0.1):
                continue  # still new: never called
            state = rnd.choice(states)
            rows.append(
                {
                    "cid": cid,
                    "st": state,
                    "tr": defn.states[state].tier,
                    "lo": rnd.choice(arrivals[state] or ["no_answer"]),
                    "lc": now - timedelta(minutes=rnd.randrange(365 * 24 * 60)),
                }
            )
        if rows:
            async with tl.db.transaction() as s:
                await (await s.connection()).execute(stmt, rows)


async def explain(session: AsyncSession, criteria: object, ctx: Context) -> list[str]:
    """The plans of the count and of the first page (EXPLAIN ANALYZE on PostgreSQL)."""
    where = where_for(session, criteria, ctx)
    queries = [
        select(func.count()).select_from(Client).where(where),
        select(Client).where(where, col(Client.id) > 0).order_by(col(Client.id)).limit(50),
    ]
    conn = await session.connection()
    dialect = conn.dialect
    lines: list[str] = []
    for query in queries:
        compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        verb = (
            "EXPLAIN (ANALYZE, BUFFERS)" if dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
        )
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = await conn.exec_driver_sql(f"{verb} {compiled.string}", _bind(params, dialect.name))
        lines += [" | ".join(str(v) for v in row) for row in rows]
        lines.append("")
    return lines


def _bind(params: tuple, dialect: str) -> tuple:
    # The UTC column type stores naive UTC text on SQLite; do what its bind processor does.
    if dialect != "sqlite":
        return params
    return tuple(
        v.astimezone(UTC).replace(tzinfo=None).isoformat(" ") if isinstance(v, datetime) else v
        for v in params
    )
