"""One pipeline for every connector: a ``CallEvent`` in, a call log and a screen pop out.

Two paths leave :meth:`CtiPipeline.handle`, side by side:

- the pop path (ringing/dialing; ``cti_adapter/pop_path.py``): the extension's operator, the
  clients with the number, the card, a publish on the bus. Nothing else: no writes, so no
  lock can make a pop wait.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cti_adapter.call_log import CallLog
from cti_adapter.call_rows import POPPING, CallRow, Found, Key
from cti_adapter.directory import OperatorDirectory
from cti_adapter.events import CallEvent, CallEventType
from cti_adapter.pop_path import PopPath
from cti_adapter.pops import POPS_CHANNEL, addressed, call_state
from engine.service import Tierline

log = logging.getLogger("tierline.cti")

_STATES = {CallEventType.ANSWERED: "answered", CallEventType.HANGUP: "hangup"}


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
    # One future per event popped ahead: what the pop found (a call_rows.Hint), for the log
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
        self.pop_path = PopPath(tl, self.directory)

    async def drain(self) -> None:
        """Shutdown: wait for the call log's writes under way (``CallLog.drain``)."""
        await self.call_log.drain()

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
            task, read = self.pop_path.begin(popping, started.matched)
            started.pops.append(task)
            if read is not None:
                started.reads.append(read)
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
            pops += await self.pop_path.run(late, {})
        states = 0
        for ev, call in changed:
            if call is None:  # ringing, dialing: the pop says it all
                continue
            state = _STATES.get(ev.event)
            if state is not None and await self._push_state(call, state):
                states += 1
            # Legs reported over before this answer came: taken elsewhere, their pops close.
            for leg in call.closed_legs:
                states += await self._push_state(leg, "hangup")
        return Outcome(started.accepted, len(changed), pops, states)

    # --- pops (pop_path.py) and call states ---------------------------------------------

    async def pop(self, ev: CallEvent, matched: asyncio.Future[Found] | None = None) -> int:
        """Look the caller up and push the pop to the extension's operator (0 if nobody).

        ``matched`` receives the one matching client's id (or None) and the number's E.164
        (a ``call_rows.Hint``) as soon as they are known.
        """
        return await self.pop_path.pop_many([ev], {ev.dedup_key: matched} if matched else {})

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
