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
lane only short calls (indexed reads, one transaction), and long work its own thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class ThreadLane:
    def __init__(self, name: str) -> None:
        self.name = name
        # The running thread and its own queue: a lane stopped and started again never lets
        # the old thread take the new one's calls.
        self._worker: tuple[threading.Thread, queue.SimpleQueue[_Job | None]] | None = None
        self._starting = threading.Lock()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the lane's thread; its result or its exception here. Cancelling the
        caller does not stop a call already running (as with ``asyncio.to_thread``); one
        still queued is skipped."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._jobs().put((fn, done, loop))
        return await done

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
                        target=_work, args=(jobs,), name=self.name, daemon=True
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


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        fn, done, loop = job
        if done.cancelled():  # the caller gave up while the call waited its turn
            continue
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed to the caller, as to_thread does
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(_settle, done, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


def _settle(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)
