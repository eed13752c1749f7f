"""Compiled machines: a lead's walk through the four tiers, refusals, guards, the cache."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import EventNotAllowed, InvalidInput
from engine.workflow import (
    GUARDS,
    ClientFacts,
    apply_event,
    check_compiles,
    compile_machine,
    default_definition_text,
    enabled_events,
    load_definition,
    parse_definition,
)


@pytest.fixture(scope="module")
def defn():
    return load_definition(default_definition_text())


def test_a_lead_walks_through_all_four_tiers(defn) -> None:
    facts = ClientFacts(state=defn.initial, has_email=True)
    walk = [
        ("no_answer", "no_answer"),
        ("no_answer", "no_answer"),  # self-loop: the runtime keeps counting attempts
        ("call_back", "call_back_later"),
        ("offer_accepted", "qualified"),
        ("hand_to_sales", "presentation"),
        ("objection", "objections"),
        ("send_invoice", "invoice_sent"),
        ("no_answer", "invoice_sent"),
        ("overdue", "payment_overdue"),
        ("payment_received", "paid"),
        ("hand_to_key_accounts", "satisfaction_check"),
        ("satisfied", "upsell"),
        ("problem", "case_open"),
        ("resolve", "resolved"),
        ("back_to_key_accounts", "loyalty"),
        ("interested", "upsell"),
        ("upsell_accepted", "invoice_sent"),  # an accepted upsell is invoiced by sales
        ("do_not_call", "do_not_call"),
    ]
    tiers = []
    for event, expected in walk:
        before = facts.state
        target = apply_event(defn, facts, event)
        assert target == expected, f"{event} from {before}"
        assert facts.state == before  # the caller's facts are not touched
        assert defn.transition_for(before, event, facts).target == target
        facts = dataclasses.replace(facts, state=target)
        if not tiers or tiers[-1] != defn.tier_of(target):
            tiers.append(defn.tier_of(target))
    assert tiers == ["cold", "sales", "key_account", "support", "key_account", "sales", "cold"]
    counted = [defn.transition_for(s, "no_answer").counts_attempt for s in ("new", "invoice_sent")]
    assert counted == [True, True]


def test_event_not_allowed_lists_the_allowed_events(defn) -> None:
    facts = ClientFacts(state="new", has_email=True)
    with pytest.raises(EventNotAllowed) as err:
        apply_event(defn, facts, "payment_received")
    allowed = err.value.details["allowed"]
    assert allowed == sorted(defn.events_from("new"))
    assert {"no_answer", "call_back", "offer_accepted", "do_not_call"} <= set(allowed)
    assert "payment_received" not in allowed
    assert "'payment_received' is not allowed in state 'new'" in err.value.message
    assert err.value.status == 400


def test_final_state_allows_nothing(defn) -> None:
    with pytest.raises(EventNotAllowed) as err:
        apply_event(defn, ClientFacts(state="do_not_call"), "recycle")
    assert err.value.details["allowed"] == []
    assert err.value.message.endswith("allowed: none")


def test_guard_refusal(defn) -> None:
    facts = ClientFacts(state="objections", has_email=False)
    with pytest.raises(EventNotAllowed) as err:
        apply_event(defn, facts, "send_invoice")
    assert err.value.details["refused_by"] == ["has_email"]
    allowed = err.value.details["allowed"]
    assert "send_invoice" not in allowed and "objection" in allowed
    assert sorted(enabled_events(defn, facts)) == allowed
    # with an email address the same event goes through
    assert apply_event(defn, dataclasses.replace(facts, has_email=True), "send_invoice") == (
        "invoice_sent"
    )


def test_a_stored_state_not_in_the_definition_is_invalid_input(defn) -> None:
    with pytest.raises(InvalidInput) as err:
        apply_event(defn, ClientFacts(state="retired_state"), "no_answer")
    assert not isinstance(err.value, EventNotAllowed)
    assert "retired_state" in err.value.message


def test_cache_returns_the_same_class_for_the_same_digest(defn) -> None:
    text = default_definition_text()
    again = parse_definition(text)
    assert again is not defn and again.digest == defn.digest
    cls = compile_machine(defn)
    assert compile_machine(again) is cls
    assert set(cls.states_map) == set(defn.states)
    other = parse_definition(text.replace("title: New lead", "title: Fresh lead"))
    assert other.digest != defn.digest
    assert compile_machine(other) is not cls


def test_machine_rehydrates_a_stored_state_without_entering_initial(defn) -> None:
    cls = compile_machine(defn)
    facts = ClientFacts(state="invoice_sent")
    machine = cls(model=facts, state_field="state")
    assert facts.state == "invoice_sent"
    assert [s.value for s in machine.configuration] == ["invoice_sent"]


def test_every_guard_in_the_registry_resolves_on_the_facts() -> None:
    text = (
        "name: guards\ntiers: [cold]\ninitial: start\nstates:\n"
        "  start:\n    tier: cold\n    follow_up:\n      due: {after: 1h}\n      kind: call_back\n"
        "  end:\n    tier: cold\n    final: true\ntransitions:\n"
    ) + "".join(f"  - {{event: go_{g}, from: start, to: end, guard: {g}}}\n" for g in GUARDS)
    defn = load_definition(text)
    assert check_compiles(defn) == []
    facts = ClientFacts(
        state="start",
        segment_class="key",
        has_email=True,
        has_phone=True,
        attempts=0,
        open_invoice=True,
        has_owner=True,
    )
    for t in defn.transitions:
        passes = bool(getattr(facts, t.guard))
        if passes:
            assert apply_event(defn, facts, t.event) == "end"
        else:
            with pytest.raises(EventNotAllowed):
                apply_event(defn, facts, t.event)


def test_first_passing_guard_wins_then_the_fallback() -> None:
    text = """\
name: branch
tiers: [sales]
initial: invoiced
states:
  invoiced:
    tier: sales
    follow_up: {due: {after: 3d}, kind: payment_reminder}
  key_care:
    tier: sales
    final: true
  regular_care:
    tier: sales
    final: true
transitions:
  - {event: paid, from: invoiced, to: key_care, guard: is_key_client}
  - {event: paid, from: invoiced, to: regular_care}
"""
    defn = load_definition(text)
    key = ClientFacts(state="invoiced", segment_class="key")
    regular = ClientFacts(state="invoiced", segment_class="regular")
    assert apply_event(defn, key, "paid") == "key_care"
    assert apply_event(defn, regular, "paid") == "regular_care"
    assert defn.transition_for("invoiced", "paid", regular).target == "regular_care"
