"""Persisted transitions per second through the real engine, against plain SQL of the same rows.

One transition = the event applied to the client row (state, attempts, revision), its history
row inserted, the pending follow-up closed and the next one inserted, committed. Clients
alternate call_back_later -(no_answer)-> no_answer -(call_back)-> call_back_later, so the
attempt count never reaches no_answer's max_attempts and every event is a real state change.

"raw" does the same four writes per event with SQLAlchemy core executemany, one commit per
group, and nothing else: the ratio engine/raw is what the runtime costs on top of the rows.

    python -m bench.transitions [--backend sqlite|postgres|both] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, func, select, update

from bench.common import (
    bench_settings,
    fresh_database,
    percentiles,
    print_table,
    seed_clients,
    template_followup,
)
from engine.bus import LocalBus
from engine.clock import SystemClock
from engine.definitions import current_version
from engine.errors import TierlineError
from engine.models import Client, FollowUp, TransitionRecord
from engine.runtime import Applied, EventRequest
from engine.service import Tierline

START_STATE = "call_back_later"
EVENT_FROM = {"call_back_later": "no_answer", "no_answer": "call_back"}
TARGET = {"call_back_later": "no_answer", "no_answer": "call_back_later"}


@dataclass
class Cycler:
    """Hands out (client, event) pairs round-robin over its clients; a group never names a
    client twice as long as it is no larger than the slice."""

    ids: list[int]
    state: dict[int, str]  # shared by every cycler over the same clients
    pos: int = 0

    def take(self, k: int) -> list[tuple[int, str]]:
        out = []
        for _ in range(k):
            cid = self.ids[self.pos]
            self.pos = (self.pos + 1) % len(self.ids)
            out.append((cid, EVENT_FROM[self.state[cid]]))
        return out


@dataclass
class Run:
    events: int = 0
    errors: int = 0
    seconds: float = 0.0
    commit_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("nan")


async def engine_worker(tl: Tierline, cyc: Cycler, events: int, group: int, run: Run) -> None:
    done = 0
    while done < events:
        batch = cyc.take(min(group, events - done))
        reqs = [EventRequest(client_id=cid, event=ev) for cid, ev in batch]
        t = time.perf_counter()
        if group == 1:
            try:
                results: list[Applied | TierlineError] = [await tl.runtime.apply(reqs[0])]
            except TierlineError as exc:
                results = [exc]
        else:
            results = await tl.runtime.apply_many(reqs)
        run.commit_s.append(time.perf_counter() - t)
        for (cid, _), res in zip(batch, results, strict=True):
            if isinstance(res, Applied):
                cyc.state[cid] = res.to_state
            else:
                run.errors += 1
        done += len(batch)
        run.events += len(batch)


class RawWriter:
    """The same rows, written with core executemany and nothing else."""

    def __init__(self, tl: Tierline, version_id: int, templates: dict[str, dict]) -> None:
        self.tl = tl
        self.version_id = version_id
        self.templates = templates
        c, f = Client.__table__, FollowUp.__table__  # type: ignore[attr-defined]
        self.move = (
            update(c)
            .where(c.c.id == bindparam("b_id"))
            .values(
                state=bindparam("b_state"),
                attempts=bindparam("b_attempts"),
                revision=c.c.revision + 1,
                updated_at=bindparam("b_now"),
                last_outcome=bindparam("b_event"),
            )
        )
        self.close = (
            update(f)
            .where(f.c.client_id == bindparam("b_id"), f.c.status == "pending")
            .values(status="done", closed_at=bindparam("b_now"))
        )
        self.history = TransitionRecord.__table__.insert()  # type: ignore[attr-defined]
        self.schedule = f.insert()

    async def worker(self, cyc: Cycler, events: int, group: int, run: Run) -> None:
        done = 0
        while done < events:
            batch = cyc.take(min(group, events - done))
            t = time.perf_counter()
            await self.commit(batch, cyc)
            run.commit_s.append(time.perf_counter() - t)
            done += len(batch)
            run.events += len(batch)

    async def commit(self, batch: list[tuple[int, str]], cyc: Cycler) -> None:
        now = self.tl.clock.now()
        moves = [(cid, ev, cyc.state[cid], TARGET[cyc.state[cid]]) for cid, ev in batch]
        async with self.tl.db.transaction() as session:
            conn = await session.connection()
            await conn.execute(
                self.move,
                [
                    {
                        "b_id": cid,
                        "b_state": to,
                        "b_now": now,
                        "b_event": ev,
                        "b_attempts": 1 if to == "no_answer" else 0,
                    }
                    for cid, ev, _, to in moves
                ],
            )
            await conn.execute(
                self.history,
                [
                    {
                        "client_id": cid,
                        "at": now,
                        "actor_id": None,
                        "event": ev,
                        "from_state": frm,
                        "to_state": to,
                        "from_tier": "cold",
                        "to_tier": "cold",
                        "workflow_version_id": self.version_id,
                        "call_id": None,
                        "kpi": None,
                        "note": "",
                    }
                    for cid, ev, frm, to in moves
                ],
            )
            await conn.execute(self.close, [{"b_id": cid, "b_now": now} for cid, *_ in moves])
            await conn.execute(
                self.schedule,
                [
                    {**self.templates[to], "client_id": cid, "created_at": now}
                    for cid, _, _, to in moves
                ],
            )
        for cid, _, _, to in moves:
            cyc.state[cid] = to


async def timed(workers: list) -> float:  # type: ignore[type-arg]
    t = time.perf_counter()
    await asyncio.gather(*workers)
    return time.perf_counter() - t


def split(ids: list[int], parts: int, state: dict[int, str]) -> list[Cycler]:
    return [Cycler(ids[i::parts], state) for i in range(parts)]


async def bench_backend(backend: str, sizes: dict[str, int], callers: int) -> list[list[object]]:
    rows: list[list[object]] = []
    async with fresh_database(backend) as url:
        tl = Tierline.build(bench_settings(url), clock=SystemClock(), bus=LocalBus())
        await tl.start(timers=False)
        try:
            t = time.perf_counter()
            ids = await seed_clients(tl, sizes["clients"], START_STATE)
            print(f"[{backend}] seeded {len(ids):,} clients in {time.perf_counter() - t:.1f} s")
            async with tl.db.session() as session:
                version = await current_version(session)
            defn = tl.cache.remember(version)
            now: datetime = tl.clock.now()
            templates = {
                "no_answer": template_followup(tl, defn, "no_answer", now, attempts=1),
                "call_back_later": template_followup(tl, defn, "call_back_later", now),
            }
            raw = RawWriter(tl, version.id, templates)  # type: ignore[arg-type]
            state = dict.fromkeys(ids, START_STATE)
            everyone = Cycler(ids, state)
            await engine_worker(tl, everyone, 200, 50, Run())  # warm caches, compile the machine

            plans = [(1, 1, sizes["single"])]
            plans += [(g, 1, sizes["group"]) for g in (50, 200)]
            plans += [(g, callers, sizes["concurrent"]) for g in (50, 200)]
            for group, n_callers, events in plans:
                per = events // n_callers
                results = {}
                for kind in ("engine", "raw"):
                    run = Run()
                    cycs = [everyone] if n_callers == 1 else split(ids, n_callers, state)
                    if kind == "engine":
                        jobs = [engine_worker(tl, c, per, group, run) for c in cycs]
                    else:
                        jobs = [raw.worker(c, per, group, run) for c in cycs]
                    run.seconds = await timed(jobs)
                    results[kind] = run
                eng, plain = results["engine"], results["raw"]
                commit = percentiles([s * 1000 for s in eng.commit_s])
                rows.append(
                    [
                        backend,
                        "apply" if group == 1 else "apply_many",
                        group,
                        n_callers,
                        eng.events,
                        eng.errors,
                        eng.rate,
                        commit.p50,
                        commit.p99,
                        plain.rate,
                        f"{eng.rate / plain.rate:.0%}",
                    ]
                )
                print(
                    f"[{backend}] group={group} callers={n_callers}: engine {eng.rate:,.0f}/s,"
                    f" raw {plain.rate:,.0f}/s",
                    flush=True,
                )
            await report_integrity(tl, backend, len(ids))
        finally:
            await tl.stop()
    return rows


async def report_integrity(tl: Tierline, backend: str, clients: int) -> None:
    """The benchmark is only worth its numbers if the invariant still holds afterwards."""
    violations = await tl.check_followups()
    async with tl.db.session() as session:
        conn = await session.connection()
        history = (await conn.execute(select(func.count()).select_from(TransitionRecord))).scalar()
    print(
        f"[{backend}] invariant violations: {len(violations)}; "
        f"history rows: {history:,} for {clients:,} clients"
    )


SIZES = {
    "full": {"clients": 10_000, "single": 1_000, "group": 5_000, "concurrent": 5_000},
    "quick": {"clients": 1_000, "single": 200, "group": 800, "concurrent": 800},
}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--callers", type=int, default=8, help="concurrent apply_many callers")
    args = ap.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = []
    for backend in backends:
        rows += await bench_backend(backend, sizes, args.callers)
    print_table(
        "Persisted transitions per second (engine vs plain core writes of the same rows)",
        [
            "backend",
            "API",
            "group",
            "callers",
            "events",
            "errors",
            "engine /s",
            "commit p50 ms",
            "commit p99 ms",
            "raw /s",
            "engine/raw",
        ],
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
