"""CPU per screen-pop event in the pipeline alone: no HTTP, no sockets, no second process.

    python bench/pop_cpu.py [--events N]

Tierline on SQLite with 100,000 clients and 1,000 operators (bench/pop_latency.py's data),
the operator directory warm. Three loops, one event at a time: ``handle`` (the pop and the
call log, as the webhook does), the pop alone (lookup, card, publish) and the call log alone.
Prints CPU µs per event (the process's, worker threads included) and events/s. Run-to-run
spread is small next to latency benchmarks: a ratio between two commits is meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pop_latency import CLIENTS, OPERATORS, number_of, populate

from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.pipeline import CtiPipeline
from engine.bus import LocalBus
from engine.service import Tierline
from engine.settings import Settings


def ringing(i: int) -> CallEvent:
    return CallEvent(
        event=CallEventType.RINGING,
        call_id=f"cpu{i}",
        direction=Direction.INBOUND,
        from_number=number_of(random.randint(1, CLIENTS)),
        to_number="7000",
        extension=str(1000 + i % OPERATORS),
        at=datetime.now(UTC),
    )


async def run(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), default_region="RU", timezone="Europe/Moscow")
        tl = Tierline.build(settings, bus=LocalBus())
        await tl.start(timers=False)
        await populate(tl, OPERATORS)
        pipeline = CtiPipeline(tl)
        for i in range(OPERATORS):  # every extension once: the directory is warm
            await pipeline.handle([ringing(i)])

        async def handle(ev: CallEvent) -> None:
            await pipeline.handle([ev])

        async def pop(ev: CallEvent) -> None:
            await pipeline.pop(ev)

        async def log(ev: CallEvent) -> None:
            pipeline.pop_before_commit = False
            await pipeline.call_log.record([ev], {})
            pipeline.pop_before_commit = True

        print(f"{'loop':24} {'CPU µs/event':>13} {'events/s':>9}")
        for n, (name, step) in enumerate(
            (("handle (pop + call log)", handle), ("pop alone", pop), ("call log alone", log))
        ):
            base = 100_000 * (n + 1)
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(events):
                await step(ringing(base + i))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"{name:24} {cpu / events * 1e6:13.0f} {events / wall:9.0f}")
        await tl.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    asyncio.run(run(parser.parse_args().events))


if __name__ == "__main__":
    main()
