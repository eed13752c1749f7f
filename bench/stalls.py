"""Machine stalls: moments the whole virtual machine stood still, seen by a process that idles.

A process that only sleeps a millisecond at a time wakes a few microseconds late on a working
machine; one that wakes 5 ms late was not run because nothing on the virtual machine was:
the hypervisor gave the CPU to another guest (the "steal" of ``/proc/stat``, which is an
average and hides a single 30 ms burst), or the host stalled. The idea is Gil Tene's
jHiccup. The meter runs with a real-time priority where the system grants one (root on
Linux), so the bench's own processes, which run at normal priority, cannot delay it: a stall
it sees is the machine's, not our code's.

``bench/pop_latency.py`` counts the stalls in each phase and asks which of its slowest pops
were in flight during one, so a missed aim can be told apart from a stolen minute.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

TICK_S = 0.001  # the sleep
STALL_S = 0.005  # a wake-up this late is a stall


@dataclass(frozen=True, slots=True)
class Stall:
    start: float  # time.perf_counter() when the sleep should have ended (one clock for all)
    seconds: float  # how late the wake-up was

    @property
    def end(self) -> float:
        return self.start + self.seconds


def _watch(conn: Connection, stop: Event) -> None:
    priority = "normal"
    try:  # FIFO 1: above every normal process, below the kernel's own threads
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        priority = "real-time"
    except (AttributeError, PermissionError, OSError):
        # Unprivileged: the report names the priority it got, since at normal priority a
        # stall may be our own processes keeping both cores busy.
        with contextlib.suppress(OSError):
            os.nice(-20)
            priority = "nice -20"
    stalls: list[tuple[float, float]] = []
    while not stop.is_set():
        due = time.perf_counter() + TICK_S
        time.sleep(TICK_S)
        late = time.perf_counter() - due
        if late >= STALL_S:
            stalls.append((due, late))
    conn.send((priority, stalls))


class StallMeter:
    """``start()`` before the phases, ``stop()`` after: the stalls seen in between."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._receiver, sender = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_watch, args=(sender, self._stop), daemon=True)
        self.priority = ""
        self.stalls: list[Stall] = []

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> list[Stall]:
        self._stop.set()
        self.priority, raw = self._receiver.recv()
        self._proc.join()
        self.stalls = [Stall(start, seconds) for start, seconds in raw]
        return self.stalls

    def within(self, window: tuple[float, float]) -> list[Stall]:
        t0, t1 = window
        return [s for s in self.stalls if s.end > t0 and s.start < t1]


def in_flight(stalls: list[Stall], sent: float, received: float) -> bool:
    """Whether a pop between ``sent`` and ``received`` overlapped one of ``stalls``."""
    return any(s.start < received and s.end > sent for s in stalls)
