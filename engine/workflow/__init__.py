"""Workflow definitions: YAML format, validation, and compilation into state machines."""

from engine.workflow.compile import apply_event, check_compiles, compile_machine, enabled_events
from engine.workflow.definition import (
    DueRule,
    FollowUpRule,
    StateDef,
    TransitionDef,
    WorkflowDefinition,
    default_definition_text,
    load_definition,
    parse_definition,
    parse_duration,
)
from engine.workflow.guards import GUARDS, ClientFacts, guard_passes
from engine.workflow.validate import (
    CHECKLIST_STAGES,
    ESCALATION_STEPS,
    KINDS,
    KPIS,
    OWNERS,
    validate,
)

__all__ = [
    "CHECKLIST_STAGES",
    "ESCALATION_STEPS",
    "GUARDS",
    "KINDS",
    "KPIS",
    "OWNERS",
    "ClientFacts",
    "DueRule",
    "FollowUpRule",
    "StateDef",
    "TransitionDef",
    "WorkflowDefinition",
    "apply_event",
    "check_compiles",
    "compile_machine",
    "default_definition_text",
    "enabled_events",
    "guard_passes",
    "load_definition",
    "parse_definition",
    "parse_duration",
    "validate",
]
