"""The call log: every call event recorded once, and the ``calls`` row per (call id,
extension) created or updated (``call_rows.py``), in group commits.

The log path of :class:`cti_adapter.pipeline.CtiPipeline`. The unique key on ``call_events``
makes a repeated delivery a no-op. Webhook requests arriving together share one transaction
(one hop to the database's writer thread) instead of queueing for the write lock one by one;
each caller is answered once the transaction holding its events has committed. No aiohttp here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from cti_adapter.call_rows import UNKNOWN, CallRow, CallRows, Found, Key
from cti_adapter.directory import Operator, OperatorDirectory
from cti_adapter.events import CallEvent
from engine.errors import Unavailable
from engine.service import Tierline


@dataclass
class _Batch:
    """One request's events waiting for the next group write."""

    events: list[CallEvent]
    hints: dict[Key, Found]
    operators: dict[str, Operator | None]
    now: datetime
    done: asyncio.Future[list[tuple[CallEvent, CallRow | None]]]


class CallLog:
    def __init__(self, tl: Tierline, directory: OperatorDirectory) -> None:
        self.tl = tl
        self.directory = directory
        self.rows = CallRows(tl)
        self._queued: list[_Batch] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(
        self, events: list[CallEvent], hints: dict[Key, Found]
    ) -> list[tuple[CallEvent, CallRow | None]]:
        """Queue ``events`` for the next group write and wait until it has committed."""
        now = self.tl.clock.now()
        # The directory is async (cached); resolve operators before the write's one hop.
        operators = {ev.extension: await self.directory.by_extension(ev.extension) for ev in events}
        done: asyncio.Future[list[tuple[CallEvent, CallRow | None]]]
        done = asyncio.get_running_loop().create_future()
        self._queued.append(_Batch(events, hints, operators, now, done))
        if self._flusher is None:
            # A task, not this request: a cancelled request must not cancel the others' write.
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def drain(self) -> None:
        """Wait until the writes under way have committed (or failed): at shutdown, after the
        connectors have stopped, so that what was handed to the database is written and its
        connection is back in the pool before the database closes."""
        while (flusher := self._flusher) is not None:
            # ``wait``: the flusher's end, whatever it is; cancelling this leaves it running.
            await asyncio.wait({flusher})

    async def _flush(self) -> None:
        """Write every queued batch in one transaction, again and again until none is left.
        If a group fails, its batches are retried alone, so one request's trouble is not the
        others'."""
        group: list[_Batch] = []
        try:
            while self._queued:
                group, self._queued = self._queued, []
                results: list[Any]
                try:
                    results = await self.tl.db.write(partial(self._write, group=group))
                except Exception as exc:
                    if len(group) == 1:
                        results = [_as_error(exc)]
                    else:
                        results = [await self._write_alone(batch) for batch in group]
                for batch, result in zip(group, results, strict=True):
                    if batch.done.done():
                        continue
                    if isinstance(result, BaseException):
                        batch.done.set_exception(result)
                    else:
                        batch.done.set_result(result)
        finally:
            self._flusher = None
            for batch in (*group, *self._queued):  # only when cancelled (shutdown)
                if not batch.done.done():
                    batch.done.set_exception(Unavailable("the call log is shutting down"))
            self._queued = []

    async def _write_alone(self, batch: _Batch) -> Any:
        try:
            return (await self.tl.db.write(lambda c: self._write(c, [batch])))[0]
        except Exception as exc:
            return _as_error(exc)

    def _write(
        self, conn: Connection, group: list[_Batch]
    ) -> list[list[tuple[CallEvent, CallRow | None]]]:
        self.rows.lock_calls(conn, (ev.call_id for b in group for ev in b.events))
        fresh = self.rows.insert_records(conn, [(ev, b.now) for b in group for ev in b.events])
        out = []
        for b in group:
            mine = []
            for ev in b.events:
                # Two requests with one event: the first in the group records it.
                if ev.dedup_key in fresh:
                    fresh.discard(ev.dedup_key)
                    hint = b.hints.get(ev.dedup_key, UNKNOWN)
                    mine.append((ev, self.rows.apply(conn, ev, b.now, hint, b.operators)))
            out.append(mine)
        return out


def _as_error(exc: Exception) -> Exception:
    if isinstance(exc, DBAPIError):
        # The PBX retries on a 5xx: say "later", not "your event is wrong".
        return Unavailable(f"the call log cannot be written: {exc.orig}")
    return exc
