"""A million pending follow-ups in SQLite: serving-process RSS, and the lateness of a burst.

The parent seeds the database (core, in chunks), then starts a separate serving process
(``--serve``): ``Tierline`` with the SystemClock and its timers on, as ``tierline serve``
runs it. That process reports its RSS, then makes a burst of follow-ups due in the same
second and measures when each was fired (``fired_at``/``lateness_ms`` in its row) and
announced (received by a bus subscriber), checking none was dropped or fired twice; then
the same for automatic-event follow-ups (not_interested -> recycle), whose firing is a
transition. The parent samples the child's RSS from /proc the whole time.

    python -m bench.followups_scale [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select, text, update

from bench.common import (
    bench_settings,
    fresh_database,
    peak_rss_mb,
    percentiles,
    print_table,
    rss_mb,
    seed_clients,
)
from engine.bus import LocalBus
from engine.clock import SystemClock
from engine.followups.dispatcher import FOLLOWUPS_CHANNEL
from engine.models import FollowUp, TransitionRecord
from engine.presence import attention_followups
from engine.service import Tierline

SIZES = {"full": (1_000_000, 10_000, 1_000), "quick": (100_000, 2_000, 1_000)}
LEAD_S = 3  # the burst is due this many seconds after it is written


async def seed(url: str, total: int, auto: int) -> None:
    tl = Tierline.build(bench_settings(url), clock=SystemClock(), bus=LocalBus())
    await tl.start(timers=False)
    try:
        t = time.perf_counter()
        # Calls owed tomorrow (call_back_later), and clients parked in not_interested whose
        # automatic recycle is 90 days out: nothing is due while the server starts.
        await seed_clients(tl, total - auto, "call_back_later", history=False, phones=False)
        await seed_clients(tl, auto, "not_interested", history=False, phones=False)
        print(f"seeded {total:,} pending follow-ups in {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        await tl.stop()


async def make_due(tl: Tierline, ids: list[int]) -> tuple[datetime, float]:
    """Move these follow-ups to one moment LEAD_S ahead, and wake the timer as a write
    through the engine would; returns the due time and how long the update took."""
    due = tl.clock.now().replace(microsecond=0) + timedelta(seconds=LEAD_S)
    t = time.perf_counter()
    stmt = (
        update(FollowUp.__table__)  # type: ignore[arg-type]
        .where(FollowUp.__table__.c.id == bindparam("b_id"))  # type: ignore[attr-defined]
        .values(due_at=due)
    )
    async with tl.db.transaction() as session:
        conn = await session.connection()
        await conn.execute(stmt, [{"b_id": i} for i in ids])
    tl.timer.wake_at(due)
    return due, time.perf_counter() - t


async def pick(tl: Tierline, n: int, auto: bool) -> list[int]:
    """``n`` pending follow-ups spread evenly over the table."""
    cond = "auto_event IS NOT NULL" if auto else "auto_event IS NULL"
    async with tl.db.session() as session:
        conn = await session.connection()
        total = (
            await conn.execute(
                text(f"SELECT COUNT(*) FROM followups WHERE status='pending' AND {cond}")
            )
        ).scalar() or 0
        step = max(1, total // n)
        rows = await conn.execute(
            text(
                f"SELECT id FROM followups WHERE status='pending' AND {cond} "
                "AND id % :step = 0 ORDER BY id LIMIT :n"
            ),
            {"step": step, "n": n},
        )
        return [r[0] for r in rows]


async def wait_for(check, within: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + within
    while time.monotonic() < end:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms ticker wakes: the event-loop stall the burst causes."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        samples.append((loop.time() - t - 0.01) * 1000)


async def attention_ms(tl: Tierline, runs: int = 5) -> float:
    """The supervisor's attention list (its live view asks every few seconds), median ms."""
    times = []
    for _ in range(runs):
        async with tl.db.session() as session:
            t = time.perf_counter()
            await attention_followups(session, tl.clock.now())
            times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[runs // 2]


async def serve(url: str, burst: int, auto: int) -> dict:
    tl = Tierline.build(bench_settings(url), clock=SystemClock(), bus=LocalBus())
    t = time.perf_counter()
    await tl.start(timers=True)
    out: dict = {"start_s": time.perf_counter() - t}
    await asyncio.sleep(1.0)
    out["rss_idle_mb"] = rss_mb()
    print(json.dumps({"phase": "idle"}), flush=True)
    out["attention_ms"] = await attention_ms(tl)

    received: dict[int, list[datetime]] = {}

    def on_message(channel: str, message: dict) -> None:
        if channel == FOLLOWUPS_CHANNEL and message.get("type") == "follow_up_due":
            received.setdefault(message["followup_id"], []).append(datetime.now(UTC))

    tl.bus.subscribe(on_message)
    lag: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(loop_lag(lag, stop))

    # 1. A burst of calls owed in the same second: fired = stamped and announced.
    ids = await pick(tl, burst, auto=False)
    due, out["burst_update_s"] = await make_due(tl, ids)
    wanted = set(ids)

    async def all_announced() -> bool:
        return wanted <= received.keys()

    out["burst_complete"] = await wait_for(all_announced, LEAD_S + 120)
    await asyncio.sleep(tl.timer._poll + 1)  # one more poll: would anything fire twice?
    rows = await fired_rows(tl, ids)
    heard = [received[i] for i in ids if i in received]
    out["burst"] = {
        "n": len(ids),
        "fired": sum(1 for r in rows if r["fired_at"] is not None),
        "announced": len(heard),
        "announced_twice": sum(1 for h in heard if len(h) > 1),
        "strays": len(received.keys() - wanted),
        "lateness_ms": stats([r["lateness_ms"] for r in rows if r["lateness_ms"] is not None]),
        "fired_at_ms": stats([ms(r["fired_at"] - due) for r in rows if r["fired_at"]]),
        "announce_ms": stats([ms(h[0] - due) for h in heard]),
    }

    # 2. Automatic events due at once: firing is a transition (not_interested -> new).
    auto_ids = await pick(tl, auto, auto=True)
    due, out["auto_update_s"] = await make_due(tl, auto_ids)

    async def all_applied() -> bool:
        return await count_recycled(tl) >= len(auto_ids)

    out["auto_complete"] = await wait_for(all_applied, LEAD_S + 120)
    await asyncio.sleep(tl.timer._poll + 1)
    rows = await fired_rows(tl, auto_ids)
    async with tl.db.session() as session:
        conn = await session.connection()
        history = list(
            await conn.execute(
                select(TransitionRecord.client_id, TransitionRecord.at).where(
                    TransitionRecord.event == "recycle"
                )
            )
        )
    per_client = Counter(c for c, _ in history)
    out["auto"] = {
        "n": len(auto_ids),
        "fired": sum(1 for r in rows if r["fired_at"] is not None),
        "applied": len(per_client),
        "applied_twice": sum(1 for n in per_client.values() if n > 1),
        "lateness_ms": stats([r["lateness_ms"] for r in rows if r["lateness_ms"] is not None]),
        "transition_ms": stats([ms(at - due) for _, at in history]),
    }
    stop.set()
    await ticker
    out["loop_lag_ms"] = stats(lag)
    out["rss_end_mb"] = rss_mb()
    out["rss_peak_mb"] = peak_rss_mb()
    await tl.stop()
    return out


async def fired_rows(tl: Tierline, ids: list[int]) -> list[dict]:
    f = FollowUp.__table__  # type: ignore[attr-defined]
    found: list[dict] = []
    async with tl.db.session() as session:
        conn = await session.connection()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            res = await conn.execute(
                select(f.c.id, f.c.fired_at, f.c.lateness_ms).where(f.c.id.in_(part))
            )
            found += [dict(r._mapping) for r in res]
    return found


async def count_recycled(tl: Tierline) -> int:
    async with tl.db.session() as session:
        conn = await session.connection()
        return (
            await conn.execute(
                select(func.count())
                .select_from(TransitionRecord)
                .where(TransitionRecord.event == "recycle")
            )
        ).scalar() or 0


def ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def stats(values: list[float]) -> dict:
    s = percentiles(values)
    return {"n": s.n, "p50": s.p50, "p99": s.p99, "max": s.max}


async def parent(total: int, burst: int, auto: int) -> None:
    async with fresh_database("sqlite") as url:
        await seed(url, total, auto)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.followups_scale",
            "--serve",
            url,
            "--burst",
            str(burst),
            "--auto",
            str(auto),
            stdout=asyncio.subprocess.PIPE,
        )
        samples: list[float] = []

        async def sample() -> None:
            while proc.returncode is None:
                try:
                    samples.append(rss_mb(proc.pid))
                except (OSError, LookupError):
                    return
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        assert proc.stdout is not None
        result: dict = {}
        idle_seen: float | None = None
        async for line in proc.stdout:
            msg = json.loads(line)
            if msg.get("phase") == "idle":
                idle_seen = rss_mb(proc.pid)
            else:
                result = msg
        await proc.wait()
        sampler.cancel()
    report(total, result, idle_seen, max(samples, default=float("nan")))


def report(total: int, r: dict, idle_seen: float | None, peak_seen: float) -> None:
    print_table(
        f"Serving process over {total:,} pending follow-ups (SQLite)",
        ["measure", "value"],
        [
            ["start-up (migrate check, timers armed) s", r["start_s"]],
            ["RSS after start, idle (MiB)", idle_seen or r["rss_idle_mb"]],
            ["the supervisor's attention list, median ms", r["attention_ms"]],
            [
                "RSS peak during the bursts (MiB, sampled / VmHWM)",
                f"{peak_seen:.0f} / {r['rss_peak_mb']:.0f}",
            ],
            [
                "event-loop stall during bursts p99 / max (ms)",
                f"{r['loop_lag_ms']['p99']:.1f} / {r['loop_lag_ms']['max']:.1f}",
            ],
        ],
    )
    b, a = r["burst"], r["auto"]
    rows = []
    for label, d in (
        ("calls: due -> fired (row lateness_ms)", b["lateness_ms"]),
        ("calls: due -> fired_at", b["fired_at_ms"]),
        ("calls: due -> announcement received", b["announce_ms"]),
        ("auto events: due -> claimed (row lateness_ms)", a["lateness_ms"]),
        ("auto events: due -> transition committed (history at)", a["transition_ms"]),
    ):
        rows.append([label, d["n"], d["p50"], d["p99"], d["max"]])
    print_table(
        "Lateness of follow-ups due in the same second (ms)",
        ["path", "n", "p50", "p99", "max"],
        rows,
    )
    print_table(
        "Exactly once",
        ["burst", "due", "fired", "announced / applied", "twice", "strays", "complete"],
        [
            [
                "calls",
                b["n"],
                b["fired"],
                b["announced"],
                b["announced_twice"],
                b["strays"],
                r["burst_complete"],
            ],
            [
                "auto events",
                a["n"],
                a["fired"],
                a["applied"],
                a["applied_twice"],
                "–",
                r["auto_complete"],
            ],
        ],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 pending, a 2,000 burst")
    ap.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--burst", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--auto", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        print(json.dumps(asyncio.run(serve(args.serve, args.burst, args.auto))), flush=True)
        return
    total, burst, auto = SIZES["quick" if args.quick else "full"]
    asyncio.run(parent(total, burst, auto))


if __name__ == "__main__":
    main()
