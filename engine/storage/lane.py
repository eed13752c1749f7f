"""A lane: one worker thread that runs an event loop's blocking calls, one after another.

The hot paths' SQLite work (the screen pop's reads, the call log's writes) runs in lanes
rather than through ``asyncio.to_thread``. Two reasons, both measured
(``bench/pop_latency.py --trace``, webhook pops at 300/s):

- a lane's round trip is a ``SimpleQueue.put`` and a ``call_soon_threadsafe``: ~70 µs of
  CPU for an empty call against ~120 µs through the default executor (a context copy, a
  concurrent future chained to an asyncio one, the pool's semaphore);
- every sqlite3 statement lets go of the GIL and takes it back, several times. With a pool of
  six threads doing that beside the event loop, each pop's thread queued for the GIL again
  and again: the slowest 1 % of pops spent 10–16 ms in the thread for 1.5 ms of their own
  CPU. One reader thread and one writer thread keep the contenders to three: that wait fell
  to 1–3 ms, and the pops' p99 from 17–22 ms to a median of 11.5 ms over eight full runs.
  Two reader threads, the less busy taking each read, brought the GIL waits back (p99 9.4
  against 4.9 ms in back-to-back runs).

A lane runs its calls in the order given, so a slow call delays the ones behind it: give a
lane only short calls (indexed reads, one transaction), and long work its own thread. A lane
made with ``yields_to`` waits before each call while urgent work is in flight (the writer,
for screen pops: ``urgency.py``).

Results go back to the loop through a :class:`_Waker`, one wake-up per burst: waking the loop
(``call_soon_threadsafe``) writes to its self-pipe, and that ``send`` lets go of the GIL,
which the lane thread must then win back from a busy loop before it can take its next call
(at 300 pops/s py-spy found ~20 % of the lane threads' samples there). While a wake-up is on
its way, later results join it instead of sending another: in ``bench/pop_latency.py`` about
7 % of the pops' reads do; the writes, one transaction at a time, never do.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from engine.storage.urgency import Urgency

T = TypeVar("T")

_Result = tuple[asyncio.Future[Any], Any, BaseException | None]


class _Waker:
    """Hands results to one loop: the first of a burst wakes it, the rest join that wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the lane's table of wakers is keyed weakly by loop, and a strong reference
        # here would keep every loop the lane ever served alive.
        self._loop = weakref.ref(loop)
        self.wakeups = 0  # how many times the loop was woken (tests, benchmarks)
        self.results = 0  # how many results it was handed
        self._lock = threading.Lock()
        self._results: list[_Result] = []
        self._scheduled = False

    def settle(self, done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        """From the lane thread: deliver this result on the loop, waking it if need be."""
        with self._lock:
            self._results.append((done, result, error))
            self.results += 1
            if self._scheduled:
                return  # the drain already scheduled takes this one too
            self._scheduled = True
            self.wakeups += 1
        loop = self._loop()
        if loop is None:
            return  # the loop is gone: nobody is waiting any more
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    def _drain(self) -> None:
        # Cleared under the lock together with the swap: a result added after it schedules
        # a drain of its own, so none is left behind.
        with self._lock:
            results, self._results = self._results, []
            self._scheduled = False
        for done, result, error in results:
            _settle(done, result, error)


_Job = tuple[Callable[[], Any], asyncio.Future[Any], _Waker]


class ThreadLane:
    def __init__(self, name: str, *, yields_to: Urgency | None = None) -> None:
        self.name = name
        # Before each call the thread waits while ``yields_to`` has urgent work in flight
        # (urgency.py: the writer steps aside for screen pops).
        self.yields_to = yields_to
        # The running thread and its own queue: a lane stopped and started again never lets
        # the old thread take the new one's calls.
        self._worker: tuple[threading.Thread, queue.SimpleQueue[_Job | None]] | None = None
        self._starting = threading.Lock()
        self._wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the lane's thread; its result or its exception here. Cancelling the
        caller does not stop a call already running (as with ``asyncio.to_thread``); one
        still queued is skipped."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``fn()`` now, from the loop's thread; the future gets its result. Cancel the
        future to skip a call still queued."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._jobs().put((fn, done, self.waker(loop)))
        return done

    def waker(self, loop: asyncio.AbstractEventLoop) -> _Waker:
        """The waker that hands this lane's results to ``loop`` (one per loop)."""
        waker = self._wakers.get(loop)
        if waker is None:
            with self._starting:  # two loops in two threads may share a database
                waker = self._wakers.get(loop)
                if waker is None:
                    waker = self._wakers[loop] = _Waker(loop)
        return waker

    def _jobs(self) -> queue.SimpleQueue[_Job | None]:
        worker = self._worker
        if worker is None:
            with self._starting:
                worker = self._worker
                if worker is None:
                    jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
                    # A daemon: a lane left running (a database never disposed) must not
                    # keep the interpreter from exiting.
                    thread = threading.Thread(
                        target=_work, args=(jobs, self.yields_to), name=self.name, daemon=True
                    )
                    thread.start()
                    worker = self._worker = (thread, jobs)
        return worker[1]

    async def stop(self) -> None:
        """Finish the calls already queued, then end the thread (the next ``run`` starts a
        new one)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        thread, jobs = worker
        jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 30)


def _work(jobs: queue.SimpleQueue[_Job | None], yields_to: Urgency | None) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        fn, done, waker = job
        if yields_to is not None:
            yields_to.wait_until_clear()
        if done.cancelled():  # the caller gave up while the call waited its turn
            continue
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed to the caller, as to_thread does
            result, error = None, exc
        waker.settle(done, result, error)


def _settle(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.done():  # cancelled by its caller; and a batch must not stop at one bad future
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)
