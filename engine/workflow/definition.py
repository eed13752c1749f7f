"""Workflow definitions: the frozen model, and parsing YAML text with line numbers.

The YAML format is documented at the top of ``workflows/telemarketing.yaml``. Parsing walks
the node tree of ``yaml.compose`` rather than loaded data so that every state, transition and
field keeps the 1-based line an admin must edit. Identifiers and durations are read from the
raw scalar text: YAML 1.1 would otherwise turn ``off`` into ``False`` and ``10:00`` into 600.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from engine.errors import DefinitionError, InvalidInput
from engine.workflow.guards import ClientFacts, guard_passes

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``2h``, ``3d``, ``1d12h``, ``0m`` -> timedelta; raises InvalidInput."""
    compact = str(text).replace(" ", "")
    match = _DURATION.match(compact)
    if not compact or match is None:
        raise InvalidInput(
            f"bad duration {text!r}: write it like 30m, 2h, 3d or 1d12h", field="duration"
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class DueRule:
    mode: Literal["after", "next_business_day", "operator_picks"]
    after: dt.timedelta | None = None
    at: dt.time | None = None
    default_after: dt.timedelta | None = None


@dataclass(frozen=True)
class FollowUpRule:
    due: DueRule
    kind: str
    owner: Literal["operator", "tier"]  # any other value is reported by validate()
    max_attempts: int | None
    on_max_attempts: str | None
    grace: dt.timedelta
    escalation: tuple[str, ...]
    auto_event: str | None
    line: int
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


@dataclass(frozen=True)
class StateDef:
    name: str
    tier: str
    title: str
    final: bool
    kpi: str | None
    script: str
    checklist: tuple[str, ...]
    follow_up: FollowUpRule | None
    line: int
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


@dataclass(frozen=True)
class TransitionDef:
    event: str
    sources: tuple[str, ...]
    target: str
    guard: str | None
    counts_attempt: bool
    line: int
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    tiers: tuple[str, ...]
    initial: str
    states: dict[str, StateDef]
    transitions: tuple[TransitionDef, ...]
    source: str
    digest: str
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _by_state: dict[str, list[TransitionDef]] = field(
        init=False, compare=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for t in self.transitions:
            for src in t.sources:
                self._by_state.setdefault(src, []).append(t)

    def line_of(self, key: str) -> int:
        return self.lines.get(key, 1)

    def transitions_from(self, state: str) -> list[TransitionDef]:
        return list(self._by_state.get(state, ()))

    def events_from(self, state: str) -> list[str]:
        """Events allowed from a state by the definition (guards aside), in definition order."""
        return list(dict.fromkeys(t.event for t in self._by_state.get(state, ())))

    def operator_events_from(self, state: str) -> list[str]:
        """Events an operator may record: those the system fires itself (auto_event) left out."""
        rule = self.states[state].follow_up if state in self.states else None
        auto = rule.auto_event if rule else None
        return [e for e in self.events_from(state) if e != auto]

    def transition_for(
        self, state: str, event: str, facts: ClientFacts | None = None
    ) -> TransitionDef | None:
        """The transition ``event`` takes from ``state``: the first in definition order, or,
        given facts, the first whose guard passes (the one the machine takes)."""
        for t in self._by_state.get(state, ()):
            if t.event == event and (facts is None or guard_passes(facts, t.guard)):
                return t
        return None

    def tier_of(self, state: str) -> str:
        return self.states[state].tier

    def to_mermaid(self) -> str:
        """A ``stateDiagram-v2`` with one composite state per tier, for the admin page."""

        def label(text: str) -> str:
            return " ".join(text.split()).replace('"', "#quot;")

        out = ["stateDiagram-v2"]
        for tier in self.tiers:
            if not any(s.tier == tier for s in self.states.values()):
                continue  # mermaid cannot draw an empty composite state
            out.append(f'    state "{label(tier)}" as tier_{tier} {{')
            for s in self.states.values():
                if s.tier == tier:
                    out.append(f'        state "{label(s.title)} ({s.name})" as s_{s.name}')
            out.append("    }")
        stray = [s for s in self.states.values() if s.tier not in self.tiers]
        for s in stray:  # only in an invalid definition, still drawn for the admin to see
            out.append(f'    state "{label(s.title)} ({s.name})" as s_{s.name}')
        out.append(f"    [*] --> s_{self.initial}")
        for t in self.transitions:
            text = t.event + (f" [{t.guard}]" if t.guard else "")
            for src in t.sources:
                out.append(f"    s_{src} --> s_{t.target} : {text}")
        for s in self.states.values():
            if s.final:
                out.append(f"    s_{s.name} --> [*]")
        return "\n".join(out) + "\n"


def default_definition_text() -> str:
    return resources.files("workflows").joinpath("telemarketing.yaml").read_text("utf-8")


def parse_definition(text: str) -> WorkflowDefinition:
    """YAML text -> definition; DefinitionError lists every syntax or structural problem."""
    from engine.workflow.parsing import Parser

    return Parser(text).parse()


def load_definition(text: str) -> WorkflowDefinition:
    """Parse, validate and compile-check; DefinitionError lists all the problems found."""
    from engine.workflow.compile import check_compiles
    from engine.workflow.validate import validate

    defn = parse_definition(text)
    problems = validate(defn)
    if not problems:
        problems = check_compiles(defn)
    if problems:
        raise DefinitionError(problems)
    return defn


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
