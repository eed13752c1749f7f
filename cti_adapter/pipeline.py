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
the duration the database holds. No aiohttp here: the AMI pump calls the same ``handle``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from cti_adapter.events import CallEvent, CallEventType
from cti_adapter.pops import (
    POPS_CHANNEL,
    Lookup,
    OperatorDirectory,
    addressed,
    call_state,
    lookup_sync,
    screen_pop_sync,
)
from engine import phones
from engine.clients import find_by_phone_sync
from engine.errors import Unavailable
from engine.models import LONG_CALL_SECONDS, Call, CallEventRecord, User
from engine.service import Tierline

log = logging.getLogger("tierline.cti")

_POPPING = (CallEventType.RINGING, CallEventType.DIALING)
_STATES = {CallEventType.ANSWERED: "answered", CallEventType.HANGUP: "hangup"}


Key = tuple[str, str, str]
# "The pop path did not look this number up": the log path looks it up itself.
_UNKNOWN = object()


@dataclass
class Outcome:
    accepted: int  # events given, repeats included
    recorded: int  # events seen for the first time
    pops: int = 0
    states: int = 0


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

    async def handle(self, events: Sequence[CallEvent]) -> Outcome:
        """Record ``events`` (committed when this returns) and push their pops and states."""
        unique = list({ev.dedup_key: ev for ev in events}.values())
        popping = [ev for ev in unique if ev.event in _POPPING]
        # The pop path's lookup also tells the log path which client the call is with.
        matched: dict[Key, asyncio.Future[Any]] = {}
        pop_task: asyncio.Task[int] | None = None
        if self.pop_before_commit and popping:
            loop = asyncio.get_running_loop()
            matched = {ev.dedup_key: loop.create_future() for ev in popping}
            pop_task = asyncio.create_task(self._pops(popping, matched))
        try:
            hints = {key: await fut for key, fut in matched.items()}
            changed = await self._record(unique, hints)
        except BaseException:
            if pop_task is not None:
                await asyncio.gather(pop_task, return_exceptions=True)
            raise
        fresh = {ev.dedup_key for ev, _ in changed}
        if pop_task is not None:
            pops = await pop_task
        else:
            pops = await self._pops([ev for ev in popping if ev.dedup_key in fresh], {})
        states = 0
        for ev, call in changed:
            state = _STATES.get(ev.event)
            if state is not None and call is not None and await self._push_state(call, state):
                states += 1
        return Outcome(len(events), len(changed), pops, states)

    # --- pop path -----------------------------------------------------------------------

    async def _pops(self, events: list[CallEvent], matched: dict[Key, asyncio.Future[Any]]) -> int:
        sent = 0
        for ev in events:
            fut = matched.get(ev.dedup_key)
            try:
                sent += await self.pop(ev, fut)
            except Exception:
                # A pop is a convenience; the call log is the record. Never fail the event.
                log.exception("screen pop for call %s failed", ev.call_id)
            finally:
                if fut is not None and not fut.done():
                    fut.set_result(_UNKNOWN)
        return sent

    async def pop(self, ev: CallEvent, matched: asyncio.Future[Any] | None = None) -> int:
        """Look the caller up and push the pop to the extension's operator (0 if nobody).

        ``matched`` receives the one matching client's id (or None) as soon as it is known.
        """
        user = await self.directory.by_extension(ev.extension)
        if user is None:
            return 0
        tl = self.tl
        region, tz, sent_at = tl.settings.default_region, tl.settings.timezone, tl.clock.now()

        def build(session: Session) -> tuple[Lookup, dict[str, object]]:
            # One hop to the database for the whole pop: lookup and card together.
            linked = None
            if ev.event is CallEventType.DIALING:
                # Click-to-dial wrote the row first: show the client the operator chose.
                linked = session.exec(
                    select(Call.client_id).where(
                        Call.pbx_call_id == ev.call_id, Call.extension == ev.extension
                    )
                ).first()
            found = lookup_sync(session, ev.customer_number, region, linked_client_id=linked)
            message = screen_pop_sync(
                session, tl.cache, user, ev.call_id, found, default_tz=tz, sent_at=sent_at
            )
            return found, message

        found, message = await tl.db.read(build)
        if matched is not None and not matched.done():
            matched.set_result(found.clients[0].id if len(found.clients) == 1 else None)
        await tl.bus.publish(POPS_CHANNEL, addressed(user.id, message))  # type: ignore[arg-type]
        return 1

    async def _push_state(self, call: Call, state: str) -> bool:
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
    ) -> list[tuple[CallEvent, Call | None]]:
        now = self.tl.clock.now()
        # The directory is async (cached); resolve operators before the write's one hop.
        operators = {ev.extension: await self.directory.by_extension(ev.extension) for ev in events}

        def write(session: Session) -> list[tuple[CallEvent, Call | None]]:
            fresh = self._insert_records(session, events, now)
            return [
                (ev, self._apply(session, ev, now, hints.get(ev.dedup_key, _UNKNOWN), operators))
                for ev in events
                if ev.dedup_key in fresh
            ]

        try:
            return await self.tl.db.write(write)
        except DBAPIError as exc:
            # The PBX retries on a 5xx: say "later", not "your event is wrong".
            raise Unavailable(f"the call log cannot be written: {exc.orig}") from exc

    def _insert_records(
        self, session: Session, events: list[CallEvent], now: datetime
    ) -> set[tuple[str, str, str]]:
        if not events:
            return set()
        table = CallEventRecord.__table__  # type: ignore[attr-defined]
        insert = sqlite_insert if self.tl.db.is_sqlite else pg_insert
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
            for ev in events
        ]
        stmt = (
            insert(table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["pbx_call_id", "event", "extension"])
            .returning(table.c.pbx_call_id, table.c.event, table.c.extension)
        )
        result = session.exec(stmt)
        return {(r[0], r[1], r[2]) for r in result}

    def _apply(
        self,
        session: Session,
        ev: CallEvent,
        now: datetime,
        hint: Any,
        operators: dict[str, User | None],
    ) -> Call | None:
        at = ev.at or now
        if ev.event in _POPPING:
            # One statement: a row written by click-to-dial (or a repeat) stays as it is.
            self._create_call(session, ev, at, hint, operators.get(ev.extension))
            return None
        call = self._call_row(session, ev)
        if call is None:  # the ringing never reached us
            self._create_call(session, ev, at, hint, operators.get(ev.extension))
            call = self._call_row(session, ev)
            assert call is not None
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
        session.add(call)
        session.flush()
        return call

    def _call_row(self, session: Session, ev: CallEvent) -> Call | None:
        stmt = select(Call).where(
            tuple_(Call.pbx_call_id, Call.extension) == (ev.call_id, ev.extension)
        )
        if not self.tl.db.is_sqlite:
            stmt = stmt.with_for_update()  # two events of one call in two requests at once
        return session.exec(stmt).first()

    def _create_call(
        self, session: Session, ev: CallEvent, at: datetime, hint: Any, operator: User | None
    ) -> None:
        e164 = phones.try_normalize(ev.customer_number, self.tl.settings.default_region)
        client_id = None if hint is _UNKNOWN else hint
        if hint is _UNKNOWN and e164 is not None:
            matches = find_by_phone_sync(session, e164, limit=2)
            if len(matches) == 1:
                client_id = matches[0].id
        table = Call.__table__  # type: ignore[attr-defined]
        insert = sqlite_insert if self.tl.db.is_sqlite else pg_insert
        session.exec(
            insert(table)
            .values(
                pbx_call_id=ev.call_id,
                extension=ev.extension,
                direction=ev.direction.value,
                operator_id=operator.id if operator else None,
                client_id=client_id,
                number=(e164 or ev.customer_number)[:64],
                status="ringing",
                started_at=at,
                long_call=False,
                checklist={},
                notes="",
            )
            .on_conflict_do_nothing(index_elements=["pbx_call_id", "extension"])
        )
