"""The SQL of one group commit (:mod:`engine.runtime`): the group's clients read, and locked
on PostgreSQL, in two queries; the accepted decisions written with one executemany statement
per table (clients, transitions, follow-ups, KPI events, the calls they wrap up).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.decide import ClientSnapshot, Decision
from engine.errors import Conflict, TierlineError
from engine.models import (
    Call,
    Client,
    ClientPhone,
    FollowUp,
    FollowUpStatus,
    KpiEvent,
    TransitionRecord,
)

if TYPE_CHECKING:
    from engine.runtime import EventRequest

_CLIENTS = Client.__table__  # type: ignore[attr-defined]
_PHONES = ClientPhone.__table__  # type: ignore[attr-defined]
_FOLLOWUPS = FollowUp.__table__  # type: ignore[attr-defined]
_TRANSITIONS = TransitionRecord.__table__  # type: ignore[attr-defined]
_KPIS = KpiEvent.__table__  # type: ignore[attr-defined]
_CALLS = Call.__table__  # type: ignore[attr-defined]
_FOLLOWUP_COLUMNS = tuple(c.name for c in _FOLLOWUPS.columns if c.name != "id")


async def load_clients(conn: AsyncConnection, ids: list[int]) -> dict[int, ClientSnapshot]:
    """The group's clients and their primary phones, two queries whatever the group's size.

    On PostgreSQL the rows stay locked until the commit, so what is decided on is what is
    written over. Lock order: the pending follow-ups, then the client rows (both by id), as
    the dispatcher takes them; the other order deadlocks with an automatic event.
    """
    c = _CLIENTS.c
    query = (
        select(
            c.id,
            c.workflow_version_id,
            c.state,
            c.tier,
            c.attempts,
            c.owner_id,
            c.revision,
            c.email,
            c.segment_class,
            c.timezone,
            c.last_contact_at,
        )
        .where(c.id.in_(ids))
        .order_by(c.id)
    )
    if conn.dialect.name != "sqlite":  # SQLite: the database's write lock serialises us
        f = _FOLLOWUPS.c
        await conn.execute(
            select(f.id)
            .where(f.client_id.in_(ids), f.status == FollowUpStatus.PENDING)
            .order_by(f.id)
            .with_for_update()
        )
        query = query.with_for_update()
    rows = (await conn.execute(query)).all()
    phones: dict[int, str] = {}
    p = _PHONES.c
    for client_id, e164 in await conn.execute(
        select(p.client_id, p.e164).where(p.client_id.in_(ids)).order_by(p.id)
    ):
        phones.setdefault(client_id, e164)  # the first number given is the primary one
    return {
        row.id: ClientSnapshot(**row._asdict(), primary_e164=phones.get(row.id)) for row in rows
    }


async def write_decisions(
    conn: AsyncConnection,
    reqs: list[EventRequest],
    decisions: list[Decision | TierlineError],
    now: datetime,
) -> list[int]:
    """Write the accepted decisions with one executemany statement per table; the ids of
    their transition records, in order."""
    done = [(r, d) for r, d in zip(reqs, decisions, strict=True) if isinstance(d, Decision)]
    if not done:
        return []
    first: dict[int, Decision] = {}  # per client: its first and last event of the group
    last: dict[int, Decision] = {}
    for _, d in done:
        first.setdefault(d.before.id, d)
        last[d.before.id] = d

    await _move_clients(conn, first, last, now)
    tids = await _insert_returning_ids(
        conn, _TRANSITIONS, [_transition_row(r, d, now) for r, d in done]
    )
    # Whatever moved the client (the call the follow-up asked for, or its automatic event)
    # is what its pending follow-up was owed for.
    await conn.execute(
        update(_FOLLOWUPS)
        .where(_FOLLOWUPS.c.client_id.in_(list(last)), _FOLLOWUPS.c.status == "pending")
        .values(status=FollowUpStatus.DONE, closed_at=now)
    )
    await _insert_followups(conn, [d for _, d in done], last, now)
    kpis = [
        {
            "at": now,
            "kind": d.kpi,
            "user_id": r.actor.id if r.actor else None,
            "tier": d.before.tier,
            "client_id": d.before.id,
            "transition_id": tid,
        }
        for (r, d), tid in zip(done, tids, strict=True)
        if d.kpi
    ]
    if kpis:
        await conn.execute(insert(_KPIS), kpis)
    calls = [
        {"b_id": call_id, "b_outcome": r.event, "b_checklist": r.wrap_up.checklist,
         "b_notes": r.wrap_up.notes, "b_client": d.before.id}
        for r, d in done if r.wrap_up is not None
        for call_id in r.wrap_up.call_ids
    ]  # fmt: skip
    if calls:
        await conn.execute(
            update(_CALLS)
            .where(_CALLS.c.id == bindparam("b_id"))
            .values(
                outcome=bindparam("b_outcome"),
                checklist=bindparam("b_checklist"),
                notes=bindparam("b_notes"),
                client_id=bindparam("b_client"),
            ),
            calls,
        )
    return tids


async def _move_clients(
    conn: AsyncConnection, first: dict[int, Decision], last: dict[int, Decision], now: datetime
) -> None:
    """One UPDATE per client with where its last event of the group left it."""
    c = _CLIENTS.c
    params = [
        {
            "b_id": cid,
            "b_rev": first[cid].before.revision,
            "b_state": d.after.state,
            "b_tier": d.after.tier,
            "b_attempts": d.after.attempts,
            "b_owner": d.after.owner_id,
            "b_new_rev": d.after.revision,
            "b_now": now,
            "b_event": d.event,
            "b_contact": d.after.last_contact_at,
        }
        for cid, d in last.items()
    ]
    result = await conn.execute(
        update(_CLIENTS)
        # The revision check stays as a second line of defence behind the row locks.
        .where(c.id == bindparam("b_id"), c.revision == bindparam("b_rev"))
        .values(
            state=bindparam("b_state"),
            tier=bindparam("b_tier"),
            attempts=bindparam("b_attempts"),
            owner_id=bindparam("b_owner"),
            revision=bindparam("b_new_rev"),
            updated_at=bindparam("b_now"),
            last_outcome=bindparam("b_event"),
            last_contact_at=bindparam("b_contact"),
        ),
        params,
    )
    if len(params) == 1 or conn.dialect.supports_sane_multi_rowcount:
        if result.rowcount != len(params):  # raising rolls the whole transaction back
            raise Conflict(
                "a client was changed by someone else while its event was applied; "
                "reload the card and record the outcome again if it still applies"
            )


async def _insert_followups(
    conn: AsyncConnection, decisions: list[Decision], last: dict[int, Decision], now: datetime
) -> None:
    """Insert each event's planned follow-up, ids set on the returned objects.

    Only the client's last event of the group leaves its follow-up pending; one planned by
    an earlier event of the group is inserted already done, closed at the same instant,
    exactly as applying the events one after the other would have left it.
    """
    planned = [d for d in decisions if d.followup is not None]
    if not planned:
        return
    for d in planned:
        if last[d.before.id] is not d:
            d.followup.status, d.followup.closed_at = FollowUpStatus.DONE, now  # type: ignore[union-attr]
    rows = [{k: getattr(d.followup, k) for k in _FOLLOWUP_COLUMNS} for d in planned]
    ids = await _insert_returning_ids(conn, _FOLLOWUPS, rows)
    for d, fid in zip(planned, ids, strict=True):
        d.followup.id = fid  # type: ignore[union-attr]


async def _insert_returning_ids(conn: AsyncConnection, table: Table, rows: list[dict]) -> list[int]:
    """Insert the rows in one statement (or a few pages) and return their ids in row order."""
    if conn.dialect.name == "sqlite":
        # SQLAlchemy can only keep RETURNING in parameter order on SQLite by inserting row
        # by row (90 µs each). SQLite gives each new row max(rowid) + 1, in VALUES order,
        # and we are its only writer (the database's write lock): sorting the ids is that order.
        result = await conn.execute(insert(table).returning(table.c.id), rows)
        return sorted(result.scalars().all())
    result = await conn.execute(
        insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
    )
    return list(result.scalars().all())


def _transition_row(req: EventRequest, d: Decision, now: datetime) -> dict:
    return {
        "client_id": d.before.id,
        "at": now,
        "actor_id": req.actor.id if req.actor else None,
        "event": d.event,
        "from_state": d.before.state,
        "to_state": d.after.state,
        "from_tier": d.before.tier,
        "to_tier": d.after.tier,
        "workflow_version_id": d.before.workflow_version_id,
        "call_id": req.call_id,
        "kpi": d.kpi,
        "note": req.note,
    }
