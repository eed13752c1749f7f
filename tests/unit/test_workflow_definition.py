"""Parsing workflow definitions: the default one, durations, line numbers, structure errors."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.errors import DefinitionError, InvalidInput
from engine.workflow import (
    ClientFacts,
    default_definition_text,
    load_definition,
    parse_definition,
    parse_duration,
    validate,
)


def line_with(text: str, needle: str, nth: int | None = None) -> int:
    """The 1-based line holding ``needle``: its only occurrence, or the nth (0-based)."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    if nth is not None:
        return hits[nth]
    assert len(hits) == 1, f"{needle!r} found on lines {hits}"
    return hits[0]


MINI = """\
name: mini
tiers: [cold, sales]
initial: new
states:
  new:
    tier: cold
    title: Brand new
    script: |
      Say hello.
      Ask a question.
    checklist: [contact, diagnosis]
    follow_up:
      due: {after: 1d12h}
      kind: call_back
      owner: tier
  selling:
    tier: sales
    kpi: presentation
    follow_up:
      due: {next_business_day: 10:00}
      kind: call_back
      max_attempts: 3
      on_max_attempts: drop
  done:
    tier: sales
    final: true
transitions:
  - {event: accept, from: new, to: selling}
  - {event: no_answer, from: selling, to: selling, counts_attempt: true}
  - event: drop
    from: [new, selling]
    to: done
    guard: has_email
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", dt.timedelta(minutes=30)),
        ("2h", dt.timedelta(hours=2)),
        ("3d", dt.timedelta(days=3)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        ("0m", dt.timedelta(0)),
        ("90s", dt.timedelta(seconds=90)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "h2", "2x", "1h1d", "-3d", "2 hours"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


def test_default_definition_loads_with_no_problems() -> None:
    text = default_definition_text()
    defn = load_definition(text)
    assert validate(defn) == []
    assert defn.name == "telemarketing"
    assert defn.tiers == ("cold", "sales", "key_account", "support")
    assert defn.initial == "new"
    assert len(defn.digest) == 64 and defn.source == text


def test_default_definition_covers_the_department() -> None:
    defn = load_definition(default_definition_text())
    s = defn.states
    assert {n for n, st in s.items() if st.kpi} == {"presentation", "invoice_sent", "paid"}
    assert (s["presentation"].kpi, s["invoice_sent"].kpi, s["paid"].kpi) == (
        "presentation", "invoice", "payment")  # fmt: skip
    assert [n for n, st in s.items() if st.final] == ["do_not_call"]
    for name, state in s.items():
        assert state.final or state.follow_up is not None, name
        assert state.script.strip(), f"{name} has no script"
        if not state.final:
            assert state.checklist, f"{name} has no checklist"
        if state.tier in ("cold", "sales") and not state.final:
            assert defn.transition_for(name, "do_not_call").target == "do_not_call", name
    assert s["qualified"].follow_up.auto_event == "hand_to_sales"
    assert s["qualified"].follow_up.due.after == dt.timedelta(0)
    recycle = s["not_interested"].follow_up
    assert (recycle.auto_event, recycle.kind, recycle.owner) == ("recycle", "recycle", "tier")
    assert recycle.due.after == dt.timedelta(days=90)
    assert defn.transition_for("not_interested", "recycle").target == "new"
    invoice = s["invoice_sent"].follow_up
    assert (invoice.kind, invoice.due.after) == ("payment_reminder", dt.timedelta(days=3))
    assert invoice.max_attempts and invoice.on_max_attempts in defn.events_from("invoice_sent")
    paid = s["paid"].follow_up
    assert (paid.auto_event, paid.kind) == ("hand_to_key_accounts", "hand_off")
    assert s["call_back_later"].follow_up.due.mode == "operator_picks"
    assert s["loyalty"].follow_up.due.after == dt.timedelta(days=30)
    assert defn.transition_for("upsell", "upsell_accepted").target == "invoice_sent"
    assert defn.transition_for("resolved", "back_to_key_accounts").target == "loyalty"
    assert defn.tier_of("case_open") == "support"
    # the operator's outcome buttons leave out what the system fires itself
    assert "hand_to_sales" not in defn.operator_events_from("qualified")
    assert "no_answer" in defn.operator_events_from("new")


def test_parse_keeps_values_and_lines() -> None:
    defn = parse_definition(MINI)
    new = defn.states["new"]
    assert new.line == line_with(MINI, "  new:")
    assert new.title == "Brand new"
    assert new.script == "Say hello.\nAsk a question.\n"
    assert new.checklist == ("contact", "diagnosis")
    assert new.line_of("checklist") == line_with(MINI, "checklist:")
    rule = new.follow_up
    assert rule.due.mode == "after" and rule.due.after == dt.timedelta(days=1, hours=12)
    assert (rule.kind, rule.owner, rule.max_attempts) == ("call_back", "tier", None)
    assert rule.grace == dt.timedelta(hours=2)  # documented default
    assert rule.escalation == ("supervisor",)
    assert rule.line == new.line_of("follow_up") == new.line + 7
    selling = defn.states["selling"]
    assert selling.title == "Selling"
    # an unquoted 10:00 is a YAML 1.1 sexagesimal int (600); the raw text is what counts
    assert selling.follow_up.due.at == dt.time(10, 0)
    assert selling.follow_up.line_of("max_attempts") == line_with(MINI, "max_attempts: 3")
    assert selling.line_of("kpi") == line_with(MINI, "kpi: presentation")
    accept, no_answer, drop = defn.transitions
    assert accept.line == line_with(MINI, "event: accept")
    assert no_answer.counts_attempt and not accept.counts_attempt
    assert drop.line == line_with(MINI, "- event: drop")
    assert drop.sources == ("new", "selling")
    assert drop.line_of("guard") == line_with(MINI, "guard: has_email")
    assert defn.lines["initial"] == line_with(MINI, "initial: new")


def test_operator_picks_defaults() -> None:
    picks = MINI.replace("due: {after: 1d12h}", "due: {operator_picks: true}")
    assert parse_definition(picks).states["new"].follow_up.due.default_after == dt.timedelta(1)
    zero = MINI.replace("due: {after: 1d12h}", "due: {operator_picks: true, default_after: 0m}")
    due = parse_definition(zero).states["new"].follow_up.due
    assert (due.mode, due.default_after, due.after) == ("operator_picks", dt.timedelta(0), None)


def test_events_and_transition_lookup() -> None:
    defn = parse_definition(MINI)
    assert defn.events_from("new") == ["accept", "drop"]
    assert defn.events_from("selling") == ["no_answer", "drop"]
    assert defn.events_from("done") == []
    assert defn.transition_for("new", "drop").target == "done"
    assert defn.transition_for("new", "no_answer") is None
    assert defn.transition_for("new", "drop", ClientFacts(state="new")) is None
    assert defn.transition_for("new", "drop", ClientFacts(state="new", has_email=True))
    assert defn.tier_of("selling") == "sales"


def test_mermaid_has_every_state_grouped_by_tier() -> None:
    defn = load_definition(default_definition_text())
    chart = defn.to_mermaid()
    assert chart.startswith("stateDiagram-v2\n")
    for tier in defn.tiers:
        assert f"as tier_{tier} {{" in chart
    for name, state in defn.states.items():
        assert f'"{state.title} ({name})" as s_{name}' in chart
    assert "s_qualified --> s_presentation : hand_to_sales" in chart
    assert "s_objections --> s_invoice_sent : send_invoice [has_email]" in chart
    assert "[*] --> s_new" in chart and "s_do_not_call --> [*]" in chart


def test_yaml_syntax_error_names_its_line() -> None:
    broken = MINI.replace("kind: call_back\n      owner", "kind: [call_back\n      owner")
    with pytest.raises(DefinitionError) as err:
        parse_definition(broken)
    (problem,) = err.value.problems
    assert "YAML syntax error" in problem.message
    # PyYAML reports an unclosed flow sequence where it next finds a key it cannot take
    assert problem.line == line_with(broken, "owner: tier")

    tab = "name: x\ntiers: [a]\n\tinitial: new\n"
    with pytest.raises(DefinitionError) as err:
        parse_definition(tab)
    assert err.value.problems[0].line == 3


@pytest.mark.parametrize(
    ("old", "new", "needle", "words"),
    [
        ("  done:\n    tier: sales\n", "  done:\n", "  done:", "'tier' is missing"),
        (
            "    follow_up:\n      due: {after: 1d12h}\n      kind: call_back\n",
            "    follow_up:  # no kind\n      due: {after: 1d12h}\n",
            "follow_up:  # no kind",
            "'kind' is missing",
        ),
        ("due: {after: 1d12h}", "due: {after: 1x}", "due: {after: 1x}", "bad duration '1x'"),
        ("final: true", "final: yes please", "final: yes please", "true or false"),
        ("max_attempts: 3", "max_attempts: three", "max_attempts: three", "whole number"),
        ("max_attempts: 3", "max_attempts: 0", "max_attempts: 0", "whole number"),
        (
            "      kind: call_back\n      owner: tier\n",
            "      kind: call_back\n      owner: tier\n      grace: 0m\n",
            "grace: 0m",
            "grace must be longer than 0",
        ),
        (
            "    kpi: presentation\n",
            "    kpi: presentation\n    colour: red\n",
            "colour: red",
            "unknown key 'colour'",
        ),
        ("  done:\n", "  Done Now:\n", "  Done Now:", "not a valid name"),
        (
            "due: {next_business_day: 10:00}",
            "due: {next_business_day: 25:00}",
            "next_business_day: 25:00",
            'a time like "10:00"',
        ),
        (
            "due: {after: 1d12h}",
            "due: {after: 1d, next_business_day: '10:00'}",
            "due: {after: 1d, next",
            "exactly one of",
        ),
        (
            "  - {event: accept, from: new, to: selling}",
            "  - {event: accept, to: selling}",
            "event: accept",
            "'from' is missing",
        ),
        (
            "  done:\n    tier: sales\n    final: true\n",
            "  done: sales\n",
            "  done: sales",
            "must be a mapping",
        ),
    ],
)
def test_structural_errors_name_their_line(old: str, new: str, needle: str, words: str) -> None:
    assert old in MINI
    broken = MINI.replace(old, new, 1)
    with pytest.raises(DefinitionError) as err:
        parse_definition(broken)
    problems = [(p.line, p.message) for p in err.value.problems]
    assert any(line == line_with(broken, needle) and words in msg for line, msg in problems), (
        problems
    )


def test_transitions_must_be_a_list() -> None:
    broken = MINI[: MINI.index("transitions:")] + "transitions: none\n"
    with pytest.raises(DefinitionError) as err:
        parse_definition(broken)
    (problem,) = err.value.problems
    assert problem.line == line_with(broken, "transitions: none")
    assert "must be a list" in problem.message


def test_duplicate_state_is_refused_at_the_second_one() -> None:
    broken = MINI.replace("  done:\n", "  new:\n    tier: cold\n    final: true\n  done:\n")
    with pytest.raises(DefinitionError) as err:
        parse_definition(broken)
    (problem,) = err.value.problems
    second = [i for i, line in enumerate(broken.splitlines(), 1) if line == "  new:"][1]
    assert problem.line == second and "given twice" in problem.message


def test_parse_reports_every_structural_problem_at_once() -> None:
    broken = MINI.replace("1d12h", "soon").replace("max_attempts: 3", "max_attempts: x")
    with pytest.raises(DefinitionError) as err:
        parse_definition(broken)
    lines = [p.line for p in err.value.problems]
    assert lines == [line_with(broken, "after: soon"), line_with(broken, "max_attempts: x")]
    assert err.value.to_json()["problems"][0]["line"] == lines[0]


def test_empty_and_non_mapping_documents() -> None:
    for text in ("", "# nothing\n", "- a\n- b\n"):
        with pytest.raises(DefinitionError) as err:
            parse_definition(text)
        assert err.value.problems[0].line == 1
