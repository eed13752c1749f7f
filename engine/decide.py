"""What one event does to one client, decided in Python from the client's row.

Pure: no database, no clock. Both write paths of :mod:`engine.runtime` (one event, and a
group of events committed together) call :func:`decide`, so the rules live here once.

The decision is taken on the definition's transition table (``transition_for`` over the
client's facts): the first transition of the event from the state whose guard passes, which
is the one the compiled python-statemachine machine takes. The library still compiles and
instance-checks every published version (``load_definition``) and ``apply_event`` stays the
reference; tests/unit/test_decide.py proves the two agree on the default definition.
Rebuilding a machine per event cost ~350 µs; the lookup costs well under a microsecond.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import cast

from engine.calendar import CallingPolicy
from engine.errors import Conflict, EventNotAllowed, InvalidInput
from engine.followups.planner import PlanInput, plan
from engine.models import Client, FollowUp, Role, User
from engine.workflow import ClientFacts, WorkflowDefinition, enabled_events

# States in which a client has an unpaid invoice (the open_invoice guard).
OPEN_INVOICE_STATES = frozenset({"invoice_sent", "payment_overdue"})


@dataclass(frozen=True)
class ClientSnapshot:
    """The columns of a client row an event reads or changes (plus its primary phone)."""

    id: int
    workflow_version_id: int
    state: str
    tier: str
    attempts: int
    owner_id: int | None
    revision: int
    email: str | None
    segment_class: str
    timezone: str | None
    last_contact_at: datetime | None
    primary_e164: str | None = None

    def facts(self) -> ClientFacts:
        return ClientFacts(
            state=self.state,
            segment_class=self.segment_class,
            has_email=bool(self.email),
            has_phone=self.primary_e164 is not None,
            attempts=self.attempts,
            open_invoice=self.state in OPEN_INVOICE_STATES,
            has_owner=self.owner_id is not None,
        )


@dataclass(frozen=True)
class Rules:
    """What every decision needs besides the client: the time and the calling rules."""

    now: datetime
    policy: CallingPolicy
    default_tz: str


@dataclass(frozen=True)
class Decision:
    event: str
    before: ClientSnapshot
    after: ClientSnapshot  # the client as this event leaves it; a later event starts here
    kpi: str | None
    followup: FollowUp | None  # the follow-up of the state entered (not yet written)


def decide(
    defn: WorkflowDefinition,
    client: ClientSnapshot,
    event: str,
    rules: Rules,
    *,
    actor: User | None = None,
    expected_revision: int | None = None,
    picked: datetime | None = None,
) -> Decision:
    """Apply ``event`` to ``client`` on paper, or raise the error the caller must report.

    Raises Conflict (the actor saw another revision), InvalidInput (the stored state is not
    in this definition) or EventNotAllowed (naming the events allowed now).
    """
    if expected_revision is not None and expected_revision != client.revision:
        raise conflict(client)
    if client.state not in defn.states:
        raise InvalidInput(
            f"state {client.state!r} is not a state of workflow {defn.name!r}", field="state"
        )
    facts = client.facts()
    transition = defn.transition_for(client.state, event, facts)
    if transition is None:
        err = EventNotAllowed(event, client.state, enabled_events(defn, facts))
        guards = [
            t.guard for t in defn.transitions_from(client.state) if t.event == event and t.guard
        ]
        if guards:  # the event exists here but its guards refused: say which
            err.details["refused_by"] = guards
        raise err

    target = transition.target
    to_tier = defn.tier_of(target)
    owner_id = client.owner_id
    if actor is not None and actor.role == Role.OPERATOR and actor.tier == to_tier:
        owner_id = actor.id  # whoever works the client on its tier becomes its operator
    elif to_tier != client.tier:
        owner_id = None  # a hand-off: the new tier's pool picks it up
    after = replace(
        client,
        state=target,
        tier=to_tier,
        attempts=client.attempts + 1 if transition.counts_attempt else 0,
        owner_id=owner_id,
        revision=client.revision + 1,
        last_contact_at=rules.now if actor is not None else client.last_contact_at,
    )
    followup = plan(
        PlanInput(
            state=defn.states[target],
            # The planner reads only ``id`` and ``timezone`` of the client.
            client=cast(Client, after),
            attempts=after.attempts,
            now=rules.now,
            policy=rules.policy,
            default_tz=rules.default_tz,
            owner_id=owner_id,
            picked=picked,
            primary_e164=client.primary_e164,
        )
    )
    return Decision(
        event=event,
        before=client,
        after=after,
        kpi=defn.states[target].kpi if target != client.state else None,
        followup=followup,
    )


def conflict(client: ClientSnapshot) -> Conflict:
    return Conflict(
        f"client {client.id} was changed by someone else (now in {client.state!r}); "
        "reload the card and record the outcome again if it still applies",
        client_id=client.id,
        state=client.state,
        revision=client.revision,
    )
