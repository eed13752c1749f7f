"""A Tierline node that only dispatches follow-ups, slowly, so a test can kill -9 it mid-way.

    python tests/integration/crash_worker.py DB_URL [ANNOUNCEMENT_LOG]

It builds the engine on DB_URL (SQLite file or PostgreSQL) with the real clock and runs
``dispatcher.run_due()`` in a loop until it is killed. Every follow-up announcement it
publishes is appended to ANNOUNCEMENT_LOG (one follow-up id a line, written straight to
the file) so the test can see whether anything was announced twice across restarts.

Each automatic event is slowed by a few milliseconds, inside its claiming transaction, so
a SIGKILL lands between a claim and its commit as often as between two batches.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.bus import LocalBus
from engine.clock import SystemClock
from engine.service import Tierline
from engine.settings import Settings

BATCH = 5
STEP_DELAY_S = 0.005
IDLE_S = 0.05


async def run(url: str, log_path: str | None) -> None:
    settings = Settings(
        data_dir=Path(tempfile.gettempdir()),
        database_url=url,
        default_region="RU",
        timezone="Europe/Moscow",
        followup_batch=BATCH,
    )
    tl = Tierline.build(settings, clock=SystemClock(), bus=LocalBus())
    await tl.start(timers=False)

    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def record(channel: str, message: dict) -> None:
            if channel == "followups" and message.get("type") == "follow_up_due":
                # One write(2) per line: a SIGKILL cannot leave half a line or a buffer.
                os.write(fd, f"{message['followup_id']}\n".encode())

        tl.bus.subscribe(record)

    apply_many_in = tl.runtime.apply_many_in

    async def slow_apply_many_in(session, reqs):  # type: ignore[no-untyped-def]
        # Inside the claiming transaction: a kill here lands between claim and commit.
        await asyncio.sleep(STEP_DELAY_S * len(reqs))
        return await apply_many_in(session, reqs)

    tl.runtime.apply_many_in = slow_apply_many_in  # type: ignore[method-assign]
    print("ready", flush=True)
    while True:
        await tl.dispatcher.run_due()
        await asyncio.sleep(IDLE_S)


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    asyncio.run(run(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
