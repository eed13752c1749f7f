"""What the garbage collector costs a serving process during a benchmark: each collection's
pause by generation, and which objects a full collection has to walk (the heap frozen at
start-up aside)."""

from __future__ import annotations

import gc
import time
from collections import Counter


class GcWatch:
    def __init__(self) -> None:
        self.pauses: list[tuple[int, float, int]] = []  # (generation, ms, objects freed)
        self._started = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            ms = (time.perf_counter() - self._started) * 1e3
            self.pauses.append((info["generation"], ms, info["collected"]))

    def report(self) -> None:
        for gen in (0, 1, 2):
            times = sorted(ms for g, ms, _ in self.pauses if g == gen)
            freed = sum(n for g, _, n in self.pauses if g == gen)
            if times:
                print(
                    f"gc generation {gen}: {len(times)} collections, "
                    f"median {times[len(times) // 2]:.2f} ms, max {times[-1]:.1f} ms, "
                    f"{freed:,} objects freed"
                )
        census = Counter(type(o).__name__ for o in gc.get_objects())
        print(
            f"objects a full collection walks: {sum(census.values()):,}; most: "
            + ", ".join(f"{name} {n:,}" for name, n in census.most_common(6))
        )
