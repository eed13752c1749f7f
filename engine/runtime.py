"""Apply events to clients: state, history, KPI and follow-ups commit together.

This is the only code that changes a client's workflow position. Whatever sends the event
(an operator's call outcome, a follow-up's automatic event, the API) goes through
:meth:`Runtime.apply` or :meth:`Runtime.apply_many`, and either all of an event is
committed or none of it.

One write path serves one event and a group of them (group commit): the group's clients are
read in one query, each event is decided in Python (:func:`engine.decide.decide`) in request
order, so several events for one client see each other's result, and the accepted ones are
written with a handful of executemany statements (:mod:`engine.group_write`). A refused
event writes nothing and its error takes its slot; nothing is reported applied before the
caller's commit returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col
from sqlmodel import select as orm_select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.calendar import CallingPolicy
from engine.clock import Clock
from engine.decide import Decision, Rules, decide
from engine.definitions import DefinitionCache
from engine.errors import InvalidInput, NotFound, TierlineError
from engine.followups.planner import PlanInput, plan
from engine.group_write import load_clients, write_decisions
from engine.models import (
    Client,
    ClientPhone,
    FollowUp,
    TransitionRecord,
    User,
)
from engine.storage.database import Database
from engine.workflow import StateDef

log = logging.getLogger("tierline.engine")


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
        current = await load_clients(conn, sorted({r.client_id for r in reqs}))
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
        tids = iter(await write_decisions(conn, reqs, decisions, rules.now))
        return [d if isinstance(d, TierlineError) else _applied(d, next(tids)) for d in decisions]

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
