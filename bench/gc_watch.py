"""What the garbage collector costs a serving process during a benchmark: each collection's
pause by generation, and which objects a full collection has to walk (the heap frozen at
start-up aside)."""

from __future__ import annotations

import gc
import time
from collections import Counter


class GcWatch:
    """``census=True`` turns the collector off for the run instead, then reports which
    types of cyclic garbage the run left behind: the objects only a collection can free,
    whose allocation is what makes collections come."""

    def __init__(self, census: bool = False) -> None:
        # (generation, wall ms, CPU ms of the collecting thread, objects freed)
        self.pauses: list[tuple[int, float, float, int]] = []
        self.census = census
        self._started = self._started_cpu = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._on_gc)
        if self.census:
            gc.disable()
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        if self.census:
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            gc.set_debug(0)
            kinds = Counter(type(o).__qualname__ for o in gc.garbage)
            print(
                f"cyclic garbage left by the run: {len(gc.garbage):,} objects; most: "
                + ", ".join(f"{name} {n:,}" for name, n in kinds.most_common(12))
            )
            gc.garbage.clear()
            gc.enable()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started, self._started_cpu = time.perf_counter(), time.thread_time()
        else:
            ms = (time.perf_counter() - self._started) * 1e3
            cpu = (time.thread_time() - self._started_cpu) * 1e3
            self.pauses.append((info["generation"], ms, cpu, info["collected"]))

    def report(self) -> None:
        for gen in (0, 1, 2):
            times = sorted(ms for g, ms, _, _ in self.pauses if g == gen)
            cpus = sorted(cpu for g, _, cpu, _ in self.pauses if g == gen)
            freed = sum(n for g, _, _, n in self.pauses if g == gen)
            if times:
                print(
                    f"gc generation {gen}: {len(times)} collections, "
                    f"median {times[len(times) // 2]:.2f} ms, max {times[-1]:.1f} ms "
                    f"(CPU median {cpus[len(cpus) // 2]:.2f}, max {cpus[-1]:.1f}), "
                    f"{freed:,} objects freed"
                )
        started = time.perf_counter()
        gc.collect()
        print(f"a full collection at rest: {(time.perf_counter() - started) * 1e3:.1f} ms")
        walked = gc.get_objects()
        census = Counter(type(o).__name__ for o in walked)
        print(
            f"objects a full collection walks: {sum(census.values()):,}; most: "
            + ", ".join(f"{name} {n:,}" for name, n in census.most_common(6))
        )
        # A container is traversed item by item: one long list costs what many objects do.
        sizes = sorted(
            ((len(o), type(o).__name__) for o in walked if isinstance(o, list | dict | set)),
            reverse=True,
        )[:5]
        print("largest containers walked: " + ", ".join(f"{k} {n:,}" for n, k in sizes))
