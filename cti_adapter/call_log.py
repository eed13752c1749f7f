"""The call log: every call event recorded once, and the ``calls`` row per (call id,
extension) created or updated, in group commits.

The log path of :class:`cti_adapter.pipeline.CtiPipeline`. The unique key on ``call_events``
makes a repeated delivery a no-op. Webhook requests arriving together share one transaction
(one hop to the database's writer thread) instead of queueing for the write lock one by one;
each caller is answered once the transaction holding its events has committed. No aiohttp here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import partial
from types import SimpleNamespace
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

from cti_adapter.directory import Operator, OperatorDirectory
from cti_adapter.events import CallEvent, CallEventType
from cti_adapter.pops import try_normalize
from engine.clients import match_rows_sync
from engine.errors import Unavailable
from engine.models import LONG_CALL_SECONDS, TAKEN_ELSEWHERE, Call, CallEventRecord
from engine.service import Tierline
from engine.storage.hot import HotQuery

POPPING = (CallEventType.RINGING, CallEventType.DIALING)
_RECORD_KEYS = (
    "pbx_call_id", "event", "extension", "direction", "from_number", "to_number", "at",
    "received_at",
)  # fmt: skip
_CALL_KEYS = (
    "pbx_call_id", "extension", "direction", "operator_id", "client_id", "number", "status",
    "started_at", "long_call", "checklist", "notes",
)  # fmt: skip

Key = tuple[str, str, str]
# A ``calls`` row as plain attributes (the columns of Call), updated in place by the log path.
CallRow = SimpleNamespace
# What the pop path learnt of a call's number: the one client it matched (or None) and the
# number's E.164 (or None), so the log path neither parses nor searches it again.
Hint = tuple[int | None, str | None]


class _NotLookedUp(Enum):
    UNKNOWN = "unknown"


# "The pop path did not look this number up": the call log looks it up itself.
UNKNOWN = _NotLookedUp.UNKNOWN
# What the pop path hands the log path for one event.
Found = Hint | Literal[_NotLookedUp.UNKNOWN]


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
        self._inserts: tuple[HotQuery, ...] | None = None
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
        fresh = self._insert_records(conn, [(ev, b.now) for b in group for ev in b.events])
        out = []
        for b in group:
            mine = []
            for ev in b.events:
                # Two requests with one event: the first in the group records it.
                if ev.dedup_key in fresh:
                    fresh.discard(ev.dedup_key)
                    hint = b.hints.get(ev.dedup_key, UNKNOWN)
                    mine.append((ev, self._apply(conn, ev, b.now, hint, b.operators)))
            out.append(mine)
        return out

    def _insert_records(
        self, conn: Connection, events: list[tuple[CallEvent, datetime]]
    ) -> set[Key]:
        if not events:
            return set()
        rows = [
            {
                "pbx_call_id": ev.call_id,
                "event": ev.event.value,
                "extension": ev.extension,
                "direction": ev.direction.value,
                "from_number": ev.from_number,
                "to_number": ev.to_number,
                "at": ev.at,
                "received_at": now,
            }
            for ev, now in events
        ]
        stmt = self._statements()[0]
        if conn.dialect.driver != "pysqlite":
            # One INSERT ... RETURNING for the batch (SQLAlchemy's insertmanyvalues).
            result = conn.execute(stmt.stmt, rows)
            return {(r[0], r[1], r[2]) for r in result}
        # SQLite: one raw statement per event (~15 µs each), no execution context per batch,
        # and no RETURNING: the count of rows it inserted says the same in one sqlite3 step
        # instead of two (each step a round trip for the GIL: engine/card.py says why).
        return {
            cast(Key, (row["pbx_call_id"], row["event"], row["extension"]))
            for row in rows
            if stmt.execute(conn, row)
        }

    def _apply(
        self,
        conn: Connection,
        ev: CallEvent,
        now: datetime,
        hint: Found,
        operators: dict[str, Operator | None],
    ) -> CallRow | None:
        at = ev.at or now
        if ev.event in POPPING:
            # One statement: a row written by click-to-dial (or a repeat) stays as it is.
            self._create_call(conn, ev, at, hint, operators.get(ev.extension))
            return None
        call = self._call_row(conn, ev)
        if call is None:  # the ringing never reached us
            self._create_call(conn, ev, at, hint, operators.get(ev.extension))
            call = self._call_row(conn, ev)
            assert call is not None
        before = (call.answered_at, call.status, call.ended_at)
        if ev.event is CallEventType.ANSWERED:
            if call.answered_at is None:
                call.answered_at = at
            if call.status == "ringing":
                call.status = "answered"
        elif ev.event is CallEventType.HANGUP and call.ended_at is None:
            call.ended_at = at
            call.status = "ended"
            talk = (at - call.answered_at).total_seconds() if call.answered_at else 0
            call.duration_s = max(0, int(talk))
            call.long_call = call.duration_s >= LONG_CALL_SECONDS
            said = ev.extra.get("reason") == "answered_elsewhere"
            if call.answered_at is None and (said or self._answered_elsewhere(conn, ev)):
                call.status = TAKEN_ELSEWHERE
        if (call.answered_at, call.status, call.ended_at) != before:
            self._statements()[3].execute(
                conn,
                {
                    "row_id": call.id,
                    "answered_at": call.answered_at,
                    "status": call.status,
                    "ended_at": call.ended_at,
                    "duration_s": call.duration_s,
                    "long_call": call.long_call,
                },
            )
        return call

    def _call_row(self, conn: Connection, ev: CallEvent) -> CallRow | None:
        """The call's row, as plain attributes to update in place (building a ``Call``
        entity cost more than the select: SQLModel validates on construction)."""
        row = self._statements()[2].first(conn, {"call_id": ev.call_id, "ext": ev.extension})
        return None if row is None else SimpleNamespace(**row._asdict())

    def _answered_elsewhere(self, conn: Connection, ev: CallEvent) -> bool:
        """Whether another extension answered this call (the webhook says no more than each
        leg's own events; Asterisk says it in the hangup's cause too)."""
        found = self._statements()[4].first(conn, {"call_id": ev.call_id, "ext": ev.extension})
        return found is not None

    def _create_call(
        self, conn: Connection, ev: CallEvent, at: datetime, hint: Found, operator: Operator | None
    ) -> None:
        if hint is UNKNOWN:
            e164 = try_normalize(ev.customer_number, self.tl.settings.default_region)
            client_id = None
            if e164 is not None:
                matches = match_rows_sync(conn, e164, limit=2)
                if len(matches) == 1:
                    client_id = matches[0].id
        else:
            client_id, e164 = hint
        self._statements()[1].execute(
            conn,
            {
                "pbx_call_id": ev.call_id,
                "extension": ev.extension,
                "direction": ev.direction.value,
                "operator_id": operator.id if operator else None,
                "client_id": client_id,
                "number": (e164 or ev.customer_number)[:64],
                "status": "ringing",
                "started_at": at,
                "long_call": False,
                "checklist": {},
                "notes": "",
            },
        )

    def _select_call(self, calls: Any) -> Any:
        stmt = sa.select(calls).where(
            calls.c.pbx_call_id == sa.bindparam("call_id"),
            calls.c.extension == sa.bindparam("ext"),
        )
        if not self.tl.db.is_sqlite:
            stmt = stmt.with_for_update()  # two events of one call in two requests at once
        return stmt

    def _statements(self) -> tuple[HotQuery, ...]:
        """The log path's statements, built once for this database's dialect."""
        if self._inserts is None:
            insert = sqlite_insert if self.tl.db.is_sqlite else pg_insert
            records = CallEventRecord.__table__  # type: ignore[attr-defined]
            calls = Call.__table__  # type: ignore[attr-defined]
            record: Executable = insert(records).on_conflict_do_nothing(
                index_elements=["pbx_call_id", "event", "extension"]
            )
            if not self.tl.db.is_sqlite:
                record = cast(PgInsert, record).returning(
                    records.c.pbx_call_id, records.c.event, records.c.extension
                )
            self._inserts = (
                HotQuery(record, keys=_RECORD_KEYS),
                # A row written by click-to-dial (or a repeat) stays as it is.
                HotQuery(
                    insert(calls).on_conflict_do_nothing(
                        index_elements=["pbx_call_id", "extension"]
                    ),
                    keys=_CALL_KEYS,
                ),
                HotQuery(self._select_call(calls)),
                HotQuery(
                    sa.update(calls)
                    .where(calls.c.id == sa.bindparam("row_id"))
                    .values(
                        answered_at=sa.bindparam("answered_at"),
                        status=sa.bindparam("status"),
                        ended_at=sa.bindparam("ended_at"),
                        duration_s=sa.bindparam("duration_s"),
                        long_call=sa.bindparam("long_call"),
                    )
                ),
                HotQuery(
                    sa.select(calls.c.id)
                    .where(
                        calls.c.pbx_call_id == sa.bindparam("call_id"),
                        calls.c.extension != sa.bindparam("ext"),
                        calls.c.answered_at.is_not(None),
                    )
                    .limit(1)
                ),
            )
        return self._inserts


def _as_error(exc: Exception) -> Exception:
    if isinstance(exc, DBAPIError):
        # The PBX retries on a 5xx: say "later", not "your event is wrong".
        return Unavailable(f"the call log cannot be written: {exc.orig}")
    return exc
