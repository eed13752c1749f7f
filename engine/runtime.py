"""Apply events to clients: state, history, KPI and follow-ups commit together.

This is the only code that changes a client's workflow position. Whatever sends the event
(an operator's call outcome, a follow-up's automatic event, the API) goes through
:meth:`Runtime.apply` or :meth:`Runtime.apply_many`, and either all of an event is
committed or none of it.

One write path serves one event and a group of them (group commit): the group's clients are
read in one query, each event is decided in Python (:func:`engine.decide.decide`) in request
order, so several events for one client see each other's result, and the accepted ones are
written with a handful of executemany statements. A refused event writes nothing and its
error takes its slot; nothing is reported applied before the caller's commit returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col
from sqlmodel import select as orm_select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.calendar import CallingPolicy
from engine.clock import Clock
from engine.decide import ClientSnapshot, Decision, Rules, decide
from engine.definitions import DefinitionCache
from engine.errors import Conflict, InvalidInput, NotFound, TierlineError
from engine.followups.planner import PlanInput, plan
from engine.models import (
    Call,
    Client,
    ClientPhone,
    FollowUp,
    FollowUpStatus,
    KpiEvent,
    TransitionRecord,
    User,
)
from engine.storage.database import Database
from engine.workflow import StateDef

log = logging.getLogger("tierline.engine")

_CLIENTS = Client.__table__  # type: ignore[attr-defined]
_PHONES = ClientPhone.__table__  # type: ignore[attr-defined]
_FOLLOWUPS = FollowUp.__table__  # type: ignore[attr-defined]
_TRANSITIONS = TransitionRecord.__table__  # type: ignore[attr-defined]
_KPIS = KpiEvent.__table__  # type: ignore[attr-defined]
_CALLS = Call.__table__  # type: ignore[attr-defined]
_FOLLOWUP_COLUMNS = tuple(c.name for c in _FOLLOWUPS.columns if c.name != "id")


@dataclass(frozen=True)
class Applied:
    client_id: int
    event: str
    from_state: str
    to_state: str
    from_tier: str
    to_tier: str
    revision: int
    transition_id: int
    kpi: str | None
    followup: FollowUp | None
    owner_id: int | None


@dataclass(frozen=True)
class CallWrapUp:
    """The call(s) an outcome was recorded after: they take the outcome in the same commit."""

    call_ids: tuple[int, ...]
    checklist: dict[str, bool]
    notes: str


@dataclass(frozen=True)
class EventRequest:
    client_id: int
    event: str
    actor: User | None = None  # None: the system (a timer, an automatic event)
    expected_revision: int | None = None  # the revision the actor saw; stale -> Conflict
    note: str = ""
    call_id: int | None = None
    picked: datetime | None = None  # the follow-up time the operator agreed with the client
    wrap_up: CallWrapUp | None = None


class Runtime:
    def __init__(
        self,
        db: Database,
        cache: DefinitionCache,
        clock: Clock,
        policy: CallingPolicy,
        default_tz: str,
    ) -> None:
        self.db = db
        self.cache = cache
        self.clock = clock
        self.policy = policy
        self.default_tz = default_tz

    async def apply(self, req: EventRequest) -> Applied:
        async with self.db.transaction() as session:
            return await self.apply_in(session, req)

    async def apply_many(self, reqs: list[EventRequest]) -> list[Applied | TierlineError]:
        """Group commit: many events, one commit; each event still all-or-nothing.

        Results come back in request order, an error in the slot of each refused event.
        """
        async with self.db.transaction() as session:
            return await self.apply_many_in(session, reqs)

    async def apply_in(self, session: AsyncSession, req: EventRequest) -> Applied:
        """Apply within the caller's transaction; a refused event raises its error."""
        (result,) = await self.apply_many_in(session, [req])
        if isinstance(result, TierlineError):
            raise result
        return result

    async def apply_many_in(
        self, session: AsyncSession, reqs: list[EventRequest]
    ) -> list[Applied | TierlineError]:
        """Apply a group within the caller's transaction (the dispatcher claims and applies
        together). Refused events (NotFound, Conflict, EventNotAllowed, InvalidInput) write
        nothing; the others are written even so."""
        if not reqs:
            return []
        await session.flush()  # the caller's pending ORM rows go first (core writes below)
        conn = await session.connection()
        rules = Rules(self.clock.now(), self.policy, self.default_tz)
        current = await _load_clients(conn, sorted({r.client_id for r in reqs}))
        decisions: list[Decision | TierlineError] = []
        for req in reqs:
            client = current.get(req.client_id)
            if client is None:
                decisions.append(NotFound(f"client {req.client_id} does not exist"))
                continue
            try:
                defn = await self.cache.get(session, client.workflow_version_id)
                decision = decide(
                    defn,
                    client,
                    req.event,
                    rules,
                    actor=req.actor,
                    expected_revision=req.expected_revision,
                    picked=req.picked,
                )
            except TierlineError as exc:
                decisions.append(exc)
                continue
            current[req.client_id] = decision.after  # the next event for it starts here
            decisions.append(decision)
        return await _write(conn, reqs, decisions, rules.now)

    async def enroll_in(
        self,
        session: AsyncSession,
        client: Client,
        *,
        state: str | None = None,
        actor: User | None = None,
        note: str = "enrolled",
    ) -> FollowUp | None:
        """Put a new (flushed) client into the workflow with its first follow-up.

        ``client.workflow_version_id`` names the version; ``state`` defaults to its initial
        state. A campaign may enter clients further in (e.g. a mailing follow-up state).
        """
        now = self.clock.now()
        defn = await self.cache.get(session, client.workflow_version_id)
        state = state or defn.initial
        if state not in defn.states:
            raise InvalidInput(f"{state!r} is not a state of workflow {defn.name!r}")
        client.state, client.tier, client.attempts = state, defn.tier_of(state), 0
        session.add(client)
        await session.flush()
        session.add(
            TransitionRecord(
                client_id=client.id,  # type: ignore[arg-type]
                at=now,
                actor_id=actor.id if actor else None,
                event="enroll",
                from_state="",
                to_state=state,
                from_tier="",
                to_tier=client.tier,
                workflow_version_id=client.workflow_version_id,
                note=note,
            )
        )
        phone = await _primary_phone(session, client.id)  # type: ignore[arg-type]
        followup = self.plan_entry(client, defn.states[state], phone)
        if followup is not None:
            session.add(followup)
        await session.flush()
        return followup

    def plan_entry(self, client: Client, state: StateDef, phone: str | None) -> FollowUp | None:
        """The first follow-up of a client put into ``state`` from outside the workflow's
        transitions (enrolment, a campaign): no attempts yet, the client's own operator."""
        return plan(
            PlanInput(
                state=state,
                client=client,
                attempts=0,
                now=self.clock.now(),
                policy=self.policy,
                default_tz=self.default_tz,
                owner_id=client.owner_id,
                primary_e164=phone,
            )
        )


async def _primary_phone(session: AsyncSession, client_id: int) -> str | None:
    return (
        await session.exec(
            orm_select(ClientPhone.e164)
            .where(ClientPhone.client_id == client_id)
            .order_by(col(ClientPhone.id))
            .limit(1)
        )
    ).first()


async def _load_clients(conn: AsyncConnection, ids: list[int]) -> dict[int, ClientSnapshot]:
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


async def _write(
    conn: AsyncConnection,
    reqs: list[EventRequest],
    decisions: list[Decision | TierlineError],
    now: datetime,
) -> list[Applied | TierlineError]:
    """Write the accepted decisions with one executemany statement per table."""
    done = [(r, d) for r, d in zip(reqs, decisions, strict=True) if isinstance(d, Decision)]
    if not done:
        return list(decisions)  # type: ignore[arg-type]  # all errors
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
    tid_of = {id(d): tid for (_, d), tid in zip(done, tids, strict=True)}
    return [d if isinstance(d, TierlineError) else _applied(d, tid_of[id(d)]) for d in decisions]


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


def _applied(d: Decision, transition_id: int) -> Applied:
    return Applied(
        client_id=d.before.id,
        event=d.event,
        from_state=d.before.state,
        to_state=d.after.state,
        from_tier=d.before.tier,
        to_tier=d.after.tier,
        revision=d.after.revision,
        transition_id=transition_id,
        kpi=d.kpi,
        followup=d.followup,
        owner_id=d.after.owner_id,
    )
