"""The pop path: ringing and dialing events to screen pops, a few per database hop.

For each event: the extension's operator (``directory.py``, cached), then in one read in
the database's reader thread the clients with the caller's number and the card
(``pops.py``), then a publish on the bus to that operator. Nothing else: no writes, so no
lock can make a pop wait; and from its read to its push the database's writer thread starts
no new transaction (``engine/storage/urgency.py``). What the read found goes to the log path
too (``matched``): the call is linked to the one matching client without a second lookup.

:meth:`PopPath.begin` queues the first hop's read before it returns, when the directory
knows the extensions (the usual case): a task would first wait its turn on a busy loop.
No aiohttp here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cti_adapter.call_rows import UNKNOWN, Found, Key
from cti_adapter.directory import Operator, OperatorDirectory
from cti_adapter.events import CallEvent, CallEventType
from cti_adapter.pops import POPS_CHANNEL, Lookup, addressed, lookup_sync, screen_pop_sync
from engine.models import Call
from engine.service import Tierline
from engine.storage.hot import HotQuery

log = logging.getLogger("tierline.cti")

POPS_PER_HOP = 8

_CALLS = Call.__table__  # type: ignore[attr-defined]
_LINKED = HotQuery(
    sa.select(_CALLS.c.client_id).where(
        _CALLS.c.pbx_call_id == sa.bindparam("call_id"),
        _CALLS.c.extension == sa.bindparam("ext"),
    )
)


_Built = list[tuple[CallEvent, Lookup, dict] | None]  # an event, its lookup, its envelope


def _nothing(*_: object) -> None:
    return None


@dataclass(slots=True)
class Hop:
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


class PopPath:
    def __init__(self, tl: Tierline, directory: OperatorDirectory) -> None:
        self.tl = tl
        self.directory = directory

    def begin(
        self, events: list[CallEvent], matched: dict[Key, asyncio.Future[Found]]
    ) -> tuple[asyncio.Task[int], asyncio.Future[Any] | None]:
        """Pop ``events`` in a task of their own. Returns it, and the first hop's read when
        it is under way already (at shutdown it is awaited too: a read cancelled mid-lookup
        still holds a database connection, and a task cancelled before its first step does
        not wait for its read to let go)."""
        first = self._hop_now(events[:POPS_PER_HOP])
        task = asyncio.get_running_loop().create_task(self.run(events, matched, first))
        if first is None:
            return task, None
        task.add_done_callback(first.end)  # cancelled before its first step, too
        return task, first.reading

    async def run(
        self,
        events: list[CallEvent],
        matched: dict[Key, asyncio.Future[Found]],
        first: Hop | None = None,
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

    async def pop_many(
        self, events: list[CallEvent], matched: dict[Key, asyncio.Future[Found]]
    ) -> int:
        wanted = []
        for ev in events:
            user = await self.directory.by_extension(ev.extension)
            if user is not None:
                wanted.append((ev, user))
        return await self._push(self._hop(wanted), matched)

    def _hop_now(self, events: list[CallEvent]) -> Hop | None:
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

    def _hop(self, wanted: list[tuple[CallEvent, Operator]]) -> Hop:
        if not wanted:
            return Hop(None, _nothing)
        # From the read to the push the writer thread starts no new transaction: its
        # statements would take the GIL from this pop's thread and from the loop.
        release = self.tl.db.hold_writes()
        build = partial(self._build, wanted, self.tl.clock.now())
        return Hop(self.tl.db.read_soon(build), release)

    def _build(
        self, wanted: list[tuple[CallEvent, Operator]], sent_at: datetime, conn: Connection
    ) -> _Built:
        """In the reader thread: the lookups, cards and encoded pops of one hop."""
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
                out.append((ev, found, addressed(user.id, message)))
            except Exception:
                # A pop is a convenience; the call log is the record. Never fail the event.
                log.exception("screen pop for call %s failed", ev.call_id)
                out.append(None)
        return out

    async def _push(self, hop: Hop, matched: dict[Key, asyncio.Future[Found]]) -> int:
        """Wait for the hop's read, tell the log path what each pop found, push the pops."""
        if hop.reading is None:
            return 0
        sent = 0
        try:
            for item in await hop.reading:
                if item is None:
                    continue
                ev, found, envelope = item
                fut = matched.get(ev.dedup_key)
                if fut is not None and not fut.done():
                    only = found.clients[0].id if len(found.clients) == 1 else None
                    fut.set_result((only, found.e164))
                try:
                    await self.tl.bus.publish(POPS_CHANNEL, envelope)
                    sent += 1
                except Exception:
                    log.exception("screen pop for call %s not pushed", ev.call_id)
        finally:
            hop.end()
        return sent
