"""Keeping a serving process's long-lived heap out of the garbage collector's way.

A full collection walks every tracked object alive: with 1,000 operator sockets open that
is ~35,000 objects of socket state beside the application's own, 38–87 ms with the event
loop held, two or three times in a three-minute run at 300 call events/s — the slowest pops
of ``bench/pop_latency.py`` were the ones waiting behind it.

``gc.freeze()`` moves every object alive into a permanent generation that collections skip.
A frozen object is still freed by reference counting the moment nothing refers to it; only
one that dies inside a reference cycle stays until ``gc.unfreeze()``. So the keeper freezes
only what a collection has just found alive, and sweeps now and then:

- at start-up: a full collection, then a freeze (modules, definitions, caches: a few
  hundred thousand objects; before this a bare websocket push at 300/s had p99 115 ms);
- after any full collection that left at least ``freeze_above`` objects in the oldest
  generation: a freeze, from the collector's own callback, so nothing born since is caught.
  The next full collections walk only what came after, and stay short;
- and that collection is not left to chance: CPython starts a full one when enough objects
  have aged, that is under load — mid-afternoon, behind a pop. Every ``check_every`` seconds (10)
  the keeper looks at the oldest generation, and once ``freeze_above`` objects wait there
  (the sockets of a morning's sign-ins, say) it collects then, before the calls come;
- every ``sweep_every`` seconds: unfreeze, a full collection, freeze. This reclaims what
  died in a cycle while frozen (asyncio keeps each TCP transport in a cycle of its own, so a
  closed socket's transport is one), at the cost of one full pause per period instead of
  one every minute or so under load.

Both pauses hold the event loop (a sweep ~110 ms idle, ~170 ms with 1,000 sockets open), so
they wait for a quiet moment: no message sent to an operator (a pop, a call state) for
``quiet_for`` seconds, as ``last_activity`` tells (``keep_heap`` reads the websocket hub's).
A sweep deferred for ``most_deferred`` seconds runs anyway — a department that is never
quiet for two seconds still gets its memory back, once in a while, behind one pop.

The sockets break their own cycles when they close (``web/live_socket.py``), so a closed
socket's memory does not wait for the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from engine.settings import Settings
from web.ws import HUB

log = logging.getLogger("tierline.heap")

CHECK_EVERY = 10.0  # seconds between two looks at the oldest generation
QUIET_FOR = 2.0  # seconds without a message to an operator before the loop may be held
MOST_DEFERRED = 900.0  # seconds a due sweep waits for a quiet moment, at most


@dataclass(frozen=True, slots=True)
class Sweep:
    freed: int  # objects the collection freed (cycles that had died, frozen or not)
    frozen: int  # objects in the permanent generation afterwards
    ms: float  # how long the loop was held


class HeapKeeper:
    """Installs a collector callback; ``run`` looks at the heap and sweeps it on a period.
    One per process: the collector and its permanent generation are the process's."""

    def __init__(
        self,
        *,
        freeze_above: int = 5_000,
        sweep_every: float = 3600.0,
        check_every: float = CHECK_EVERY,
        quiet_for: float = QUIET_FOR,
        most_deferred: float = MOST_DEFERRED,
        last_activity: Callable[[], float] | None = None,
    ) -> None:
        self.freeze_above = freeze_above  # 0: no freeze after collections
        self.sweep_every = sweep_every  # 0: no periodic sweep
        self.check_every = check_every
        self.quiet_for = quiet_for
        self.most_deferred = most_deferred
        # time.monotonic() of the last message to an operator; None: always quiet
        self.last_activity = last_activity
        self.freezes = 0  # freezes after a full collection (the collector's or the look's)
        self.sweeps = 0
        self.checks_collected = 0  # full collections started by ``run``'s look
        self.deferred = 0  # looks that found work due but the operators busy
        self.forced = 0  # sweeps run busy, after waiting ``most_deferred`` for quiet
        self.last_sweep: Sweep | None = None
        self._sweeping = False

    @classmethod
    def from_settings(cls, settings: Settings) -> HeapKeeper:
        return cls(freeze_above=settings.heap_freeze_above, sweep_every=settings.heap_sweep_seconds)

    def install(self) -> None:
        if self.freeze_above:
            gc.callbacks.append(self._after_collection)

    def uninstall(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._after_collection)
        gc.unfreeze()  # the objects go back to the oldest generation, to be collected again

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs in whichever thread's allocation set the collection off, holding the GIL,
        # right after the collection: everything still in the generations is alive.
        if phase != "stop" or info["generation"] != 2 or self._sweeping:
            return
        if len(gc.get_objects(generation=2)) >= self.freeze_above:
            gc.freeze()
            self.freezes += 1

    def sweep(self) -> Sweep:
        """Unfreeze, collect everything, freeze the survivors."""
        started = time.perf_counter()
        self._sweeping = True
        try:
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
        finally:
            self._sweeping = False
        self.sweeps += 1
        self.last_sweep = Sweep(freed, gc.get_freeze_count(), (time.perf_counter() - started) * 1e3)
        return self.last_sweep

    def quiet(self, now: float) -> bool:
        """No message to an operator for ``quiet_for`` seconds: holding the loop delays
        nobody's pop."""
        return self.last_activity is None or now - self.last_activity() >= self.quiet_for

    async def run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_every
        while True:
            await asyncio.sleep(self.check_every)
            now = time.monotonic()
            quiet = self.quiet(now)
            if self.sweep_every and now >= next_sweep:
                if not quiet and now < next_sweep + self.most_deferred:
                    self.deferred += 1
                    continue
                done = self.sweep()
                next_sweep = time.monotonic() + self.sweep_every
                self.forced += not quiet
                log.info(
                    "heap sweep%s: %d objects freed, %d frozen, loop held %.0f ms",
                    "" if quiet else f" (no quiet moment in {self.most_deferred:.0f} s)",
                    done.freed,
                    done.frozen,
                    done.ms,
                )
            elif self.freeze_above and len(gc.get_objects(generation=2)) >= self.freeze_above:
                if not quiet:  # CPython may collect first; then its callback freezes
                    self.deferred += 1
                    continue
                gc.collect()  # the callback freezes what it finds alive, if it is that many
                self.checks_collected += 1


def keep_heap(app: web.Application, keeper: HeapKeeper) -> None:
    """For a serving process (``tierline serve``, the benchmarks' servers; not the tests,
    which build many apps in one process): the keeper starts as the last start-up step,
    once everything start-up builds is alive, and stops with the app. With a websocket hub
    in the app, its pauses wait for the operators' quiet moments."""
    task: asyncio.Task[None] | None = None

    async def start(app: web.Application) -> None:
        nonlocal task
        if HUB in app and keeper.last_activity is None:
            hub = app[HUB]
            keeper.last_activity = lambda: hub.last_sent
        keeper.sweep()
        keeper.install()
        if keeper.sweep_every or keeper.freeze_above:
            task = asyncio.get_running_loop().create_task(keeper.run(), name="heap-keeper")

    async def stop(app: web.Application) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        keeper.uninstall()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
