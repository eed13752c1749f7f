"""kill -9 in the middle of dispatching: after restarts, every follow-up fired exactly once.

A real worker process (crash_worker.py) dispatches on the test database; the test kills it
with SIGKILL several times while it is part-way through, starts a fresh one each time, and
then checks the rows: no automatic event applied twice, none lost, no call announced twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, update
from sqlmodel import col, select

from engine.clients import NewClient, create_client
from engine.models import FollowUp, FollowUpStatus, TransitionRecord
from engine.service import Tierline

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("crash_worker.py")
N_AUTO = 300  # not_interested clients whose recycling is due
N_CALLS = 100  # new leads whose call is due (announce only)
STEP = 70  # kill a worker once it has applied this many more automatic events
WAIT_S = 60.0


async def seed(tl: Tierline) -> tuple[list[int], list[int]]:
    number = iter(range(1_000_000))

    async def add(n: int, state: str | None) -> None:
        async with tl.db.transaction() as s:
            for _ in range(n):
                await create_client(
                    s,
                    tl.runtime,
                    NewClient(name="Crash test", phones=[f"+7916{next(number):07d}"]),
                    region="RU",
                    now=tl.clock.now(),
                    state=state,
                )

    for _ in range(N_AUTO // 100):
        await add(100, "not_interested")
    await add(N_CALLS, None)
    # Due a minute ago by the real clock the worker uses.
    async with tl.db.transaction() as s:
        await s.exec(
            update(FollowUp)  # type: ignore[call-overload]
            .where(col(FollowUp.status) == FollowUpStatus.PENDING)
            .values(due_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    async with tl.db.session() as s:
        rows = (await s.exec(select(FollowUp.id, FollowUp.auto_event))).all()
    auto = [fid for fid, event in rows if event == "recycle"]
    calls = [fid for fid, event in rows if event is None]
    assert (len(auto), len(calls)) == (N_AUTO, N_CALLS)
    return auto, calls


async def progress(tl: Tierline, auto: list[int], calls: list[int]) -> tuple[int, int]:
    """(automatic follow-ups done, call follow-ups fired) among the seeded ones."""
    async with tl.db.session() as s:
        done = (
            await s.exec(
                select(func.count()).where(
                    col(FollowUp.id).in_(auto), col(FollowUp.status) == FollowUpStatus.DONE
                )
            )
        ).one()
        fired = (
            await s.exec(
                select(func.count()).where(
                    col(FollowUp.id).in_(calls), col(FollowUp.fired_at).is_not(None)
                )
            )
        ).one()
    return done, fired


async def start_worker(url: str, log: Path, stderr: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERLINE_")}
    env["PYTHONPATH"] = str(REPO)
    with stderr.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            url,
            str(log),
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )


def worker_errors(path: Path) -> str:
    return path.read_text()[-4000:]


async def wait_for(tl, auto, calls, proc, stderr: Path, done_at_least: int, *, all_calls: bool):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        done, fired = await progress(tl, auto, calls)
        if done >= done_at_least and (not all_calls or fired == len(calls)):
            return done, fired
        if proc.returncode is not None:
            pytest.fail(
                f"the worker exited by itself ({proc.returncode}):\n{worker_errors(stderr)}"
            )
        if loop.time() > deadline:
            proc.kill()
            pytest.fail(
                f"no progress in {WAIT_S}s (done {done}, fired {fired}):\n{worker_errors(stderr)}"
            )
        await asyncio.sleep(0.02)


async def test_kill_9_mid_dispatch_fires_every_follow_up_exactly_once(tl, tmp_path):
    auto, calls = await seed(tl)
    log, stderr = tmp_path / "announced.txt", tmp_path / "worker.err"
    log.touch()
    kills = 0
    killed_at: list[int] = []
    while True:
        done, _ = await progress(tl, auto, calls)
        proc = await start_worker(tl.db.url, log, stderr)
        try:
            if N_AUTO - done > STEP + 20:
                await wait_for(tl, auto, calls, proc, stderr, done + STEP, all_calls=False)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                assert proc.returncode == -signal.SIGKILL
                kills += 1
                after, _ = await progress(tl, auto, calls)
                assert after < N_AUTO, "the worker finished before it could be killed mid-way"
                killed_at.append(after)
                continue
            await wait_for(tl, auto, calls, proc, stderr, N_AUTO, all_calls=True)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        break
    assert kills >= 3, killed_at

    async with tl.db.session() as s:
        auto_rows = (await s.exec(select(FollowUp).where(col(FollowUp.id).in_(auto)))).all()
        call_rows = (await s.exec(select(FollowUp).where(col(FollowUp.id).in_(calls)))).all()
        recycles = Counter(
            (
                await s.exec(
                    select(TransitionRecord.client_id).where(TransitionRecord.event == "recycle")
                )
            ).all()
        )
    # Every automatic follow-up: done, and its event applied exactly once.
    assert all(r.status == FollowUpStatus.DONE and r.fired_at is not None for r in auto_rows)
    assert sorted(recycles) == sorted(r.client_id for r in auto_rows)
    assert set(recycles.values()) == {1}, {c: n for c, n in recycles.items() if n != 1}
    # Every call: stamped fired (it stays owed until an operator calls).
    assert all(r.fired_at is not None and r.lateness_ms is not None for r in call_rows)
    assert all(r.status == FollowUpStatus.PENDING for r in call_rows)
    # Announcements: none twice. A kill between a commit and its announcements may lose
    # those of one batch at most (the queue is a query, so nothing is hidden by it).
    announced = Counter(int(line) for line in log.read_text().split())
    assert [fid for fid, n in announced.items() if n > 1] == []
    lost = set(calls) - set(announced)
    assert len(lost) <= kills * 5, (len(lost), kills)
    assert await tl.check_followups() == []
