"""The operator's card: one client as a screen pop or the client page shows it.

The card is read one of two ways, with one result (``tests/integration/test_hot_query.py``
compares them on the same data):

- on the screen pop's hot path (``Database.read``: SQLite through the plain sqlite3 driver),
  in **one statement**: the client's row with its owner and pending follow-up, and its phones,
  last calls, history and notes as JSON arrays. The sqlite3 driver lets go of the GIL for
  every step of every statement, and beside a busy event loop each time the reader thread
  takes it back costs it ~40 µs of CPU and ~110 µs of wall time (measured: a thread running
  indexed selects beside one doing Python work between system calls; idle, ~10 µs). The five
  statements a card took were most of a pop's read under load. The pop's lookup
  (:func:`match_cards_sync`) reads the card in the same statement when the number is one
  client's: finding the caller and reading the card is one statement, not two (beside such a
  thread 317 against 401 µs of CPU, 522 against 721 µs of wall per pop; alone 138 against 145);
- everywhere else (PostgreSQL through asyncpg, the async API's aiosqlite), as the head and one
  small select per list: there a statement costs no GIL round trip.

Both are prebuilt Core selects run through :class:`engine.storage.hot.HotQuery`: no entities,
no statement construction per card.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.calendar import describe
from engine.clients import match_rows_sync, summary
from engine.definitions import DefinitionCache
from engine.errors import NotFound
from engine.followups.overdue import overdue_after
from engine.followups.planner import client_timezone
from engine.models import (
    Call,
    CallStatus,
    Client,
    ClientNote,
    ClientPhone,
    FollowUp,
    FollowUpStatus,
    TransitionRecord,
    User,
)
from engine.storage.hot import HotQuery, connection_of

__all__ = ["card", "card_sync", "match_cards_sync"]

_clients, _phones = Client.__table__, ClientPhone.__table__  # type: ignore[attr-defined]
_users, _followups = User.__table__, FollowUp.__table__  # type: ignore[attr-defined]
_calls, _history = Call.__table__, TransitionRecord.__table__  # type: ignore[attr-defined]
_notes = ClientNote.__table__  # type: ignore[attr-defined]
_other_legs = _calls.alias("other_legs")
_CID: sa.BindParameter[int] = sa.bindparam("cid")

# The client, its owner's name and its one pending follow-up (a unique index says one).
_HEAD_ROW = sa.select(
    _clients,
    _users.c.display_name.label("owner_name"),
    _followups.c.id.label("fu_id"),
    _followups.c.due_at.label("fu_due_at"),
    _followups.c.kind.label("fu_kind"),
    _followups.c.reason.label("fu_reason"),
    _followups.c.escalation_level.label("fu_escalation_level"),
    _followups.c.auto_event.label("fu_auto_event"),
    _followups.c.grace_s.label("fu_grace_s"),
).select_from(
    _clients.outerjoin(_users, _users.c.id == _clients.c.owner_id).outerjoin(
        _followups,
        sa.and_(
            _followups.c.client_id == _clients.c.id,
            # Inline, not a bound parameter: SQLite uses the partial index
            # ux_followups_one_pending only for a literal (139 µs -> 24 µs per card).
            _followups.c.status == sa.literal_column(f"'{FollowUpStatus.PENDING.value}'"),
        ),
    )
)
_HEAD = _HEAD_ROW.where(_clients.c.id == _CID)


def _listed_before(other: Any, leg: Any) -> sa.ColumnElement[bool]:
    """Whether ``other`` stands for the call rather than ``leg``: answered before unanswered,
    then the first written."""
    answered, unanswered = other.c.answered_at.is_not(None), other.c.answered_at.is_(None)
    return sa.or_(
        sa.and_(answered, leg.c.answered_at.is_(None)),
        sa.and_(answered, leg.c.answered_at.is_not(None), other.c.id < leg.c.id),
        sa.and_(unanswered, leg.c.answered_at.is_(None), other.c.id < leg.c.id),
    )


class _List:
    """One of the card's lists: its own select, or a JSON column beside the head's columns."""

    def __init__(self, name: str, select_for: Callable[[Any], sa.Select]) -> None:
        # ``select_for(client id)``: the list of one client given as a parameter, or of the
        # head row's client (correlated), for the JSON column.
        self.query = HotQuery(select_for(_CID))
        self.json_key = f"{name}_json"
        inner = select_for(_clients.c.id).correlate(_clients).subquery()
        # An empty list is '[]'. The LIMITed subquery feeds the aggregate in its ORDER BY
        # order (the test compares both ways on lists of several rows).
        self.json = sa.select(
            sa.func.json_group_array(sa.func.json_array(*inner.c))
        ).scalar_subquery()

    def decode(self, conn: Connection, head: Any) -> list[Any]:
        """The list's rows from its JSON column in ``head``, each value converted as the
        select's own rows would be (a datetime's text to an aware UTC datetime)."""
        return self.query.convert(conn, json.loads(getattr(head, self.json_key)))


_PHONES = _List(
    "phones",
    lambda cid: (
        sa.select(_phones.c.e164, _phones.c.raw, _phones.c.label)
        .where(_phones.c.client_id == cid)
        .order_by(_phones.c.id)
    ),
)
_CALLS = _List(
    "calls",
    lambda cid: (
        sa.select(
            _calls.c.id,
            _calls.c.direction,
            _calls.c.started_at,
            _calls.c.duration_s,
            _calls.c.outcome,
            _calls.c.answered_at,
            _calls.c.status,
        )
        # One line a call: a ring group's legs that others answered are not listed, and of
        # a call ringing (or rung) at several phones, only its answered leg, else its first.
        .where(
            _calls.c.client_id == cid,
            _calls.c.status != CallStatus.TAKEN_ELSEWHERE.value,
            ~sa.exists().where(
                _other_legs.c.pbx_call_id == _calls.c.pbx_call_id,
                _other_legs.c.id != _calls.c.id,
                _other_legs.c.status != CallStatus.TAKEN_ELSEWHERE.value,
                _listed_before(_other_legs, _calls),
            ),
        )
        .order_by(_calls.c.started_at.desc())
        .limit(5)
    ),
)
_HISTORY = _List(
    "history",
    lambda cid: sa.select(
        _history.c.at, _history.c.event, _history.c.from_state, _history.c.to_state,
        _history.c.note,
    )
    .where(_history.c.client_id == cid)
    .order_by(_history.c.id.desc())
    .limit(10),
)  # fmt: skip
_NOTES = _List(
    "notes",
    lambda cid: (
        sa.select(_notes.c.at, _notes.c.text)
        .where(_notes.c.client_id == cid)
        .order_by(_notes.c.id.desc())
        .limit(10)
    ),
)
_LISTS = (_PHONES, _CALLS, _HISTORY, _NOTES)
_CARD_HEAD = HotQuery(_HEAD)
_CARD_ONE = HotQuery(_HEAD.add_columns(*(part.json.label(part.json_key) for part in _LISTS)))

_E164: sa.BindParameter[str] = sa.bindparam("e164")
# Whether the number is one client's: only then is a card shown, so only then are the lists
# read (a switchboard shared by ten clients reads ten heads, not ten cards). Phone rows, not
# distinct clients (no temporary B-tree): a client holding the number twice gets no lists
# here, and card_sync reads its card by id. Uncorrelated: each of its four uses (one per
# list) runs once per statement, an index probe, whatever the number of rows.
_ONE_CLIENT = (
    sa.select(sa.func.count())
    .select_from(sa.select(_phones.c.id).where(_phones.c.e164 == _E164).limit(2).subquery())
    .scalar_subquery()
    == 1
)
# The clients with a number, in id order, each as a card's head; with the lists when the
# number is one client's.
_BY_PHONE = HotQuery(
    _HEAD_ROW.add_columns(
        *(sa.case((_ONE_CLIENT, part.json)).label(part.json_key) for part in _LISTS)
    )
    .where(_clients.c.id.in_(sa.select(_phones.c.client_id).where(_phones.c.e164 == _E164)))
    .order_by(_clients.c.id)
    .limit(sa.bindparam("limit"))
)


async def card(
    session: AsyncSession, cache: DefinitionCache, client_id: int, *, default_tz: str
) -> dict[str, object]:
    return await session.run_sync(lambda s: card_sync(s, cache, client_id, default_tz=default_tz))


def match_cards_sync(session: Session | Connection, e164: str, *, limit: int) -> list[Any]:
    """The clients with the number ``e164``, in id order: ``match_rows_sync``'s rows, and on
    SQLite's hot path (pysqlite) each a card's head, carrying its lists when the number is
    one client's — so a screen pop finds the caller and reads the card in one statement
    (``card_sync(..., found=row)``)."""
    conn = connection_of(session)
    if conn.dialect.driver != "pysqlite":
        return match_rows_sync(conn, e164, limit)
    return _BY_PHONE.rows(conn, {"e164": e164, "limit": limit})


def card_sync(
    session: Session | Connection,
    cache: DefinitionCache,
    client_id: int,
    *,
    default_tz: str,
    found: Any = None,
) -> dict[str, object]:
    """The operator's card. Synchronous, so the screen pop builds it in its one worker-thread
    hop (Database.read); the async API runs the same code through ``run_sync``. ``found``:
    the client's row from :func:`match_cards_sync`; when it carries the lists, nothing more
    is read but the workflow definition (cached)."""
    conn = connection_of(session)
    params = {"cid": client_id}
    one = conn.dialect.driver == "pysqlite"
    if one and getattr(found, _PHONES.json_key, None) is not None:
        client = found
    else:
        client = (_CARD_ONE if one else _CARD_HEAD).first(conn, params)
    if client is None:
        raise NotFound(f"client {client_id} does not exist")
    if one:
        lists = [part.decode(conn, client) for part in _LISTS]
    else:
        lists = [part.query.rows(conn, params) for part in _LISTS]
    numbers, calls, history, notes = lists
    defn = cache.get_sync(conn, client.workflow_version_id)
    return _card(client, numbers, calls, history, notes, defn, default_tz)


def _card(
    client: Any,
    numbers: Sequence[Any],
    calls: Sequence[Any],
    history: Sequence[Any],
    notes: Sequence[Any],
    defn: Any,
    default_tz: str,
) -> dict[str, object]:
    # client_timezone reads only .timezone: the row has it.
    tz = client_timezone(client, numbers[0].e164 if numbers else None, default_tz)
    state = defn.states.get(client.state)
    followup = None
    if client.fu_id is not None:
        followup = {
            "id": client.fu_id,
            "due_at": client.fu_due_at.isoformat(),
            "when": describe(client.fu_due_at, tz),
            "kind": client.fu_kind,
            "reason": client.fu_reason,
            "escalation_level": client.fu_escalation_level,
            "automatic": client.fu_auto_event is not None,
            # The browser marks the call overdue from this moment on, as the queue does (an
            # automatic event is the engine's to fire, never an operator's to be late for).
            "overdue_at": None
            if client.fu_auto_event is not None
            else overdue_after(client.fu_due_at, client.fu_grace_s).isoformat(),
        }
    return {
        **summary(client),
        "email": client.email,
        "timezone": tz,
        "segment_class": client.segment_class,
        "custom": client.custom,
        "source": client.source,
        "do_not_call": client.do_not_call,
        "revision": client.revision,
        "state_title": state.title if state else client.state,
        "owner": client.owner_name,
        "phones": [{"e164": p.e164, "raw": p.raw, "label": p.label} for p in numbers],
        "script": state.script if state else "",
        "checklist": list(state.checklist) if state else [],
        "events": defn.operator_events_from(client.state) if state else [],
        "next_followup": followup,
        "calls": [
            {
                "id": c.id,
                "direction": c.direction,
                "started_at": c.started_at.isoformat(),
                "duration_s": c.duration_s,
                "outcome": c.outcome,
                "answered": c.answered_at is not None,
                "status": c.status,  # ringing, answered, ended
            }
            for c in calls
        ],
        "history": [
            {
                "at": h.at.isoformat(),
                "event": h.event,
                "from": h.from_state,
                "to": h.to_state,
                "note": h.note,
            }
            for h in history
        ],
        "notes": [{"at": n.at.isoformat(), "text": n.text} for n in notes],
    }
