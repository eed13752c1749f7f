"""Compile a workflow definition into a python-statemachine class, and apply one event.

The machine is flat (one state per client, stored as a string) and bound to a
:class:`ClientFacts` model through ``state_field="state"``, so a stored state is rehydrated
without re-entering the initial state; guards resolve against the facts by name.

In the generated class every state is the attribute ``s_<name>`` (its *value*, which is what
the model stores, stays ``<name>``) and every event is ``e_<event>``. python-statemachine puts
states and events in one class namespace and an event silently replaces a state of the same
name (tried with 3.2.2: state ``no_answer`` and event ``no_answer`` left the state out of
``states_map``), and a state or event called ``send`` or ``model`` would shadow the machine's
own attributes. The prefixes rule both out.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from statemachine import StateChart
from statemachine.exceptions import TransitionNotAllowed
from statemachine.io import create_machine_class_from_definition

from engine.errors import DefinitionError, DefinitionProblem, EventNotAllowed, InvalidInput
from engine.workflow.definition import WorkflowDefinition
from engine.workflow.guards import ClientFacts, guard_passes

_CACHE_SIZE = 64
_cache: dict[str, type[StateChart]] = {}  # digest -> class, oldest first


def _state_id(name: str) -> str:
    return f"s_{name}"


def _event_id(event: str) -> str:
    return f"e_{event}"


def _states_spec(defn: WorkflowDefinition) -> dict[str, Any]:
    """The dict dialect of create_machine_class_from_definition, built fresh on every call
    (the library mutates what it is given)."""
    spec: dict[str, Any] = {}
    for name, state in defn.states.items():
        on: dict[str, list[dict[str, Any]]] = {}
        for t in defn.transitions_from(name):
            item: dict[str, Any] = {"target": _state_id(t.target)}
            if t.guard is not None:
                item["cond"] = t.guard
            on.setdefault(_event_id(t.event), []).append(item)
        entry: dict[str, Any] = {"value": name, "name": state.title, "on": on}
        if name == defn.initial:
            entry["initial"] = True
        if state.final:
            entry["final"] = True
        spec[_state_id(name)] = entry
    return spec


def compile_machine(defn: WorkflowDefinition) -> type[StateChart]:
    """The machine class for a definition, cached by its source digest.

    Raises DefinitionError when python-statemachine refuses the definition (run
    :func:`validate` first for problems with precise lines)."""
    cls = _cache.get(defn.digest)
    if cls is not None:
        return cls
    class_name = "Workflow_" + re.sub(r"\W", "_", defn.name)
    try:
        cls = create_machine_class_from_definition(
            class_name,
            states=_states_spec(defn),
            # The runtime commits a transition in a DB transaction: errors must propagate,
            # and an event not allowed here must raise instead of being ignored.
            catch_errors_as_events=False,
            allow_event_without_transition=False,
            # A key account may stay in the loyalty cycle for ever; no final state is owed.
            validate_final_reachability=False,
        )
    except Exception as err:  # the library raises InvalidDefinition, or a bare KeyError
        raise DefinitionError([_library_problem(defn, err)]) from err
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[defn.digest] = cls
    return cls


def check_compiles(defn: WorkflowDefinition) -> list[DefinitionProblem]:
    """Build the class and one instance on a dummy model: guard names only resolve then."""
    try:
        cls = compile_machine(defn)
        cls(model=ClientFacts(state=defn.initial), state_field="state")
    except DefinitionError as err:
        return list(err.problems)
    except Exception as err:
        _cache.pop(defn.digest, None)
        return [_library_problem(defn, err)]
    return []


def _library_problem(defn: WorkflowDefinition, err: Exception) -> DefinitionProblem:
    """Point at what the library's message names first: a transition (``e_<event>``), a
    state (``s_<name>``, its name or its title), a missing target; else at line 1."""
    text = str(err)
    found: list[tuple[int, int]] = []  # (position in the message, line)
    for match in re.finditer(r"\w+", text):
        word = match.group()
        if word.startswith("e_"):
            line = next((t.line for t in defn.transitions if t.event == word[2:]), None)
        elif word.removeprefix("s_") in defn.states:
            line = defn.states[word.removeprefix("s_")].line
        elif word.startswith("s_"):  # a bare KeyError for a target that does not exist
            line = next((t.line for t in defn.transitions if t.target == word[2:]), None)
        else:
            line = None
        if line is not None:
            found.append((match.start(), line))
    for state in defn.states.values():
        at = text.find(state.title)
        if at >= 0:
            found.append((at, state.line))
    line = min(found)[1] if found else 1
    message = f"the state machine library refused the definition: {type(err).__name__}: {text}"
    return DefinitionProblem(line, message)


def enabled_events(defn: WorkflowDefinition, facts: ClientFacts) -> list[str]:
    """Events allowed from the client's state whose guard passes on these facts."""
    found = [t.event for t in defn.transitions_from(facts.state) if guard_passes(facts, t.guard)]
    return list(dict.fromkeys(found))


def apply_event(defn: WorkflowDefinition, facts: ClientFacts, event: str) -> str:
    """The state ``event`` leads to from ``facts.state``. ``facts`` is left untouched.

    Raises InvalidInput when the stored state is not in this definition (a client on another
    version), EventNotAllowed naming the events allowed now when the definition has no such
    event from the state or its guard refuses (``details["refused_by"]`` names the guards)."""
    cls = compile_machine(defn)
    if facts.state not in cls.states_map:
        raise InvalidInput(
            f"state {facts.state!r} is not a state of workflow {defn.name!r}",
            field="state",
        )
    if event not in defn.events_from(facts.state):
        raise EventNotAllowed(event, facts.state, enabled_events(defn, facts))
    model = replace(facts)
    machine = cls(model=model, state_field="state")
    try:
        machine.send(_event_id(event))
    except TransitionNotAllowed:
        err = EventNotAllowed(event, facts.state, enabled_events(defn, facts))
        err.details["refused_by"] = [
            t.guard for t in defn.transitions_from(facts.state) if t.event == event and t.guard
        ]
        raise err from None
    return str(model.state)


def _measure() -> None:  # pragma: no cover - a manual benchmark, run as a module
    import time

    from engine.workflow.definition import default_definition_text, load_definition

    defn = load_definition(default_definition_text())
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        _cache.clear()
        compile_machine(defn)
    compiled = (time.perf_counter() - start) / rounds
    facts = ClientFacts(state="invoice_sent", has_email=True)
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        apply_event(defn, facts, "payment_received")
    applied = (time.perf_counter() - start) / rounds
    print(f"states={len(defn.states)} transitions={len(defn.transitions)}")
    print(f"compile (class build, uncached): {compiled * 1e3:.2f} ms")
    print(f"rehydrate + apply one event:     {applied * 1e6:.0f} µs")


if __name__ == "__main__":  # pragma: no cover
    _measure()
