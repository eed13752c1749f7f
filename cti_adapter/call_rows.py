"""What each call event writes, in the database writer's transaction: the event once, and the
``calls`` row per (call id, extension) created or updated.

The rows half of the call log (``call_log.py`` groups requests into one commit and calls
this). A ring group or a queue rings several extensions: one row, one *leg*, each. A leg
that ends unanswered while another leg of the call is (or later turns out) answered is
``taken_elsewhere``: never its operator's call. No aiohttp here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from types import SimpleNamespace
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from cti_adapter.directory import Operator
from cti_adapter.events import CallEvent, CallEventType
from cti_adapter.pops import try_normalize
from engine.clients import match_rows_sync
from engine.models import LONG_CALL_SECONDS, Call, CallEventRecord, CallStatus
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

# The first key of the PostgreSQL advisory locks that serialise one call's legs across nodes
# (the second is the call id's hash): a key space of its own, apart from any other lock's.
CALL_LOCK_SPACE = 0x544C43  # "TLC"
_LOCK_CALLS = sa.text(
    "SELECT pg_advisory_xact_lock(:space, k) FROM unnest(CAST(:keys AS integer[])) AS k"
)

Key = tuple[str, str, str]
# A ``calls`` row as plain attributes (the columns of Call), updated in place by the log path,
# and ``closed_legs``: the other legs an answer turned into taken_elsewhere (see _as_row).
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


class CallRows:
    """The statements of the log path, run in the writer's transaction."""

    def __init__(self, tl: Tierline) -> None:
        self.tl = tl
        self._stmts: _Statements | None = None

    def lock_calls(self, conn: Connection, call_ids: Iterable[str]) -> None:
        """Serialise this transaction with any other writing events of these calls, until it
        commits. Each leg of a ring group looks at the others (an answer closes the legs that
        ended unanswered; a hangup asks whether another leg answered): with several nodes on
        PostgreSQL, two legs' events written at once would each miss the other's uncommitted
        row. One node already writes one transaction at a time; SQLite has one writer.
        The locks are taken in one order, so two groups of calls cannot deadlock."""
        if self.tl.db.is_sqlite:
            return
        keys = sorted({call_lock_key(call_id) for call_id in call_ids})
        if keys:
            conn.execute(_LOCK_CALLS, {"space": CALL_LOCK_SPACE, "keys": keys})

    def insert_records(
        self, conn: Connection, events: list[tuple[CallEvent, datetime]]
    ) -> set[Key]:
        """Record each event once (with when it was received); returns the keys of those
        seen for the first time."""
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
        stmt = self._statements().record
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

    def apply(
        self,
        conn: Connection,
        ev: CallEvent,
        now: datetime,
        hint: Found,
        operators: dict[str, Operator | None],
    ) -> CallRow | None:
        """What ``ev`` (seen for the first time) does to its leg's row: ringing and dialing
        create it, answered and hangup update it. Returns the row as updated (None for a
        ringing or dialing event: nothing to tell a browser beyond the pop)."""
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
                call.closed_legs = self._close_missed_legs(conn, ev)
            if call.status == CallStatus.RINGING:
                call.status = CallStatus.ANSWERED
        elif ev.event is CallEventType.HANGUP and call.ended_at is None:
            call.ended_at = at
            call.status = CallStatus.ENDED
            talk = (at - call.answered_at).total_seconds() if call.answered_at else 0
            call.duration_s = max(0, int(talk))
            call.long_call = call.duration_s >= LONG_CALL_SECONDS
            said = ev.extra.get("reason") == "answered_elsewhere"
            if call.answered_at is None and (said or self._answered_elsewhere(conn, ev)):
                call.status = CallStatus.TAKEN_ELSEWHERE
        if (call.answered_at, call.status, call.ended_at) != before:
            self._update(conn, call)
        return call

    def _update(self, conn: Connection, call: CallRow) -> None:
        self._statements().update.execute(
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

    def _close_missed_legs(self, conn: Connection, ev: CallEvent) -> list[CallRow]:
        """Legs of this call that other extensions reported over, unanswered, before this
        answer reached us (a PBX's webhooks for one call may overtake each other): they were
        taken elsewhere after all. Returns them, for their operators' pops to close."""
        params = {"call_id": ev.call_id, "ext": ev.extension}
        rows = self._statements().missed_legs.rows(conn, params)
        legs = [_as_row(row) for row in rows]
        for leg in legs:
            leg.status = CallStatus.TAKEN_ELSEWHERE
            self._update(conn, leg)
        return legs

    def _call_row(self, conn: Connection, ev: CallEvent) -> CallRow | None:
        """The call's row, as plain attributes to update in place (building a ``Call``
        entity cost more than the select: SQLModel validates on construction)."""
        row = self._statements().row.first(conn, {"call_id": ev.call_id, "ext": ev.extension})
        return None if row is None else _as_row(row)

    def _answered_elsewhere(self, conn: Connection, ev: CallEvent) -> bool:
        """Whether another extension answered this call (the webhook says no more than each
        leg's own events; Asterisk says it in the hangup's cause too)."""
        params = {"call_id": ev.call_id, "ext": ev.extension}
        return self._statements().answered_leg.first(conn, params) is not None

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
        self._statements().create.execute(
            conn,
            {
                "pbx_call_id": ev.call_id,
                "extension": ev.extension,
                "direction": ev.direction.value,
                "operator_id": operator.id if operator else None,
                "client_id": client_id,
                "number": (e164 or ev.customer_number)[:64],
                "status": CallStatus.RINGING.value,
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

    def _statements(self) -> _Statements:
        """The log path's statements, built once for this database's dialect."""
        if self._stmts is None:
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
            other_legs = (
                calls.c.pbx_call_id == sa.bindparam("call_id"),
                calls.c.extension != sa.bindparam("ext"),
            )
            self._stmts = _Statements(
                record=HotQuery(record, keys=_RECORD_KEYS),
                create=HotQuery(
                    insert(calls).on_conflict_do_nothing(
                        index_elements=["pbx_call_id", "extension"]
                    ),
                    keys=_CALL_KEYS,
                ),
                row=HotQuery(self._select_call(calls)),
                update=HotQuery(
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
                answered_leg=HotQuery(
                    sa.select(calls.c.id)
                    .where(*other_legs, calls.c.answered_at.is_not(None))
                    .limit(1)
                ),
                missed_legs=HotQuery(
                    sa.select(calls).where(
                        *other_legs,
                        calls.c.status == CallStatus.ENDED.value,
                        calls.c.answered_at.is_(None),
                    )
                ),
            )
        return self._stmts


def call_lock_key(call_id: str) -> int:
    """A call id's advisory-lock key: the same on every node (Python's ``hash`` is not)."""
    digest = hashlib.blake2b(call_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _as_row(row: Any) -> CallRow:
    return SimpleNamespace(**row._asdict(), closed_legs=[])


@dataclass(frozen=True, slots=True)
class _Statements:
    record: HotQuery  # an event, once (the unique key makes a repeat a no-op)
    create: HotQuery  # a call's row per extension; a row already there stays as it is
    row: HotQuery  # the row of (call id, extension)
    update: HotQuery  # its answer, status, end and duration
    answered_leg: HotQuery  # another extension's leg of the call, answered
    missed_legs: HotQuery  # other extensions' legs of the call, ended unanswered
