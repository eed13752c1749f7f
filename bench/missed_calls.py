"""The missed-calls list (``engine.missed_calls``) over a busy department's week of calls.

Every console asks for it with its queue (on load, on every nudge, every minute), so its cost
is paid per operator per refresh. Seeds 20,000 clients (half cold, half sales) and a week of
calls, 6 % of them inbound and missed, 4 % outbound, the rest answered; 90 % of the missed
ones called back within two hours (a department that keeps up), then none (one that does
not); times the list as a cold operator and as a supervisor sees it, with the partial index
on missed calls (``ix_calls_missed``) and, in the same run, without it.

    python -m bench.missed_calls [--backend sqlite|postgres|both] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import datetime, timedelta

from sqlalchemy import text

from bench.common import bench_settings, fresh_database, percentiles, print_table, seed_clients
from engine.definitions import current_version
from engine.missed_calls import missed_calls
from engine.models import Call, CallStatus, User
from engine.service import Tierline
from engine.users import NewUser, create_user

MISSED_INDEX = "ix_calls_missed"
HEADERS = (
    "backend", "calls in the week", "missed", "called back", "as", "partial index", "listed",
    "p50", "p99",
)  # fmt: skip


def _call(
    call_id: str,
    direction: str,
    operator: User,
    client_id: int | None,
    number: str,
    started: datetime,
    answered: datetime | None,
) -> dict:
    return {
        "pbx_call_id": call_id,
        "direction": direction,
        "extension": operator.extension,
        "operator_id": operator.id,
        "client_id": client_id,
        "number": number,
        "status": CallStatus.ENDED.value,
        "started_at": started,
        "answered_at": answered,
        "ended_at": started + timedelta(seconds=60),
        "duration_s": 52 if answered else 0,
        "long_call": False,
        "checklist": {},
        "notes": "",
    }


async def seed_calls(
    tl: Tierline,
    count: int,
    client_ids: list[int],
    operators: list[User],
    returned_share: float,
) -> int:
    """A week of calls ending now, ``returned_share`` of the missed ones called back; returns
    how many are missed."""
    rng = random.Random(7)
    now = tl.clock.now()
    rows, missed = [], 0
    for n in range(count):
        started = now - timedelta(seconds=rng.randrange(7 * 86400))
        roll = rng.random()
        operator = rng.choice(operators)
        known = rng.random() < 0.9
        cid = rng.choice(client_ids) if known else None
        number = f"+7916{cid:07d}" if cid else f"+7903{rng.randrange(10**7):07d}"
        direction, answered = "inbound", started + timedelta(seconds=8)
        if roll < 0.06:
            answered = None
            missed += 1
            if rng.random() < returned_share:  # called back within two hours
                back = started + timedelta(minutes=rng.randrange(5, 120))
                rows.append(_call(f"r{n}", "outbound", operator, cid, number, back, back))
        elif roll < 0.10:
            direction = "outbound"
        rows.append(_call(f"b{n}", direction, operator, cid, number, started, answered))
    for start in range(0, len(rows), 20_000):
        async with tl.db.transaction() as session:
            conn = await session.connection()
            await conn.execute(Call.__table__.insert(), rows[start : start + 20_000])  # type: ignore[attr-defined]
    return missed


async def time_list(tl: Tierline, viewer: User, rounds: int) -> tuple[list[float], int]:
    out, listed = [], 0
    for _ in range(rounds):
        async with tl.db.session() as session:
            t = time.perf_counter()
            listed = len(await missed_calls(session, viewer=viewer, now=tl.clock.now()))
            out.append((time.perf_counter() - t) * 1000)
    return out, listed


async def run(backend: str, calls: int, rounds: int, returned_share: float) -> list[list[object]]:
    rows: list[list[object]] = []
    async with fresh_database(backend) as url:
        tl = Tierline.build(bench_settings(url))
        await tl.start(timers=False)
        try:
            cold = await seed_clients(tl, 10_000, "new", history=False)
            sales = await seed_clients(tl, 10_000, "presentation", history=False)
            async with tl.db.transaction() as session:
                tiers = tl.cache.remember(await current_version(session)).tiers
                users = [
                    await create_user(
                        session,
                        NewUser(name, "bench-password", role, tier, ext, name),
                        tiers=tiers,
                        now=tl.clock.now(),
                    )
                    for name, role, tier, ext in [
                        ("cold1", "operator", "cold", "101"),
                        ("sales1", "operator", "sales", "201"),
                        ("boss", "supervisor", None, None),
                    ]
                ]
            missed = await seed_calls(tl, calls, cold + sales, users[:2], returned_share)
            if backend == "postgres":  # autovacuum would; on SQLite nothing runs ANALYZE
                async with tl.db.engine.connect() as conn:
                    # VACUUM too: index-only scans need the visibility map it keeps.
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(text("VACUUM ANALYZE calls"))
                    await conn.execute(text("ANALYZE"))
            for with_index in (True, False):
                if not with_index:
                    async with tl.db.engine.begin() as conn:
                        await conn.execute(text(f"DROP INDEX {MISSED_INDEX}"))
                for viewer in (users[0], users[2]):
                    times, listed = await time_list(tl, viewer, rounds)
                    s = percentiles(times)
                    rows.append(
                        [
                            backend, f"{calls:,}", f"{missed:,}", f"{returned_share:.0%}",
                            viewer.username,
                            "yes" if with_index else "no", listed, s.p50, s.p99,
                        ]
                    )  # fmt: skip
        finally:
            await tl.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres", "both"])
    ap.add_argument("--quick", action="store_true", help="30,000 calls (not 100,000), 20 rounds")
    args = ap.parse_args()
    calls, rounds = (30_000, 20) if args.quick else (100_000, 50)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = []
    for backend in backends:
        for returned_share in (0.9, 0.0):
            rows += asyncio.run(run(backend, calls, rounds, returned_share))
    print_table(
        "The missed-calls list, ms per request",
        HEADERS,
        rows,
    )


if __name__ == "__main__":
    main()
