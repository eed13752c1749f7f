"""One pipeline for every connector: a ``CallEvent`` in, a call log and a screen pop out.

Two paths leave :meth:`CtiPipeline.handle`, side by side:

- the pop path (ringing/dialing): the extension's operator, the clients with the number, the
  card, a publish on the bus. Nothing else: no writes, so no lock can make a pop wait.
- the log path: every event recorded once (the unique key on ``call_events`` makes a repeated
  delivery a no-op), and the ``calls`` row per (call id, extension) created or updated.

``handle`` returns only once the log path has committed (the webhook answers 202 after it,
as DESIGN.md promises). With ``pop_before_commit`` (the default) the pop path runs while the
write commits; otherwise it runs after the commit, and only for events not seen before
(``bench/pop_latency.py`` measures the difference). Either way a repeated ringing may pop
twice: the websocket hub drops a second pop of one call per socket.

``call_state`` messages (answered, hangup) are built from the committed row, so they carry
the duration the database holds. No aiohttp here.

``handle`` is :meth:`CtiPipeline.start` (pops begin) then :meth:`CtiPipeline.finish` (the
record, committed; then the call states). The connector pump (``web/api/cti.py``) calls the
two halves apart: it pops events as they are read and records them later, in order, merging
with :meth:`Started.extend` the ones that waited behind a commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from cti_adapter.events import CallEvent, CallEventType
from cti_adapter.pops import (
    POPS_CHANNEL,
    Lookup,
    Operator,
    OperatorDirectory,
    addressed,
    call_state,
    lookup_sync,
    screen_pop_sync,
    try_normalize,
)
from engine.clients import match_rows_sync
from engine.errors import Unavailable
from engine.models import LONG_CALL_SECONDS, Call, CallEventRecord
from engine.service import Tierline
from engine.storage.hot import HotQuery

log = logging.getLogger("tierline.cti")

_POPPING = (CallEventType.RINGING, CallEventType.DIALING)
POPS_PER_HOP = 8
_RECORD_KEYS = (
    "pbx_call_id", "event", "extension", "direction", "from_number", "to_number", "at",
    "received_at",
)  # fmt: skip
_CALL_KEYS = (
    "pbx_call_id", "extension", "direction", "operator_id", "client_id", "number", "status",
    "started_at", "long_call", "checklist", "notes",
)  # fmt: skip
_STATES = {CallEventType.ANSWERED: "answered", CallEventType.HANGUP: "hangup"}


Key = tuple[str, str, str]
# A ``calls`` row as plain attributes (the columns of Call), updated in place by the log path.
CallRow = SimpleNamespace
_CALLS = Call.__table__  # type: ignore[attr-defined]
_LINKED = HotQuery(
    sa.select(_CALLS.c.client_id).where(
        _CALLS.c.pbx_call_id == sa.bindparam("call_id"),
        _CALLS.c.extension == sa.bindparam("ext"),
    )
)
# "The pop path did not look this number up": the log path looks it up itself.
_UNKNOWN = object()


@dataclass
class Outcome:
    accepted: int  # events given, repeats included
    recorded: int  # events seen for the first time
    pops: int = 0
    states: int = 0


@dataclass(slots=True)
class Started:
    """Events given to :meth:`CtiPipeline.start`: their pops under way (with
    ``pop_before_commit``), their record still to be made by :meth:`CtiPipeline.finish`."""

    accepted: int = 0  # events given, repeats included
    events: list[CallEvent] = field(default_factory=list)  # repeats removed, in order given
    # One future per event popped ahead: the client the pop found, for the log path.
    matched: dict[Key, asyncio.Future[Any]] = field(default_factory=dict)
    pops: list[asyncio.Task[int]] = field(default_factory=list)

    def extend(self, later: Started) -> None:
        """Take ``later``'s events after these, so one record keeps the order given."""
        known = {ev.dedup_key for ev in self.events}
        self.accepted += later.accepted
        self.events += [ev for ev in later.events if ev.dedup_key not in known]
        for key, fut in later.matched.items():
            self.matched.setdefault(key, fut)
        self.pops += later.pops

    async def popped(self) -> None:
        """Wait until the pops started ahead of the commit have been pushed (or failed)."""
        if self.pops:
            await asyncio.wait(self.pops)

    def abandon(self) -> None:
        """These events will never be recorded (shutdown): stop their pops."""
        for task in self.pops:
            task.cancel()


@dataclass
class _Batch:
    """One request's events waiting for the next group write."""

    events: list[CallEvent]
    hints: dict[Key, Any]
    operators: dict[str, Operator | None]
    now: datetime
    done: asyncio.Future[list[tuple[CallEvent, CallRow | None]]]


class CtiPipeline:
    def __init__(
        self,
        tl: Tierline,
        directory: OperatorDirectory | None = None,
        *,
        pop_before_commit: bool = True,
    ) -> None:
        self.tl = tl
        self.directory = directory or OperatorDirectory(tl.db)
        self.pop_before_commit = pop_before_commit
        self._inserts: tuple[HotQuery, HotQuery, HotQuery, HotQuery] | None = None
        self._queued: list[_Batch] = []
        self._flusher: asyncio.Task[None] | None = None

    async def handle(self, events: Sequence[CallEvent]) -> Outcome:
        """Record ``events`` (committed when this returns) and push their pops and states."""
        return await self.finish(self.start(events))

    def start(self, events: Sequence[CallEvent]) -> Started:
        """Start the pops of ``events`` (with ``pop_before_commit``); nothing is recorded yet."""
        started = Started(len(events), list({ev.dedup_key: ev for ev in events}.values()))
        popping = [ev for ev in started.events if ev.event in _POPPING]
        if self.pop_before_commit and popping:
            # The pop path's lookup also tells the log path which client the call is with.
            loop = asyncio.get_running_loop()
            started.matched = {ev.dedup_key: loop.create_future() for ev in popping}
            started.pops.append(loop.create_task(self._pops(popping, started.matched)))
        return started

    async def finish(self, started: Started) -> Outcome:
        """Record ``started``'s events (committed when this returns), then push the pops not
        started ahead and the call states. After a failure it may be called again: the
        write is all or nothing, and a repeated event is recorded once."""
        try:
            hints = {key: await fut for key, fut in started.matched.items()}
            changed = await self._record(started.events, hints)
        except BaseException:
            await asyncio.gather(*started.pops, return_exceptions=True)
            raise
        pops = sum(await asyncio.gather(*started.pops))
        # Not popped ahead (pop_before_commit off): pop now, and only what was not seen before.
        fresh = {ev.dedup_key for ev, _ in changed} - started.matched.keys()
        late = [ev for ev in started.events if ev.event in _POPPING and ev.dedup_key in fresh]
        if late:
            pops += await self._pops(late, {})
        states = 0
        for ev, call in changed:
            state = _STATES.get(ev.event)
            if state is not None and call is not None and await self._push_state(call, state):
                states += 1
        return Outcome(started.accepted, len(changed), pops, states)

    # --- pop path -----------------------------------------------------------------------

    async def _pops(self, events: list[CallEvent], matched: dict[Key, asyncio.Future[Any]]) -> int:
        """Pop ``events`` a few per database hop: a PBX batch of k ringing events (a ring
        group, a busy AMI stream) costs k/POPS_PER_HOP thread hops, not k, and the first
        pops of the batch still go out before the rest are built."""
        sent = 0
        try:
            for start in range(0, len(events), POPS_PER_HOP):
                chunk = events[start : start + POPS_PER_HOP]
                try:
                    sent += await self.pop_many(chunk, matched)
                except Exception:
                    # A pop is a convenience; the call log is the record. Never fail the event.
                    log.exception("screen pops for calls %s failed", [e.call_id for e in chunk])
        finally:
            for fut in matched.values():
                if not fut.done():
                    fut.set_result(_UNKNOWN)
        return sent

    async def pop(self, ev: CallEvent, matched: asyncio.Future[Any] | None = None) -> int:
        """Look the caller up and push the pop to the extension's operator (0 if nobody).

        ``matched`` receives the one matching client's id (or None) as soon as it is known.
        """
        return await self.pop_many([ev], {ev.dedup_key: matched} if matched else {})

    async def pop_many(
        self, events: list[CallEvent], matched: dict[Key, asyncio.Future[Any]]
    ) -> int:
        tl = self.tl
        region, tz, sent_at = tl.settings.default_region, tl.settings.timezone, tl.clock.now()
        wanted = []
        for ev in events:
            user = await self.directory.by_extension(ev.extension)
            if user is not None:
                wanted.append((ev, user))
        if not wanted:
            return 0

        def build(conn: Connection) -> list[tuple[CallEvent, Operator, Lookup, dict] | None]:
            # One hop to the database for these pops: lookups and cards together.
            out: list[tuple[CallEvent, Operator, Lookup, dict] | None] = []
            for ev, user in wanted:
                try:
                    linked = None
                    if ev.event is CallEventType.DIALING:
                        # Click-to-dial wrote the row first: show the client the operator chose.
                        linked = _LINKED.first(conn, {"call_id": ev.call_id, "ext": ev.extension})
                    found = lookup_sync(
                        conn,
                        ev.customer_number,
                        region,
                        linked_client_id=linked and linked.client_id,
                    )
                    message = screen_pop_sync(
                        conn, tl.cache, user, ev.call_id, found, default_tz=tz, sent_at=sent_at
                    )
                    message["direction"] = ev.direction.value
                    out.append((ev, user, found, message))
                except Exception:
                    # A pop is a convenience; the call log is the record. Never fail the event.
                    log.exception("screen pop for call %s failed", ev.call_id)
                    out.append(None)
            return out

        sent = 0
        for item in await tl.db.read(build):
            if item is None:
                continue
            ev, user, found, message = item
            fut = matched.get(ev.dedup_key)
            if fut is not None and not fut.done():
                fut.set_result(found.clients[0].id if len(found.clients) == 1 else None)
            try:
                await tl.bus.publish(POPS_CHANNEL, addressed(user.id, message))  # type: ignore[arg-type]
                sent += 1
            except Exception:
                log.exception("screen pop for call %s not pushed", ev.call_id)
        return sent

    async def _push_state(self, call: CallRow, state: str) -> bool:
        user_id = call.operator_id
        if user_id is None:
            user = await self.directory.by_extension(call.extension)
            user_id = user.id if user is not None else None
        if user_id is None:
            return False
        try:
            await self.tl.bus.publish(POPS_CHANNEL, addressed(user_id, call_state(call, state)))
        except Exception:
            log.exception("call_state for call %s not pushed", call.pbx_call_id)
            return False
        return True

    # --- log path -----------------------------------------------------------------------

    async def _record(
        self, events: list[CallEvent], hints: dict[Key, Any]
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

        Webhook requests arriving together share one transaction (and one worker-thread
        hop) instead of queueing for the write lock one by one; each is answered only once
        the transaction holding its events has committed. If a group fails, its batches are
        retried alone, so one request's trouble is not the others'.
        """
        group: list[_Batch] = []
        try:
            while self._queued:
                group, self._queued = self._queued, []
                results: list[Any]
                try:
                    results = await self.tl.db.write(lambda c, g=group: self._write(c, g))
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
                    hint = b.hints.get(ev.dedup_key, _UNKNOWN)
                    mine.append((ev, self._apply(conn, ev, b.now, hint, b.operators)))
            out.append(mine)
        return out

    def _insert_records(
        self, conn: Connection, events: list[tuple[CallEvent, datetime]]
    ) -> set[tuple[str, str, str]]:
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
        # SQLite: one raw statement per event (~15 µs each), no execution context per batch.
        fresh = set()
        for row in rows:
            for r in stmt.rows(conn, row):
                fresh.add((r[0], r[1], r[2]))
        return fresh

    def _apply(
        self,
        conn: Connection,
        ev: CallEvent,
        now: datetime,
        hint: Any,
        operators: dict[str, Operator | None],
    ) -> CallRow | None:
        at = ev.at or now
        if ev.event in _POPPING:
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

    def _create_call(
        self, conn: Connection, ev: CallEvent, at: datetime, hint: Any, operator: Operator | None
    ) -> None:
        e164 = try_normalize(ev.customer_number, self.tl.settings.default_region)
        client_id = None if hint is _UNKNOWN else hint
        if hint is _UNKNOWN and e164 is not None:
            matches = match_rows_sync(conn, e164, limit=2)
            if len(matches) == 1:
                client_id = matches[0].id
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

    def _statements(self) -> tuple[HotQuery, HotQuery, HotQuery, HotQuery]:
        """The log path's statements, built once for this database's dialect."""
        if self._inserts is None:
            insert = sqlite_insert if self.tl.db.is_sqlite else pg_insert
            records = CallEventRecord.__table__  # type: ignore[attr-defined]
            calls = Call.__table__  # type: ignore[attr-defined]
            self._inserts = (
                HotQuery(
                    insert(records)
                    .on_conflict_do_nothing(index_elements=["pbx_call_id", "event", "extension"])
                    .returning(records.c.pbx_call_id, records.c.event, records.c.extension),
                    keys=_RECORD_KEYS,
                ),
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
            )
        return self._inserts


def _as_error(exc: Exception) -> Exception:
    if isinstance(exc, DBAPIError):
        # The PBX retries on a 5xx: say "later", not "your event is wrong".
        return Unavailable(f"the call log cannot be written: {exc.orig}")
    return exc
