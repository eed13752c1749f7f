"""Where a webhook pop's time goes: stamps along the server's path, joined with the
driver's send and receive times (``time.perf_counter`` is one clock for every process on
Linux), averaged over the median pops and over the slowest 1 %.

Benchmark-only instrumentation: it wraps the pipeline's functions in this process, so the
server runs the code it always runs, plus a few dictionary writes per pop.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

import cti_adapter.pop_path as pop_path_module
from cti_adapter.call_rows import POPPING
from cti_adapter.pipeline import CtiPipeline
from cti_adapter.pop_path import PopPath
from engine.bus import LocalBus

# (label, stamp) in path order: each segment is the time from the previous stamp to this one.
STAGES = (
    ("sent", "driver: request sent"),
    ("arrived", "to the handler (HTTP, server loop)"),
    ("started", "body read, signed, parsed"),
    ("queued", "to its read queued"),
    ("thread", "to the reader thread (its queue, the GIL)"),
    ("built", "lookup and card in the thread"),
    ("published", "back on the loop"),
    ("written", "hub: frame written"),
    ("received", "to the driver's socket reader"),
)

_arrived: contextvars.ContextVar[float] = contextvars.ContextVar("arrived", default=0.0)


# The bare push's path, for comparison: the same first and last segments, nothing between.
BARE_STAGES = (
    ("sent", "driver: request sent"),
    ("arrived", "to the handler (HTTP, server loop)"),
    ("written", "body parsed, frame written"),
    ("received", "to the driver's socket reader"),
)


class PopTrace:
    def __init__(self) -> None:
        self.stamps: dict[str, dict[str, float]] = defaultdict(dict)

    def bare(self, call_id: str) -> None:
        """The bench's bare push handler, once its frame is written."""
        self.stamps[call_id].update(arrived=_arrived.get(), written=time.perf_counter())

    def install(self, app: web.Application) -> None:
        stamps = self.stamps

        @web.middleware
        async def arrival(request: web.Request, handler: Any) -> web.StreamResponse:
            _arrived.set(time.perf_counter())
            return await handler(request)

        app.middlewares.insert(0, arrival)

        start, hop = CtiPipeline.start, PopPath._hop

        def traced_start(self: CtiPipeline, events: Any) -> Any:
            now = time.perf_counter()
            for ev in events:
                if ev.event in POPPING:  # a call's later events must not move its pop's stamps
                    stamps[ev.call_id].update(arrived=_arrived.get() or now, started=now)
            return start(self, events)

        def traced_hop(self: PopPath, wanted: Any) -> Any:
            now = time.perf_counter()
            for ev, _ in wanted:
                stamps[ev.call_id]["queued"] = now
            return hop(self, wanted)

        CtiPipeline.start = traced_start  # type: ignore[method-assign]
        PopPath._hop = traced_hop  # type: ignore[method-assign]

        lookup, card = pop_path_module.lookup_sync, pop_path_module.screen_pop_sync
        local = threading.local()  # one pop's lookup, then its card, in one worker thread

        @functools.wraps(lookup)
        def traced_lookup(*args: Any, **kwargs: Any) -> Any:
            local.began, local.cpu = time.perf_counter(), time.thread_time()
            return lookup(*args, **kwargs)

        @functools.wraps(card)
        def traced_card(conn: Any, cache: Any, user: Any, call_id: str, *a: Any, **k: Any) -> Any:
            began = local.began
            out = card(conn, cache, user, call_id, *a, **k)
            cpu = time.thread_time() - local.cpu
            stamps[call_id].update(thread=began, built=time.perf_counter(), cpu=cpu)
            return out

        pop_path_module.lookup_sync = traced_lookup
        pop_path_module.screen_pop_sync = traced_card

        publish = LocalBus.publish

        async def traced_publish(self: LocalBus, channel: str, message: dict[str, Any]) -> None:
            # A screen pop's envelope (cti_adapter.pops.addressed) names its call as "pop".
            call_id = message.get("pop")
            mine = stamps.get(call_id) if call_id else None
            if mine is not None and "published" not in mine:
                mine["published"] = time.perf_counter()
            await publish(self, channel, message)
            if mine is not None and "written" not in mine:
                mine["written"] = time.perf_counter()

        LocalBus.publish = traced_publish  # type: ignore[method-assign]

    def report(self, name: str, driver: list[tuple[str, float, float]]) -> None:
        """``driver``: (call id, sent, received) for each pop the phase timed."""
        stages = BARE_STAGES if name.startswith("bare") else STAGES
        rows = []
        for call_id, sent, received in driver:
            mine = self.stamps.get(call_id, {})
            stamp = {**mine, "sent": sent, "received": received}
            if all(key in stamp for key, _ in stages):
                rows.append([stamp[key] for key, _ in stages] + [stamp.get("cpu", 0.0)])
        if len(rows) < 20:
            # Say so: a change to the path the stamps follow once left --trace printing nothing.
            print(f"\n{name}: only {len(rows)} of {len(driver)} pops traced end to end; no report")
            return
        last = len(stages) - 1  # the driver's receive stamp; the thread's CPU comes after it
        rows.sort(key=lambda r: r[last] - r[0])
        slow = rows[-max(1, len(rows) // 100) :]
        middle = rows[len(rows) * 45 // 100 : len(rows) * 55 // 100]

        def line(label: str, value: Any) -> None:
            mid, tail = (sum(value(r) for r in rs) / len(rs) * 1e3 for rs in (middle, slow))
            print(f"  {label:44} {mid:7.2f} {tail:8.2f}")

        print(f"\n{name}: where the time goes, ms (mean of the median 10 % · of the slowest 1 %)")
        for n, (_, label) in enumerate(stages[1:], start=1):
            line(label, lambda r, n=n: r[n] - r[n - 1])
            if label.startswith("lookup"):  # the rest of it the thread waited: GIL, disk
                line("  of which its own CPU", lambda r: r[-1])
        line("total", lambda r: r[last] - r[0])
