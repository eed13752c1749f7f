"""The wake-up timer: APScheduler (3.x) wakes the dispatcher; the rows hold the truth.

No follow-up is an APScheduler job. One date job is armed for the earliest due row and
re-armed after every run; interval jobs poll as a safety net (rows written by other nodes)
and sweep escalations. ``misfire_grace_time=None`` because late is fine, skipped is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from engine.clock import Clock

log = logging.getLogger("tierline.followups")

Job = Callable[[], Awaitable[object]]


class WakeupTimer:
    def __init__(
        self,
        clock: Clock,
        run_due: Job,
        next_due_at: Callable[[], Awaitable[datetime | None]],
        *,
        poll_seconds: float = 5.0,
        periodic: dict[str, tuple[float, Job]] | None = None,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self._run_due = run_due
        self._next_due_at = next_due_at
        self._poll = poll_seconds
        self._periodic = periodic or {}
        self._armed: datetime | None = None
        self._lock = asyncio.Lock()
        self._running: set[asyncio.Task] = set()  # scheduler jobs under way, for stop()
        self._stopped = False
        self.scheduler = AsyncIOScheduler(
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
        )

    async def start(self) -> None:
        self._stopped = False
        self.scheduler.start()
        self.scheduler.add_job(
            self._tracked(self.tick), "interval", seconds=self._poll, id="followups-poll"
        )
        for name, (seconds, job) in self._periodic.items():
            self.scheduler.add_job(
                self._tracked(_logged(name, job)), "interval", seconds=seconds, id=name
            )
        await self.tick()  # a restart fires everything that came due while we were down

    async def stop(self) -> None:
        """Stop waking, and wait (at most ``stop_grace_s``) for a run under way: the
        database is closed right after, and a dispatch cut off there would only roll back
        and fire again on restart, but noisily."""
        self._stopped = True  # jobs that start from now on return at once
        me = asyncio.current_task()
        running = {t for t in self._running if t is not me and not t.done()}
        if running:
            _, late = await asyncio.wait(running, timeout=self.stop_grace_s)
            if late:
                log.warning("%d timer job(s) still running at stop; not waiting", len(late))
        # Only now: APScheduler's shutdown cancels the jobs still running.
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)  # wait=True would block the loop

    def wake_at(self, when: datetime) -> None:
        """A new follow-up is due at ``when``: make sure we wake no later than that."""
        if self._armed is not None and self._armed <= when:
            return
        self._armed = when
        if not self.scheduler.running:
            return
        run_date = max(when, self.clock.now()) + timedelta(milliseconds=1)
        self.scheduler.add_job(
            self._tracked(self.tick),
            "date",
            run_date=run_date,
            id="followups-wake",
            replace_existing=True,
        )

    async def tick(self) -> None:
        if self._stopped or self._lock.locked():
            return  # stopping, or a run is under way (it loops until nothing due is left)
        async with self._lock:
            try:
                await self._run_due()
                nxt = await self._next_due_at()
            except Exception:
                log.exception("follow-up dispatch failed; the next poll retries")
                return
            self._armed = None
            if nxt is not None:
                self.wake_at(nxt)

    def _tracked(self, job: Job) -> Job:
        """The job as the scheduler runs it: skipped once stopping, else known to stop()."""

        async def run() -> None:
            if self._stopped:
                return
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await job()
            finally:
                self._running.discard(task)

        return run


def _logged(name: str, job: Job) -> Job:
    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("periodic job %s failed; it runs again at its next interval", name)

    return run
