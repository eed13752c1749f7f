"""One pipeline for every connector: a ``CallEvent`` in, a call log and a screen pop out.

Two paths leave :meth:`CtiPipeline.handle`, side by side:

- the pop path (ringing/dialing): the extension's operator, the clients with the number, the
  card, a publish on the bus. Nothing else: no writes, so no lock can make a pop wait; and
  from its read to its push the database's writer thread starts no new transaction
  (``engine/storage/urgency.py``).
- the log path (``cti_adapter/call_log.py``): every event recorded once, and the ``calls``
  row per (call id, extension) created or updated, in group commits.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cti_adapter.call_log import POPPING, UNKNOWN, CallLog, CallRow, Found, Key
from cti_adapter.directory import Operator, OperatorDirectory
from cti_adapter.events import CallEvent, CallEventType
from cti_adapter.pops import (
    POPS_CHANNEL,
    Lookup,
    addressed,
    call_state,
    lookup_sync,
    screen_pop_sync,
)
from engine.models import Call
from engine.service import Tierline
from engine.storage.hot import HotQuery

log = logging.getLogger("tierline.cti")

POPS_PER_HOP = 8
_STATES = {CallEventType.ANSWERED: "answered", CallEventType.HANGUP: "hangup"}


_CALLS = Call.__table__  # type: ignore[attr-defined]
_LINKED = HotQuery(
    sa.select(_CALLS.c.client_id).where(
        _CALLS.c.pbx_call_id == sa.bindparam("call_id"),
        _CALLS.c.extension == sa.bindparam("ext"),
    )
)


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
    # One future per event popped ahead: what the pop found (a call_log.Hint), for the log
    # path.
    matched: dict[Key, asyncio.Future[Found]] = field(default_factory=dict)
    pops: list[asyncio.Task[int]] = field(default_factory=list)
    # The reads the pops' first hops queued before their tasks ran (see abandon).
    reads: list[asyncio.Future[Any]] = field(default_factory=list)

    def extend(self, later: Started) -> None:
        """Take ``later``'s events after these, so one record keeps the order given."""
        known = {ev.dedup_key for ev in self.events}
        self.accepted += later.accepted
        self.events += [ev for ev in later.events if ev.dedup_key not in known]
        for key, fut in later.matched.items():
            self.matched.setdefault(key, fut)
        self.pops += later.pops
        self.reads += later.reads

    async def popped(self) -> None:
        """Wait until the pops started ahead of the commit have been pushed (or failed)."""
        if self.pops:
            await asyncio.wait(self.pops)

    def abandon(self) -> list[asyncio.Future[Any]]:
        """These events will never be recorded (shutdown): stop their pops. Returns them and
        their reads, to be awaited: a read cancelled mid-lookup still holds a database
        connection (a pop cancelled before its first step leaves its read unwinding alone)."""
        for task in self.pops:
            task.cancel()
        return [*self.pops, *self.reads]


_Built = list[tuple[CallEvent, Operator, Lookup, dict] | None]


def _nothing(*_: object) -> None:
    return None


@dataclass(slots=True)
class _Hop:
    """One trip to the database for a few pops: their read queued (None: nobody to pop),
    the writer held back until :meth:`end`."""

    reading: asyncio.Future[_Built] | None
    release: Callable[..., None]

    def end(self, *_: object) -> None:
        """The pops are pushed, or never will be: skip the read if still queued, let the
        writer go on. Idempotent; takes any arguments, to serve as a done callback."""
        if self.reading is not None and not self.reading.done():
            self.reading.cancel()
        self.release()


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
        self.call_log = CallLog(tl, self.directory)

    async def handle(self, events: Sequence[CallEvent]) -> Outcome:
        """Record ``events`` (committed when this returns) and push their pops and states."""
        return await self.finish(self.start(events))

    def start(self, events: Sequence[CallEvent]) -> Started:
        """Start the pops of ``events`` (with ``pop_before_commit``); nothing is recorded yet."""
        started = Started(len(events), list({ev.dedup_key: ev for ev in events}.values()))
        popping = [ev for ev in started.events if ev.event in POPPING]
        if self.pop_before_commit and popping:
            # The pop path's lookup also tells the log path which client the call is with.
            loop = asyncio.get_running_loop()
            started.matched = {ev.dedup_key: loop.create_future() for ev in popping}
            # The first hop's read is queued now, not once the task gets its turn on a busy
            # loop (0.5 ms of the slowest pops' 6, bench/pop_latency.py --trace).
            first = self._hop_now(popping[:POPS_PER_HOP])
            task = loop.create_task(self._pops(popping, started.matched, first))
            if first is not None:
                task.add_done_callback(first.end)  # cancelled before its first step, too
                if first.reading is not None:
                    started.reads.append(first.reading)
            started.pops.append(task)
        return started

    async def finish(self, started: Started) -> Outcome:
        """Record ``started``'s events (committed when this returns), then push the pops not
        started ahead and the call states. After a failure it may be called again: the
        write is all or nothing, and a repeated event is recorded once."""
        try:
            hints = {key: await fut for key, fut in started.matched.items()}
            changed = await self.call_log.record(started.events, hints)
        except BaseException:
            await asyncio.gather(*started.pops, return_exceptions=True)
            raise
        pops = sum(await asyncio.gather(*started.pops))
        # Not popped ahead (pop_before_commit off): pop now, and only what was not seen before.
        fresh = {ev.dedup_key for ev, _ in changed} - started.matched.keys()
        late = [ev for ev in started.events if ev.event in POPPING and ev.dedup_key in fresh]
        if late:
            pops += await self._pops(late, {})
        states = 0
        for ev, call in changed:
            state = _STATES.get(ev.event)
            if state is not None and call is not None and await self._push_state(call, state):
                states += 1
        return Outcome(started.accepted, len(changed), pops, states)

    # --- pop path -----------------------------------------------------------------------

    async def _pops(
        self,
        events: list[CallEvent],
        matched: dict[Key, asyncio.Future[Found]],
        first: _Hop | None = None,
    ) -> int:
        """Pop ``events`` a few per database hop: a PBX batch of k ringing events (a ring
        group, a busy AMI stream) costs k/POPS_PER_HOP thread hops, not k, and the first
        pops of the batch still go out before the rest are built. ``first``: the first
        hop, already under way."""
        sent = 0
        try:
            for start in range(0, len(events), POPS_PER_HOP):
                chunk = events[start : start + POPS_PER_HOP]
                try:
                    if start == 0 and first is not None:
                        sent += await self._push(first, matched)
                    else:
                        sent += await self.pop_many(chunk, matched)
                except Exception:
                    # A pop is a convenience; the call log is the record. Never fail the event.
                    log.exception("screen pops for calls %s failed", [e.call_id for e in chunk])
        finally:
            for fut in matched.values():
                if not fut.done():
                    fut.set_result(UNKNOWN)
        return sent

    async def pop(self, ev: CallEvent, matched: asyncio.Future[Found] | None = None) -> int:
        """Look the caller up and push the pop to the extension's operator (0 if nobody).

        ``matched`` receives the one matching client's id (or None) and the number's E.164
        (a ``call_log.Hint``) as soon as they are known.
        """
        return await self.pop_many([ev], {ev.dedup_key: matched} if matched else {})

    async def pop_many(
        self, events: list[CallEvent], matched: dict[Key, asyncio.Future[Found]]
    ) -> int:
        wanted = []
        for ev in events:
            user = await self.directory.by_extension(ev.extension)
            if user is not None:
                wanted.append((ev, user))
        return await self._push(self._hop(wanted), matched)

    def _hop_now(self, events: list[CallEvent]) -> _Hop | None:
        """The hop for ``events`` when the directory knows every extension (the usual
        case), else None: the directory must be read first."""
        wanted = []
        for ev in events:
            known, user = self.directory.cached(ev.extension)
            if not known:
                return None
            if user is not None:
                wanted.append((ev, user))
        return self._hop(wanted)

    def _hop(self, wanted: list[tuple[CallEvent, Operator]]) -> _Hop:
        if not wanted:
            return _Hop(None, _nothing)
        # From the read to the push the writer thread starts no new transaction: its
        # statements would take the GIL from this pop's thread and from the loop.
        release = self.tl.db.hold_writes()
        build = partial(self._build, wanted, self.tl.clock.now())
        return _Hop(self.tl.db.read_soon(build), release)

    def _build(
        self, wanted: list[tuple[CallEvent, Operator]], sent_at: datetime, conn: Connection
    ) -> _Built:
        """In the reader thread: the lookups and cards of one hop's pops."""
        tl = self.tl
        region, tz = tl.settings.default_region, tl.settings.timezone
        out: _Built = []
        for ev, user in wanted:
            try:
                linked = None
                if ev.event is CallEventType.DIALING:
                    # Click-to-dial wrote the row first: show the client the operator chose.
                    linked = _LINKED.first(conn, {"call_id": ev.call_id, "ext": ev.extension})
                found = lookup_sync(
                    conn, ev.customer_number, region, linked_client_id=linked and linked.client_id
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

    async def _push(self, hop: _Hop, matched: dict[Key, asyncio.Future[Found]]) -> int:
        """Wait for the hop's read, tell the log path what each pop found, push the pops."""
        if hop.reading is None:
            return 0
        sent = 0
        try:
            for item in await hop.reading:
                if item is None:
                    continue
                ev, user, found, message = item
                fut = matched.get(ev.dedup_key)
                if fut is not None and not fut.done():
                    only = found.clients[0].id if len(found.clients) == 1 else None
                    fut.set_result((only, found.e164))
                try:
                    await self.tl.bus.publish(POPS_CHANNEL, addressed(user.id, message))
                    sent += 1
                except Exception:
                    log.exception("screen pop for call %s not pushed", ev.call_id)
        finally:
            hop.end()
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
