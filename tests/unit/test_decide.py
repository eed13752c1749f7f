"""The runtime's decision (engine.decide) against python-statemachine, and its own rules."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from engine.calendar import CallingPolicy
from engine.decide import ClientSnapshot, Rules, decide
from engine.errors import Conflict, EventNotAllowed, InvalidInput
from engine.models import FollowUpStatus, Role, User
from engine.workflow import (
    ClientFacts,
    apply_event,
    default_definition_text,
    load_definition,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
RULES = Rules(now=NOW, policy=CallingPolicy(), default_tz="Europe/Moscow")


@pytest.fixture(scope="module")
def defn():
    return load_definition(default_definition_text())


def snapshot(state: str, tier: str, **kw) -> ClientSnapshot:
    base = dict(
        id=7,
        workflow_version_id=1,
        state=state,
        tier=tier,
        attempts=0,
        owner_id=None,
        revision=3,
        email=None,
        segment_class="regular",
        timezone=None,
        last_contact_at=None,
        primary_e164="+79161234567",
    )
    base.update(kw)
    return ClientSnapshot(**base)  # type: ignore[arg-type]


def operator(uid: int, tier: str) -> User:
    return User(id=uid, username=f"op{uid}", password_hash="x", role=Role.OPERATOR, tier=tier)


FACT_VARIATIONS = [
    dict(
        has_email=e, segment_class=s, attempts=a, open_invoice=i, has_owner=o, has_phone=p
    )
    for e, s, a, i, o, p in itertools.product(
        (True, False), ("key", "important", "regular"), (0, 1, 4), (True, False), (True, False),
        (True, False),
    )
]  # fmt: skip


def test_transition_table_and_statemachine_agree_everywhere(defn) -> None:
    events = sorted({t.event for t in defn.transitions} | {"no_such_event"})
    checked = refused = 0
    for state, variation in itertools.product(defn.states, FACT_VARIATIONS):
        facts = ClientFacts(state=state, **variation)
        for event in events:
            found = defn.transition_for(state, event, facts)
            try:
                target = apply_event(defn, facts, event)
            except EventNotAllowed:
                assert found is None, (state, event, variation)
                refused += 1
                continue
            assert found is not None and found.target == target, (state, event, variation)
            checked += 1
    # Both outcomes were really exercised, including guard refusals on the same event.
    assert checked > 500 and refused > 10_000
    guarded = [t for t in defn.transitions if t.guard]
    assert guarded, "the default definition has guarded transitions"


def test_decide_refuses_exactly_what_apply_event_refuses_with_the_same_error(defn) -> None:
    for state in defn.states:
        snap = snapshot(state, defn.tier_of(state), email=None, segment_class="regular")
        for event in sorted({t.event for t in defn.transitions}):
            try:
                expected: object = apply_event(defn, snap.facts(), event)
            except EventNotAllowed as exc:
                expected = exc.details
            try:
                got: object = decide(defn, snap, event, RULES).after.state
            except EventNotAllowed as exc:
                got = exc.details
            assert got == expected, (state, event)


def test_guard_refusal_names_the_allowed_events_and_the_guard(defn) -> None:
    snap = snapshot("presentation", "sales", email=None)
    with pytest.raises(EventNotAllowed) as err:
        decide(defn, snap, "send_invoice", RULES)
    assert err.value.details["refused_by"] == ["has_email"]
    assert "send_invoice" not in err.value.details["allowed"]
    applied = decide(defn, replace(snap, email="a@b.c"), "send_invoice", RULES)
    assert (applied.after.state, applied.kpi) == ("invoice_sent", "invoice")


def test_stale_revision_is_a_conflict_and_unknown_state_is_invalid(defn) -> None:
    snap = snapshot("new", "cold")
    with pytest.raises(Conflict) as err:
        decide(defn, snap, "no_answer", RULES, expected_revision=2)
    assert err.value.details == {"client_id": 7, "state": "new", "revision": 3}
    with pytest.raises(InvalidInput, match="not a state"):
        decide(defn, snapshot("vanished", "cold"), "no_answer", RULES)


def test_attempts_revision_owner_and_contact(defn) -> None:
    op = operator(5, "cold")
    first = decide(defn, snapshot("new", "cold"), "no_answer", RULES, actor=op)
    assert (first.after.state, first.after.attempts, first.after.revision) == ("no_answer", 1, 4)
    assert first.after.owner_id == 5 and first.after.last_contact_at == NOW
    second = decide(defn, first.after, "no_answer", RULES)  # the system: no contact
    assert second.after.attempts == 2 and second.after.last_contact_at == NOW
    assert second.kpi is None  # a self-loop enters nothing new
    # A hand-off to another tier leaves the client to that tier's pool.
    qualified = snapshot("qualified", "cold", owner_id=5)
    handed = decide(defn, qualified, "hand_to_sales", RULES)
    assert (handed.after.tier, handed.after.owner_id, handed.kpi) == ("sales", None, "presentation")


def test_the_planned_follow_up_is_the_planners(defn) -> None:
    decision = decide(defn, snapshot("new", "cold"), "no_answer", RULES, actor=operator(5, "cold"))
    fu = decision.followup
    assert fu is not None and fu.status == FollowUpStatus.PENDING
    assert (fu.client_id, fu.state, fu.tier, fu.attempt) == (7, "no_answer", "cold", 1)
    assert fu.due_at > NOW and "client time" in fu.reason
    rule = defn.states["no_answer"].follow_up
    at_max = snapshot("no_answer", "cold", attempts=rule.max_attempts - 1)
    last = decide(defn, at_max, "no_answer", RULES)
    assert last.followup.auto_event == rule.on_max_attempts and last.followup.due_at == NOW
