"""Reading a definition's YAML with line numbers, collecting every problem before giving up.

It walks the node tree of ``yaml.compose`` rather than loaded data so that every state,
transition and field keeps the 1-based line an admin must edit.
"""

from __future__ import annotations

import datetime as dt
import re

import yaml

from engine.errors import DefinitionError, DefinitionProblem, InvalidInput
from engine.workflow.definition import (
    DueRule,
    FollowUpRule,
    StateDef,
    TransitionDef,
    WorkflowDefinition,
    digest_of,
    parse_duration,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"

_TOP_KEYS = ("name", "description", "tiers", "initial", "states", "transitions")
_STATE_KEYS = ("tier", "title", "final", "kpi", "script", "checklist", "follow_up")
_FOLLOW_UP_KEYS = (
    "due", "kind", "owner", "max_attempts", "on_max_attempts", "grace", "escalation",
    "auto_event",
)  # fmt: skip
_DUE_MODES = ("after", "next_business_day", "operator_picks")
_DUE_KEYS = (*_DUE_MODES, "default_after")
_TRANSITION_KEYS = ("event", "from", "to", "guard", "counts_attempt")

# Defaults for optional follow-up fields; documented in workflows/telemarketing.yaml.
DEFAULT_OWNER = "operator"
DEFAULT_GRACE = dt.timedelta(hours=2)
DEFAULT_ESCALATION: tuple[str, ...] = ("supervisor",)
DEFAULT_PICK_AFTER = dt.timedelta(days=1)

Fields = dict[str, tuple[yaml.Node, yaml.Node]]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: yaml.Node | None) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


class Parser:
    """Walks the composed node tree, collecting every problem before giving up."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.problems: list[DefinitionProblem] = []

    def problem(self, at: yaml.Node | int, message: str) -> None:
        line = at if isinstance(at, int) else _line(at)
        self.problems.append(DefinitionProblem(line, message))

    def parse(self) -> WorkflowDefinition:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = mark.line + 1 if mark else 1
            what = err.problem or err.context or "cannot read the YAML"
            raise DefinitionError([DefinitionProblem(line, f"YAML syntax error: {what}")]) from err
        except yaml.YAMLError as err:
            raise DefinitionError([DefinitionProblem(1, f"YAML error: {err}")]) from err
        if root is None:
            raise DefinitionError([DefinitionProblem(1, "the definition is empty")])
        top = self.mapping(root, "the definition", _TOP_KEYS)
        if top is None:
            raise DefinitionError(self.problems)
        what = "the definition"
        name = self.name(self.required(top, "name", what, root), "workflow name")
        tiers = self.names(self.required(top, "tiers", what, root), "tiers")
        for i, tier in enumerate(tiers or ()):
            if tier in (tiers or ())[:i]:
                self.problem(top["tiers"][0], f"tier '{tier}' is listed twice in tiers")
        initial = self.name(self.required(top, "initial", what, root), "initial state")
        states = self.states(self.required(top, "states", what, root))
        transitions = self.transitions(self.required(top, "transitions", what, root))
        if self.problems:
            raise DefinitionError(self.problems)
        return WorkflowDefinition(
            name=name,  # type: ignore[arg-type]  # None only when a problem was raised above
            tiers=tiers,  # type: ignore[arg-type]
            initial=initial,  # type: ignore[arg-type]
            states=states,
            transitions=transitions,
            source=self.text,
            digest=digest_of(self.text),
            lines={key: _line(k) for key, (k, _) in top.items()},
        )

    # -- generic node readers; each takes None (already reported missing) and returns None --

    def mapping(self, node: yaml.Node | None, what: str, allowed: tuple[str, ...]) -> Fields | None:
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping of 'key: value' lines")
            return None
        out: Fields = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is None:
                self.problem(k, f"{what}: a key must be a plain word")
            elif key in out:
                first = _line(out[key][0])
                self.problem(k, f"{what}: '{key}' is given twice (first on line {first})")
            elif allowed and key not in allowed:
                self.problem(
                    k, f"{what}: unknown key '{key}'; expected one of: " + ", ".join(allowed)
                )
            else:
                out[key] = (k, v)
        return out

    def required(self, m: Fields | None, key: str, what: str, at: yaml.Node) -> yaml.Node | None:
        if m is None:
            return None
        if key not in m:
            self.problem(at, f"{what}: '{key}' is missing")
            return None
        return m[key][1]

    def name(self, node: yaml.Node | None, what: str) -> str | None:
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode) or _is_null(node):
            self.problem(node, f"{what} must be a name")
            return None
        if not _NAME.match(node.value):
            self.problem(
                node,
                f"{what} {node.value!r} is not a valid name: use lowercase "
                "letters, digits and underscores, starting with a letter",
            )
            return None
        return str(node.value)

    def optional_name(self, node: yaml.Node | None, what: str) -> str | None:
        return None if node is None or _is_null(node) else self.name(node, what)

    def names(self, node: yaml.Node | None, what: str) -> tuple[str, ...] | None:
        if node is None:
            return None
        if _is_null(node):
            return ()
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        found = [self.name(item, f"{what}: item") for item in items]
        return tuple(n for n in found if n is not None)

    def text_of(self, node: yaml.Node | None, what: str, default: str) -> str:
        if node is None or _is_null(node):
            return default
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{what} must be text")
            return default
        return str(node.value)

    def boolean(self, node: yaml.Node | None, what: str) -> bool:
        if node is None or _is_null(node):
            return False
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
            self.problem(node, f"{what} must be true or false")
            return False
        return bool(yaml.constructor.SafeConstructor.bool_values[node.value.lower()])

    def integer(self, node: yaml.Node | None, what: str) -> int | None:
        if node is None or _is_null(node):
            return None
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT or int(node.value) < 1:
            self.problem(node, f"{what} must be a whole number of at least 1")
            return None
        return int(node.value)

    def duration(self, node: yaml.Node | None, what: str) -> dt.timedelta | None:
        if node is None or _is_null(node):
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{what} must be a duration like 30m, 2h, 3d or 1d12h")
            return None
        try:
            return parse_duration(node.value)
        except InvalidInput:
            self.problem(
                node, f"{what}: bad duration {node.value!r}; write it like 30m, 2h, 3d or 1d12h"
            )
            return None

    # -- the definition's parts --

    def states(self, node: yaml.Node | None) -> dict[str, StateDef]:
        m = self.mapping(node, "states", ())
        if m is None:
            return {}
        if not m and node is not None:
            self.problem(node, "states: define at least one state")
        out: dict[str, StateDef] = {}
        for key_node, value in m.values():
            state = self.state(key_node, value)
            if state is not None:
                out[state.name] = state
        return out

    def state(self, key_node: yaml.Node, node: yaml.Node) -> StateDef | None:
        sname = self.name(key_node, "state name")
        what = f"state '{key_node.value}'"
        m = self.mapping(node, what, _STATE_KEYS)
        if sname is None or m is None:
            return None
        get = {key: v for key, (_, v) in m.items()}.get
        title = sname.replace("_", " ").capitalize()
        rule = None
        if "follow_up" in m:
            rule = self.follow_up(m["follow_up"][0], m["follow_up"][1], what)
        return StateDef(
            name=sname,
            tier=self.name(self.required(m, "tier", what, key_node), f"{what}: tier"),  # type: ignore[arg-type]
            title=self.text_of(get("title"), f"{what}: title", title),
            final=self.boolean(get("final"), f"{what}: final"),
            kpi=self.optional_name(get("kpi"), f"{what}: kpi"),
            script=self.text_of(get("script"), f"{what}: script", ""),
            checklist=self.names(get("checklist"), f"{what}: checklist") or (),
            follow_up=rule,
            line=_line(key_node),
            lines={key: _line(k) for key, (k, _) in m.items()},
        )

    def follow_up(self, key_node: yaml.Node, node: yaml.Node, of: str) -> FollowUpRule | None:
        if _is_null(node):
            return None
        what = f"follow_up of {of}"
        m = self.mapping(node, what, _FOLLOW_UP_KEYS)
        if m is None:
            return None
        get = {key: v for key, (_, v) in m.items()}.get
        due = self.due(self.required(m, "due", what, key_node), what)
        owner = self.optional_name(get("owner"), f"{what}: owner") or DEFAULT_OWNER
        grace = self.duration(get("grace"), f"{what}: grace")
        if grace is not None and not grace:
            # Escalating at the due time itself would leave the operator no time at all,
            # and a stored grace of 0 reads as "none given" (engine/followups/overdue.py).
            self.problem(get("grace"), f"{what}: grace must be longer than 0, like 15m or 2h")
            grace = None
        escalation = self.names(get("escalation"), f"{what}: escalation")
        return FollowUpRule(
            due=due,  # type: ignore[arg-type]
            kind=self.name(self.required(m, "kind", what, key_node), f"{what}: kind"),  # type: ignore[arg-type]
            owner=owner,  # type: ignore[arg-type]  # validate() reports unknown owners
            max_attempts=self.integer(get("max_attempts"), f"{what}: max_attempts"),
            on_max_attempts=self.optional_name(get("on_max_attempts"), f"{what}: on_max_attempts"),
            grace=DEFAULT_GRACE if grace is None else grace,
            escalation=DEFAULT_ESCALATION if escalation is None else escalation,
            auto_event=self.optional_name(get("auto_event"), f"{what}: auto_event"),
            line=_line(key_node),
            lines={key: _line(k) for key, (k, _) in m.items()},
        )

    def due(self, node: yaml.Node | None, of: str) -> DueRule | None:
        what = f"{of}: due"
        m = self.mapping(node, what, _DUE_KEYS)
        if m is None or node is None:
            return None
        modes = [mode for mode in _DUE_MODES if mode in m]
        if len(modes) != 1:
            self.problem(
                node, f"{what} needs exactly one of: after, next_business_day, operator_picks"
            )
            return None
        mode = modes[0]
        if "default_after" in m and mode != "operator_picks":
            self.problem(m["default_after"][0], f"{what}: default_after goes with operator_picks")
        value = m[mode][1]
        if mode == "after":
            return DueRule("after", after=self.duration(value, f"{what}: after"))
        if mode == "next_business_day":
            raw = value.value if isinstance(value, yaml.ScalarNode) else ""
            match = _TIME.match(str(raw))
            if match is None:
                self.problem(value, f'{what}: next_business_day must be a time like "10:00"')
                return None
            return DueRule("next_business_day", at=dt.time(int(match[1]), int(match[2])))
        if not self.boolean(value, f"{what}: operator_picks"):
            self.problem(value, f"{what}: operator_picks must be true (or use after)")
        default = self.duration(m.get("default_after", (None, None))[1], f"{what}: default_after")
        default = DEFAULT_PICK_AFTER if default is None else default  # 0m is a valid choice
        return DueRule("operator_picks", default_after=default)

    def transitions(self, node: yaml.Node | None) -> tuple[TransitionDef, ...]:
        if node is None or _is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, "transitions must be a list, one '- {event: …}' item per line")
            return ()
        found = [self.transition(item) for item in node.value]
        return tuple(t for t in found if t is not None)

    def transition(self, node: yaml.Node) -> TransitionDef | None:
        what = f"the transition on line {_line(node)}"
        m = self.mapping(node, what, _TRANSITION_KEYS)
        if m is None:
            return None
        get = {key: v for key, (_, v) in m.items()}.get
        sources = self.names(self.required(m, "from", what, node), f"{what}: from")
        if sources == () and "from" in m:
            self.problem(m["from"][0], f"{what}: from must name at least one state")
        return TransitionDef(
            event=self.name(self.required(m, "event", what, node), f"{what}: event"),  # type: ignore[arg-type]
            sources=sources or (),
            target=self.name(self.required(m, "to", what, node), f"{what}: to"),  # type: ignore[arg-type]
            guard=self.optional_name(get("guard"), f"{what}: guard"),
            counts_attempt=self.boolean(get("counts_attempt"), f"{what}: counts_attempt"),
            line=_line(node),
            lines={key: _line(k) for key, (k, _) in m.items()},
        )
