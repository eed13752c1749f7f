"""Shared benchmark helpers: statistics, process RSS, throw-away databases, bulk seeding, tables.

Seeding writes with SQLAlchemy core what ``Runtime.enroll_in`` would write for a client
entering a state (the client row, its phone, the "enroll" history row and the follow-up the
real planner makes for that state), because enrolling a million clients one by one through
the engine would take longer than the benchmark itself.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from engine.definitions import current_version
from engine.followups.planner import PlanInput, plan
from engine.models import Client, ClientPhone, FollowUp, TransitionRecord
from engine.service import Tierline
from engine.settings import Settings
from engine.workflow import WorkflowDefinition

PG_ADMIN_URL = os.environ.get(
    "TIERLINE_BENCH_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
CLIENT_TZ = "Europe/Moscow"


@dataclass(frozen=True)
class Stats:
    n: int
    p50: float
    p99: float
    max: float
    mean: float


def percentiles(values: Sequence[float]) -> Stats:
    """Nearest-rank p50/p99 (no interpolation: every figure is one that was measured)."""
    if not values:
        return Stats(0, float("nan"), float("nan"), float("nan"), float("nan"))
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered), max(1, math.ceil(p * len(ordered)))) - 1]

    return Stats(len(ordered), rank(0.50), rank(0.99), ordered[-1], statistics.fmean(ordered))


def _status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (default: this one), in MiB, from /proc."""
    return _status_kb(pid or os.getpid(), "VmRSS") / 1024


def peak_rss_mb(pid: int | None = None) -> float:
    """The high-water mark of the resident set (VmHWM), in MiB."""
    return _status_kb(pid or os.getpid(), "VmHWM") / 1024


async def _pg_admin(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@asynccontextmanager
async def fresh_database(backend: str) -> AsyncIterator[str]:
    """A database URL nobody else uses, removed afterwards (schema not yet migrated)."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="tierline_bench_"))
        try:
            yield f"sqlite+aiosqlite:///{folder / 'bench.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}: sqlite or postgres")
    name = f"tierline_bench_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_settings(url: str, data_dir: Path | None = None) -> Settings:
    return Settings(
        data_dir=data_dir or Path(tempfile.gettempdir()) / "tierline_bench_data",
        database_url=url,
        session_secret="bench-session-secret-0123456789abcdef",
        default_region="RU",
        timezone=CLIENT_TZ,
    )


def template_followup(
    tl: Tierline, defn: WorkflowDefinition, state: str, now: datetime, attempts: int = 0
) -> dict:
    """The follow-up row the real planner writes for a client entering ``state`` now,
    without ``id``/``client_id`` (every seeded client is alike but for its id)."""
    probe = Client(name="probe", timezone=CLIENT_TZ, workflow_version_id=0, state=state, tier="")
    fu = plan(
        PlanInput(
            state=defn.states[state],
            client=probe,
            attempts=attempts,
            now=now,
            policy=tl.policy,
            default_tz=tl.settings.timezone,
            owner_id=None,
        )
    )
    assert fu is not None, f"{state} has no follow-up rule"
    row = fu.model_dump()
    row.pop("id", None)
    row.pop("client_id", None)
    return row


async def seed_clients(
    tl: Tierline,
    count: int,
    state: str,
    *,
    chunk: int = 20_000,
    history: bool = True,
    phones: bool = True,
    due_at: datetime | None = None,
) -> list[int]:
    """Insert ``count`` clients in ``state``, each with its pending follow-up (core, chunked).

    Returns their ids. ``due_at`` overrides the planned due time of the follow-ups."""
    now = tl.clock.now()
    async with tl.db.session() as session:
        version = await current_version(session)
        defn = tl.cache.remember(version)
        conn = await session.connection()
        first = (await conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM clients"))).scalar()
    fu_template = template_followup(tl, defn, state, now)
    if due_at is not None:
        fu_template["due_at"] = due_at
    tier = defn.tier_of(state)
    ids = list(range(first + 1, first + 1 + count))
    for start in range(0, count, chunk):
        part = ids[start : start + chunk]
        async with tl.db.transaction() as session:
            conn = await session.connection()
            await conn.execute(
                Client.__table__.insert(),  # type: ignore[attr-defined]
                [_client_row(i, state, tier, version.id, now) for i in part],
            )
            if phones:
                await conn.execute(
                    ClientPhone.__table__.insert(),  # type: ignore[attr-defined]
                    [
                        {"client_id": i, "e164": f"+7916{i:07d}", "raw": "", "label": ""}
                        for i in part
                    ],
                )
            if history:
                await conn.execute(
                    TransitionRecord.__table__.insert(),  # type: ignore[attr-defined]
                    [_enroll_row(i, state, tier, version.id, now) for i in part],
                )
            await conn.execute(
                FollowUp.__table__.insert(),  # type: ignore[attr-defined]
                [{**fu_template, "client_id": i} for i in part],
            )
    if not tl.db.is_sqlite:  # explicit ids leave the serial sequence behind
        async with tl.db.transaction() as session:
            conn = await session.connection()
            await conn.execute(
                text("SELECT setval(pg_get_serial_sequence('clients', 'id'), MAX(id)) FROM clients")
            )
    return ids


def _client_row(i: int, state: str, tier: str, version_id: Any, now: datetime) -> dict:
    return {
        "id": i,
        "name": f"Bench client {i}",
        "company": "",
        "email": f"c{i}@example.com",
        "timezone": CLIENT_TZ,
        "segment_class": "regular",
        "custom": {},
        "owner_id": None,
        "source": "bench",
        "do_not_call": False,
        "created_at": now,
        "updated_at": now,
        "workflow_version_id": version_id,
        "state": state,
        "tier": tier,
        "attempts": 0,
        "revision": 0,
        "last_contact_at": None,
        "last_outcome": None,
    }


def _enroll_row(i: int, state: str, tier: str, version_id: Any, now: datetime) -> dict:
    return {
        "client_id": i,
        "at": now,
        "actor_id": None,
        "event": "enroll",
        "from_state": "",
        "to_state": state,
        "from_tier": "",
        "to_tier": tier,
        "workflow_version_id": version_id,
        "call_id": None,
        "kpi": None,
        "note": "enrolled",
    }


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A markdown table, ready to paste into the README."""
    cells = [[_cell(v) for v in row] for row in rows]
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")
    print(flush=True)


def _cell(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "–"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
