"""Urgent work, and the lanes that step aside for it while it runs.

A screen pop is the one thing an operator waits for: its read runs in the reader lane, its
push on the event loop. Under the GIL every other thread doing Python work slows both, and
the call log's writer thread is the busiest: each of its sqlite3 statements lets go of the
GIL and takes it back, and each time it takes it back the pop's reader or the loop waits
(``engine/card.py`` gives the measured cost of one such round trip). So while a pop is in
flight, from its read to its push, the writer lane starts no new call; a transaction already
running finishes. A call waits at most ``max_wait``, so a stream of pops never starves the
call log (its group commit then takes what queued meanwhile in one transaction), and the
PBX's ``202`` is late by that much at worst.

Measured (``bench/pop_latency.py --only "webhook calls 300" --only "bare push 300/s"
--rounds 2 --trace``, two runs each way, alternating): pop p99 5.8 and 6.3 ms yielding
against 9.6 and 8.0 ms not; the slowest 1 % of pops spent 1.2 ms in the reader thread
against 1.8–2.2 ms, and 0.6–0.8 ms getting back on the loop against 1.1–1.4 ms. Of ~19,000
writes 4 % waited, and 3–6 the whole 10 ms (full runs of every webhook phase: 7–13 % and
4–67 of ~33,000).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MAX_WAIT_S = 0.010


class Urgency:
    """Counts urgent work in flight; :meth:`wait_until_clear` holds a lane's next call."""

    def __init__(self, max_wait: float = MAX_WAIT_S) -> None:
        self.max_wait = max_wait
        self.yields = 0  # lane calls that waited for urgent work (benchmarks, tests)
        self.overruns = 0  # of those, the ones that went ahead after max_wait
        self._in_flight = 0
        self._clear = threading.Condition(threading.Lock())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Around urgent work, on the event loop (it may span awaits): yielding lanes start
        no new call until every such section has ended."""
        release = self.hold()
        try:
            yield
        finally:
            release()

    def hold(self) -> Callable[..., None]:
        """Urgent work begins; it ends when the returned function is first called (with any
        arguments: it serves as a task's done callback too)."""
        with self._clear:
            self._in_flight += 1
        held = True

        def release(*_: object) -> None:
            nonlocal held
            with self._clear:
                if not held:
                    return
                held = False
                self._in_flight -= 1
                if not self._in_flight:
                    self._clear.notify_all()

        return release

    def wait_until_clear(self) -> None:
        """In a lane's thread, before each call: wait while urgent work is in flight, at
        most ``max_wait``."""
        if not self._in_flight:  # the usual case: no lock taken
            return
        with self._clear:
            if not self._in_flight:
                return
            self.yields += 1
            if not self._clear.wait_for(lambda: not self._in_flight, self.max_wait):
                self.overruns += 1
