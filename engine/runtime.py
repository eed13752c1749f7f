"""Apply one event to one client: state, history, KPI and follow-ups commit together.

This is the only code that changes a client's workflow position. Whatever sends the event
(an operator's call outcome, a follow-up's automatic event, the API) goes through
:meth:`Runtime.apply`, and either all of it is committed or none of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.calendar import CallingPolicy
from engine.clock import Clock
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
    Role,
    TransitionRecord,
    User,
)
from engine.storage.database import Database
from engine.workflow import ClientFacts, StateDef, apply_event

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

        Every event runs in its own savepoint, so a refused one leaves no trace and does
        not stop the others. Nothing is reported applied before the single commit returns.
        """
        results: list[Applied | TierlineError] = []
        async with self.db.transaction() as session:
            for req in reqs:
                try:
                    async with session.begin_nested():
                        results.append(await self.apply_in(session, req))
                except TierlineError as exc:
                    results.append(exc)
        return results

    async def apply_in(self, session: AsyncSession, req: EventRequest) -> Applied:
        """Apply within the caller's transaction (the dispatcher claims and applies together)."""
        now = self.clock.now()
        client = await session.get(Client, req.client_id, populate_existing=True)
        if client is None:
            raise NotFound(f"client {req.client_id} does not exist")
        if req.expected_revision is not None and req.expected_revision != client.revision:
            raise _conflict(client)
        defn = await self.cache.get(session, client.workflow_version_id)
        phone = await _primary_phone(session, client.id)  # type: ignore[arg-type]
        facts = ClientFacts(
            state=client.state,
            segment_class=client.segment_class,
            has_email=bool(client.email),
            has_phone=phone is not None,
            attempts=client.attempts,
            open_invoice=client.state in ("invoice_sent", "payment_overdue"),
            has_owner=client.owner_id is not None,
        )
        target = apply_event(defn, facts, req.event)
        transition = defn.transition_for(client.state, req.event, facts)
        attempts = client.attempts + 1 if transition and transition.counts_attempt else 0
        from_state, from_tier = client.state, client.tier
        to_tier = defn.tier_of(target)

        owner_id = client.owner_id
        actor = req.actor
        if actor is not None and actor.role == Role.OPERATOR and actor.tier == to_tier:
            owner_id = actor.id  # whoever works the client on its tier becomes its operator
        elif to_tier != from_tier:
            owner_id = None  # a hand-off: the new tier's pool picks it up

        # The revision check in the WHERE clause is what makes two simultaneous actors safe:
        # the loser updates no row and rolls back everything it did.
        result = await session.exec(
            update(Client)  # type: ignore[call-overload]
            .where(col(Client.id) == client.id, col(Client.revision) == client.revision)
            .values(
                state=target,
                tier=to_tier,
                attempts=attempts,
                owner_id=owner_id,
                revision=client.revision + 1,
                updated_at=now,
                last_outcome=req.event,
                last_contact_at=now if actor is not None else client.last_contact_at,
            )
            # The row is re-read by whoever needs it; evaluating the WHERE in Python would
            # only cost time (and would bump the in-memory revision under our feet).
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise _conflict(client)

        kpi = defn.states[target].kpi if target != from_state else None
        record = TransitionRecord(
            client_id=client.id,  # type: ignore[arg-type]
            at=now,
            actor_id=actor.id if actor else None,
            event=req.event,
            from_state=from_state,
            to_state=target,
            from_tier=from_tier,
            to_tier=to_tier,
            workflow_version_id=client.workflow_version_id,
            call_id=req.call_id,
            kpi=kpi,
            note=req.note,
        )
        session.add(record)
        await session.flush()
        if kpi:
            session.add(
                KpiEvent(
                    at=now,
                    kind=kpi,
                    user_id=actor.id if actor else None,
                    tier=from_tier,
                    client_id=client.id,  # type: ignore[arg-type]
                    transition_id=record.id,  # type: ignore[arg-type]
                )
            )
        await _close_pending(session, client.id, now)  # type: ignore[arg-type]
        if req.wrap_up is not None:
            await session.exec(
                update(Call)  # type: ignore[call-overload]
                .where(col(Call.id).in_(req.wrap_up.call_ids))
                .values(
                    outcome=req.event,
                    checklist=req.wrap_up.checklist,
                    notes=req.wrap_up.notes,
                    client_id=client.id,
                )
                .execution_options(synchronize_session=False)
            )
        followup = await self._schedule(
            session, defn.states[target], client, attempts, owner_id, phone, req.picked
        )
        return Applied(
            client_id=client.id,  # type: ignore[arg-type]
            event=req.event,
            from_state=from_state,
            to_state=target,
            from_tier=from_tier,
            to_tier=to_tier,
            revision=client.revision + 1,
            transition_id=record.id,  # type: ignore[arg-type]
            kpi=kpi,
            followup=followup,
            owner_id=owner_id,
        )


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
        return await self._schedule(
            session, defn.states[state], client, 0, client.owner_id, phone, None
        )

    async def _schedule(
        self,
        session: AsyncSession,
        state: StateDef,
        client: Client,
        attempts: int,
        owner_id: int | None,
        phone: str | None,
        picked: datetime | None,
    ) -> FollowUp | None:
        """Plan the follow-up of the state the client has just entered, and add it."""
        followup = plan(
            PlanInput(
                state=state,
                client=client,
                attempts=attempts,
                now=self.clock.now(),
                policy=self.policy,
                default_tz=self.default_tz,
                owner_id=owner_id,
                picked=picked,
                primary_e164=phone,
            )
        )
        if followup is not None:
            session.add(followup)
        await session.flush()
        return followup


async def _primary_phone(session: AsyncSession, client_id: int) -> str | None:
    return (
        await session.exec(
            select(ClientPhone.e164)
            .where(ClientPhone.client_id == client_id)
            .order_by(col(ClientPhone.id))
            .limit(1)
        )
    ).first()


async def _close_pending(session: AsyncSession, client_id: int, now: datetime) -> None:
    # Whatever moved the client (the call the follow-up asked for, or its automatic event)
    # is what the follow-up was owed for.
    await session.exec(
        update(FollowUp)  # type: ignore[call-overload]
        .where(
            col(FollowUp.client_id) == client_id,
            col(FollowUp.status) == FollowUpStatus.PENDING,
        )
        .values(
            status=FollowUpStatus.DONE,
            closed_at=now,
        )
    )


def _conflict(client: Client) -> Conflict:
    return Conflict(
        f"client {client.id} was changed by someone else (now in {client.state!r}); "
        "reload the card and record the outcome again if it still applies",
        client_id=client.id,
        state=client.state,
        revision=client.revision,
    )
