"""Validation of a parsed workflow definition: every problem, at the line an admin must edit.

Parsing already refused what cannot be represented (syntax, missing keys, wrong types, bad
durations). This module checks what a well-formed definition can still get wrong: names that
point nowhere, states a client could never reach or never leave, clients left without a next
call, and events whose outcome would be a coin toss.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from engine.errors import DefinitionProblem
from engine.workflow.definition import FollowUpRule, StateDef, WorkflowDefinition
from engine.workflow.guards import GUARDS

KPIS = ("presentation", "invoice", "payment")
KINDS = (
    "call_back", "payment_reminder", "satisfaction_check", "upsell", "debt_reminder",
    "recycle", "hand_off",
)  # fmt: skip
OWNERS = ("operator", "tier")
ESCALATION_STEPS = ("operator", "tier", "supervisor")
CHECKLIST_STAGES = (
    "contact", "diagnosis", "presentation", "objections", "price", "close", "invoice",
)  # fmt: skip

# What a call script may say in braces; the console fills them in (web/static/console.js,
# fillScript): the signed-in operator's name, our company (setting company_name), the client.
SCRIPT_PLACEHOLDERS = ("operator", "company", "client")
# The same pattern as console.js: other braces ("{ }", "{a b}") are plain text.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


Add = Callable[[int, str], None]


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def validate(defn: WorkflowDefinition) -> list[DefinitionProblem]:
    """Every problem found, sorted by line; an empty list means the definition is sound."""
    problems: list[DefinitionProblem] = []

    def add(line: int, message: str) -> None:
        problems.append(DefinitionProblem(line, message))

    states = defn.states
    known = ", ".join(states)
    if defn.initial not in states:
        add(
            defn.line_of("initial"),
            f"initial state '{defn.initial}' is not defined under states (defined: {known})",
        )

    used_tiers = {s.tier for s in states.values()}
    for tier in defn.tiers:
        if tier not in used_tiers:
            add(
                defn.line_of("tiers"),
                f"tier '{tier}' is declared in tiers but no state has "
                f"'tier: {tier}': remove it from tiers or give it a state",
            )

    for state in states.values():
        _check_state(defn, state, add)

    for t in defn.transitions:
        for src in t.sources:
            if src not in states:
                add(
                    t.line_of("from"),
                    f"transition '{t.event}': from-state '{src}' is not "
                    f"defined under states (defined: {known})",
                )
            elif states[src].final:
                add(
                    t.line,
                    f"transition '{t.event}' leaves '{src}', which is final: a final "
                    f"state has no way out (take '{src}' out of from, or drop its final: true)",
                )
        if t.target not in states:
            add(
                t.line_of("to"),
                f"transition '{t.event}': target state '{t.target}' is not "
                f"defined under states (defined: {known})",
            )
        if t.guard is not None and t.guard not in GUARDS:
            add(
                t.line_of("guard"),
                f"transition '{t.event}': unknown guard '{t.guard}'; "
                f"available guards: {_one_of(tuple(GUARDS))}",
            )

    _check_ambiguity(defn, add)
    _check_reachability(defn, add)
    return sorted(problems, key=lambda p: p.line)


def _check_state(defn: WorkflowDefinition, state: StateDef, add: Add) -> None:
    name = state.name
    if state.tier not in defn.tiers:
        add(
            state.line_of("tier"),
            f"state '{name}': tier '{state.tier}' is not declared in "
            f"tiers (declared: {_one_of(defn.tiers)})",
        )
    if state.kpi is not None and state.kpi not in KPIS:
        add(
            state.line_of("kpi"),
            f"state '{name}': unknown kpi '{state.kpi}'; use one of: {_one_of(KPIS)}, or null",
        )
    for stage in state.checklist:
        if stage not in CHECKLIST_STAGES:
            add(
                state.line_of("checklist"),
                f"state '{name}': unknown checklist stage "
                f"'{stage}'; use: {_one_of(CHECKLIST_STAGES)}",
            )

    leaving = defn.transitions_from(name)
    if state.final:
        if state.follow_up is not None:
            add(
                state.follow_up.line,
                f"state '{name}' is final and must not have a follow_up: "
                "no one calls a client in a final state (remove follow_up or final: true)",
            )
        return
    if state.follow_up is None:
        add(
            state.line,
            f"state '{name}' is not final but has no follow_up rule: every client "
            "in it needs a scheduled next step (add follow_up, or mark it final: true)",
        )
    else:
        _check_follow_up(defn, name, state.follow_up, add)
    if not any(t.target != name for t in leaving):
        add(
            state.line,
            f"state '{name}' is not final but no transition leads out of it: add "
            f"a transition from '{name}' to another state (or mark it final: true)",
        )


def _check_follow_up(defn: WorkflowDefinition, name: str, rule: FollowUpRule, add: Add) -> None:
    what = f"follow_up of state '{name}'"
    if rule.kind not in KINDS:
        add(
            rule.line_of("kind"),
            f"{what}: unknown kind '{rule.kind}'; use one of: {_one_of(KINDS)}",
        )
    if rule.owner not in OWNERS:
        add(
            rule.line_of("owner"),
            f"{what}: unknown owner '{rule.owner}'; use one of: {_one_of(OWNERS)}",
        )
    for step in rule.escalation:
        if step not in ESCALATION_STEPS:
            add(
                rule.line_of("escalation"),
                f"{what}: unknown escalation step '{step}'; use: {_one_of(ESCALATION_STEPS)}",
            )
    events = defn.events_from(name)
    for key, event in (("auto_event", rule.auto_event), ("on_max_attempts", rule.on_max_attempts)):
        if event is not None and event not in events:
            add(
                rule.line_of(key),
                f"{what}: {key} '{event}' is not an event from '{name}'; "
                f"add a transition with event: {event} from: {name}, or use one of: "
                + (", ".join(events) or "(none yet)"),
            )
    if rule.on_max_attempts is not None and rule.max_attempts is None:
        add(
            rule.line_of("on_max_attempts"),
            f"{what}: on_max_attempts needs max_attempts "
            "(how many unanswered attempts before it fires)",
        )
    if rule.max_attempts is not None:
        if rule.on_max_attempts is None:
            add(
                rule.line_of("max_attempts"),
                f"{what}: max_attempts needs on_max_attempts "
                "(the event fired when the attempts run out)",
            )
        if not any(t.counts_attempt and t.target == name for t in defn.transitions):
            add(
                rule.line_of("max_attempts"),
                f"{what}: max_attempts is set but no transition "
                f"into '{name}' has counts_attempt: true, so attempts are never counted",
            )


def _check_ambiguity(defn: WorkflowDefinition, add: Add) -> None:
    """From one state, one event must pick one transition: guards in order, at most one
    unguarded fallback, and the fallback last (anything after it would never be taken)."""
    seen: dict[tuple[str, str], list] = {}
    for t in defn.transitions:
        for src in t.sources:
            earlier = seen.setdefault((src, t.event), [])
            fallback = next((e for e in earlier if e.guard is None), None)
            same_guard = next((e for e in earlier if e.guard == t.guard), None)
            if t.guard is None and fallback is not None:
                add(
                    t.line,
                    f"event '{t.event}' from '{src}' is ambiguous: the transition on "
                    f"line {fallback.line} already handles it with no guard (add a guard, or "
                    "remove one of them)",
                )
            elif same_guard is not None:
                add(
                    t.line,
                    f"event '{t.event}' from '{src}' is ambiguous: the transition on "
                    f"line {same_guard.line} has the same guard '{t.guard}'",
                )
            elif fallback is not None:
                add(
                    t.line,
                    f"event '{t.event}' from '{src}': this transition is never taken, "
                    f"the unguarded one on line {fallback.line} comes first (move it above)",
                )
            earlier.append(t)


def _check_reachability(defn: WorkflowDefinition, add: Add) -> None:
    if defn.initial not in defn.states:
        return  # already reported; every state would look unreachable
    reached = {defn.initial}
    queue = deque([defn.initial])
    while queue:
        for t in defn.transitions_from(queue.popleft()):
            if t.target in defn.states and t.target not in reached:
                reached.add(t.target)
                queue.append(t.target)
    for state in defn.states.values():
        if state.name not in reached:
            add(
                state.line,
                f"state '{state.name}' cannot be reached from the initial state "
                f"'{defn.initial}': add a transition into it, or remove it",
            )


def placeholder_problems(defn: WorkflowDefinition) -> list[DefinitionProblem]:
    """Each unknown ``{name}`` in a call script, at the source line it is written on.

    Kept out of validate() on purpose: load_definition() re-validates versions already
    stored (DefinitionCache), and a version published before this rule must keep loading.
    Whoever accepts new text (the workflow editor's validate and publish) adds this check.
    """
    problems: list[DefinitionProblem] = []
    lines = defn.source.splitlines()
    for state in defn.states.values():
        first = state.line_of("script")
        # The script's text spans at most this many source lines after its key.
        block = lines[first - 1 : first + state.script.count("\n") + 1]
        for name in dict.fromkeys(PLACEHOLDER.findall(state.script)):
            if name in SCRIPT_PLACEHOLDERS:
                continue
            token = "{" + name + "}"
            at = next((first + i for i, text in enumerate(block) if token in text), first)
            problems.append(
                DefinitionProblem(
                    at,
                    f"state '{state.name}': unknown placeholder {token} in the script; "
                    f"use {', '.join('{' + p + '}' for p in SCRIPT_PLACEHOLDERS)} "
                    "(or write the words out)",
                )
            )
    return sorted(problems, key=lambda p: p.line)
