"""Published workflow versions: the store, the parse cache, and publishing with migration.

Every published version is kept. Each client row names the version its state belongs to,
so a new version never strands a client mid-way: publishing maps every state that no
longer exists and moves those clients, with their pending follow-ups, in one transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import bindparam, func, update
from sqlalchemy.engine import Connection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import DefinitionError, DefinitionProblem, InvalidInput, NotFound
from engine.models import Client, FollowUp, FollowUpStatus, WorkflowVersion
from engine.workflow import (
    StateDef,
    WorkflowDefinition,
    check_compiles,
    load_definition,
    parse_definition,
    validate,
)
from engine.workflow.validate import placeholder_problems

DEFAULT_NAME = "telemarketing"


class DefinitionCache:
    """Parsed definitions by version id; versions are immutable, so entries never go stale."""

    def __init__(self) -> None:
        self._by_id: dict[int, WorkflowDefinition] = {}

    async def get(self, session: AsyncSession, version_id: int) -> WorkflowDefinition:
        defn = self._by_id.get(version_id)
        if defn is None:
            row = await session.get(WorkflowVersion, version_id)
            if row is None:
                raise NotFound(f"workflow version {version_id} does not exist")
            defn = self.remember(row)
        return defn

    def get_sync(self, conn: Connection, version_id: int) -> WorkflowDefinition:
        """The same, for reads that run on a synchronous connection (see Database.read)."""
        defn = self._by_id.get(version_id)
        if defn is None:
            table = WorkflowVersion.__table__  # type: ignore[attr-defined]
            row = conn.execute(sa.select(table).where(table.c.id == version_id)).first()
            if row is None:
                raise NotFound(f"workflow version {version_id} does not exist")
            defn = self.remember(row)  # type: ignore[arg-type]  # a row with the same columns
        return defn

    def remember(self, row: WorkflowVersion) -> WorkflowDefinition:
        assert row.id is not None
        defn = self._by_id.get(row.id)
        # An id can come back: SQLite gives a rolled-back insert's id to the next one.
        if defn is None or defn.digest != row.digest:
            defn = load_definition(row.source)
            self._by_id[row.id] = defn
        return defn


async def current_version(session: AsyncSession, name: str = DEFAULT_NAME) -> WorkflowVersion:
    row = (
        await session.exec(
            select(WorkflowVersion).where(
                WorkflowVersion.name == name, col(WorkflowVersion.is_current).is_(True)
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"no published version of workflow {name!r}; run 'tierline migrate'")
    return row


async def list_versions(session: AsyncSession, name: str = DEFAULT_NAME) -> list[WorkflowVersion]:
    rows = await session.exec(
        select(WorkflowVersion)
        .where(WorkflowVersion.name == name)
        .order_by(col(WorkflowVersion.version).desc())
    )
    return list(rows)


def n_clients(n: int) -> str:
    """ "1 client", "2 clients": a count as an admin reads it in a message."""
    return f"{n} client" if n == 1 else f"{n} clients"


@dataclass
class PublishReport:
    name: str
    version: int | None  # None on a dry run
    moves: dict[str, int] = field(default_factory=dict)  # "old -> new": clients moved
    unchanged: int = 0  # clients whose state exists in the new version as it is
    missing_mappings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "moves": self.moves,
            "unchanged": self.unchanged,
            "missing_mappings": self.missing_mappings,
        }


def check_source(source: str) -> tuple[WorkflowDefinition | None, list[DefinitionProblem]]:
    """New definition text, as an admin wrote it: the parsed definition (when it parses)
    and every problem, by line. Stricter than ``load_definition``, which also reads the
    versions already stored: it adds the script placeholders and the workflow's name."""
    try:
        defn = parse_definition(source)
    except DefinitionError as err:
        return None, list(err.problems)
    problems = (validate(defn) or check_compiles(defn)) + placeholder_problems(defn)
    if defn.name != DEFAULT_NAME:
        # Clients run on the workflow of this name; a renamed copy would be published beside
        # it and never used.
        problems.append(
            DefinitionProblem(
                defn.line_of("name"),
                f"the workflow must keep the name '{DEFAULT_NAME}' (got '{defn.name}')",
            )
        )
    return defn, sorted(problems, key=lambda p: p.line)


async def publish(
    session: AsyncSession,
    cache: DefinitionCache,
    source: str,
    *,
    now: datetime,
    mapping: dict[str, str] | None = None,
    actor_id: int | None = None,
    dry_run: bool = False,
    note: str = "",
) -> PublishReport:
    """Validate ``source``, map clients off vanished states, and make it current.

    Runs inside the caller's transaction: nothing is half-published. A dry run computes
    the same report and writes nothing.
    """
    new, problems = check_source(source)
    if new is None or problems:
        raise DefinitionError(problems)
    mapping = dict(mapping or {})
    for gone, target in mapping.items():
        if target not in new.states:
            raise InvalidInput(
                f"mapping {gone!r} -> {target!r}: {target!r} is not a state of the new definition",
                field="mapping",
            )
        if new.states[target].final:
            raise InvalidInput(f"mapping {gone!r} -> {target!r}: cannot map onto a final state")

    counts = Counter(
        {
            state: n
            for state, n in (
                await session.exec(
                    select(Client.state, func.count())
                    .where(_of_workflow(new.name))
                    .group_by(Client.state)
                )
            ).all()
        }
    )
    report = PublishReport(name=new.name, version=None)
    for state, n in sorted(counts.items()):
        if state in new.states and state not in mapping:
            report.unchanged += n
        elif state in mapping:
            report.moves[f"{state} -> {mapping[state]}"] = n
        else:
            report.missing_mappings.append(state)
    if report.missing_mappings:
        raise InvalidInput(
            "clients are in states the new version does not have; map each to a new state: "
            + ", ".join(f"{s} ({n_clients(counts[s])})" for s in report.missing_mappings),
            field="mapping",
            missing=report.missing_mappings,
        )
    if dry_run:
        return report

    previous = (
        await session.exec(
            select(WorkflowVersion).where(
                WorkflowVersion.name == new.name, col(WorkflowVersion.is_current).is_(True)
            )
        )
    ).first()
    old = load_definition(previous.source) if previous is not None else None
    await session.exec(
        update(WorkflowVersion)
        .where(col(WorkflowVersion.name) == new.name)
        .values(is_current=False)
    )
    row = WorkflowVersion(
        name=new.name,
        version=(previous.version if previous is not None else 0) + 1,
        source=source,
        digest=new.digest,
        is_current=True,
        published_at=now,
        published_by=actor_id,
        note=note,
    )
    session.add(row)
    await session.flush()
    assert row.id is not None
    # Not cached here: the caller's transaction may still roll back (see remember).
    moves = dict(mapping)
    if old is not None:
        # A state kept under its name whose follow-up rule changed: its pending follow-ups
        # take the new rule too, or they would go on firing the old version's events.
        for name, kept in new.states.items():
            before = old.states.get(name)
            if before is not None and name not in moves and _rule_changed(before, kept):
                moves[name] = name
    for source_state, target in moves.items():
        await _move_clients(session, new, old, source_state, target, moved=source_state != target)
    await session.exec(
        update(Client).where(_of_workflow(new.name)).values(workflow_version_id=row.id)
    )
    report.version = row.version
    return report


def _rule_changed(before: StateDef, after: StateDef) -> bool:
    a, b = before.follow_up, after.follow_up
    if a is None or b is None:
        return (a is None) != (b is None)
    fields = (
        "due",
        "kind",
        "owner",
        "max_attempts",
        "on_max_attempts",
        "grace",
        "escalation",
        "auto_event",
    )
    return any(getattr(a, f) != getattr(b, f) for f in fields)


async def _move_clients(
    session: AsyncSession,
    new: WorkflowDefinition,
    old: WorkflowDefinition | None,
    source_state: str,
    target: str,
    *,
    moved: bool,
) -> None:
    """Clients in ``source_state`` go to ``target`` with their pending follow-ups, whose due
    time stands while kind, automatic event, owner and escalation follow the target's rule."""
    tier = new.tier_of(target)
    rule = new.states[target].follow_up
    old_rule = old.states[source_state].follow_up if old and source_state in old.states else None
    clients = select(Client.id).where(col(Client.state) == source_state, _of_workflow(new.name))
    pending = (
        await session.exec(
            select(FollowUp.id, FollowUp.due_at, FollowUp.auto_event, FollowUp.owner_id).where(
                col(FollowUp.client_id).in_(clients),
                col(FollowUp.status) == FollowUpStatus.PENDING,
            )
        )
    ).all()
    if rule is not None and pending:
        params = []
        for fu_id, due_at, auto_event, owner_id in pending:
            gave_up = (
                old_rule is not None
                and auto_event is not None
                and auto_event == old_rule.on_max_attempts
                and auto_event != old_rule.auto_event
            )
            event = rule.on_max_attempts if gave_up and rule.on_max_attempts else rule.auto_event
            params.append(
                {
                    "b_id": fu_id,
                    "state": target,
                    "tier": tier,
                    "kind": rule.kind,
                    "auto_event": event,
                    "owner_id": None if event or rule.owner == "tier" else owner_id,
                    "escalate_at": None if event else due_at + rule.grace,
                    "escalation_steps": ",".join(rule.escalation),
                    "grace_s": int(rule.grace.total_seconds()),
                }
            )
        table = FollowUp.__table__  # type: ignore[attr-defined]
        conn = await session.connection()
        await conn.execute(
            update(table).where(table.c.id == bindparam("b_id")),
            params,
        )
    if moved:
        await session.exec(
            update(Client)
            .where(col(Client.state) == source_state, _of_workflow(new.name))
            .values(state=target, tier=tier, attempts=0, revision=Client.revision + 1)
        )


def _of_workflow(name: str):
    versions = select(WorkflowVersion.id).where(WorkflowVersion.name == name)
    return col(Client.workflow_version_id).in_(versions)
