"""Workflow administration: read the published definition, validate edits, publish.

Admins edit; supervisors may read. Validation answers 200 with ``ok: false`` and the
problems at their lines, because the editor validates as the admin types. Publishing maps
clients off vanished states in the same transaction that makes the version current.
"""

from __future__ import annotations

import difflib
import logging

from aiohttp import web
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.bus import Bus
from engine.definitions import DEFAULT_NAME, check_source, current_version, list_versions, publish
from engine.errors import DefinitionError, InvalidInput, NotFound
from engine.models import AuditEntry, Client, Role, User, WorkflowVersion
from engine.service import QUEUE_CHANNEL
from engine.workflow import WorkflowDefinition
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

log = logging.getLogger("tierline.web")
routes = web.RouteTableDef()

READERS = (Role.ADMIN, Role.SUPERVISOR)
SOURCE_MAX = 512 * 1024


def _version_json(row: WorkflowVersion, names: dict[int, str]) -> dict[str, object]:
    return {
        "version": row.version,
        "name": row.name,
        "is_current": row.is_current,
        "published_at": row.published_at.isoformat(),
        "published_by": names.get(row.published_by) if row.published_by else None,
        "note": row.note,
        "digest": row.digest,
    }


async def _usernames(db: AsyncSession, ids: set[int | None]) -> dict[int, str]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    rows = await db.exec(select(User.id, User.username).where(col(User.id).in_(wanted)))
    return {i: name for i, name in rows.all()}  # type: ignore[misc]


@routes.get("/api/workflows/current")
async def get_current(request: web.Request) -> web.Response:
    current_user(request, *READERS)
    tl = request.app[TIERLINE]
    async with tl.db.session() as db:
        row = await current_version(db)
        names = await _usernames(db, {row.published_by})
    defn = tl.cache.remember(row)
    return web.json_response(
        {
            **_version_json(row, names),
            "source": row.source,
            "diagram": defn.to_mermaid(),
            **outline(defn),
        }
    )


def outline(defn: WorkflowDefinition) -> dict[str, object]:
    """Tiers and states, for the editor's mapping form and the console's labels."""
    return {
        "tiers": list(defn.tiers),
        "initial": defn.initial,
        "states": [
            {"name": s.name, "title": s.title, "tier": s.tier, "final": s.final, "kpi": s.kpi}
            for s in defn.states.values()
        ],
    }


@routes.get("/api/workflows/versions")
async def get_versions(request: web.Request) -> web.Response:
    current_user(request, *READERS)
    async with request.app[TIERLINE].db.session() as db:
        rows = await list_versions(db)
        names = await _usernames(db, {r.published_by for r in rows})
    return web.json_response({"versions": [_version_json(r, names) for r in rows]})


@routes.get("/api/workflows/versions/{version:\\d+}")
async def get_version(request: web.Request) -> web.Response:
    current_user(request, *READERS)
    number = int(request.match_info["version"])
    async with request.app[TIERLINE].db.session() as db:
        row = (
            await db.exec(
                select(WorkflowVersion).where(
                    WorkflowVersion.name == DEFAULT_NAME, WorkflowVersion.version == number
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"workflow version {number} does not exist")
        names = await _usernames(db, {row.published_by})
    return web.json_response({**_version_json(row, names), "source": row.source})


def _source(body: dict) -> str:
    source = body.get("source")
    if not isinstance(source, str):
        raise InvalidInput("source (the YAML text) is required", field="source")
    if len(source) > SOURCE_MAX:
        raise InvalidInput(f"source is longer than {SOURCE_MAX} characters", field="source")
    return source


async def _states_without_home(db: AsyncSession, defn: WorkflowDefinition) -> dict[str, int]:
    """Clients in states the edited definition no longer has: what a publish must map."""
    of_workflow = col(Client.workflow_version_id).in_(
        select(WorkflowVersion.id).where(WorkflowVersion.name == defn.name)
    )
    rows = await db.exec(
        select(Client.state, func.count()).where(of_workflow).group_by(Client.state)
    )
    return {state: n for state, n in rows.all() if state not in defn.states}


@routes.post("/api/workflows/validate")
async def validate_source(request: web.Request) -> web.Response:
    current_user(request, Role.ADMIN)
    tl = request.app[TIERLINE]
    source = _source(await read_json(request))
    defn, problems = check_source(source)
    async with tl.db.session() as db:
        published = await current_version(db)
        needs_mapping = await _states_without_home(db, defn) if defn and not problems else {}
    diff = "".join(
        difflib.unified_diff(
            published.source.splitlines(keepends=True),
            source.splitlines(keepends=True),
            fromfile=f"version {published.version}",
            tofile="edited",
        )
    )
    return web.json_response(
        {
            "ok": not problems,
            "problems": [{"line": p.line, "message": p.message} for p in problems],
            "diagram": defn.to_mermaid() if defn is not None else None,
            "diff": diff,
            "needs_mapping": needs_mapping,
        }
    )


def _mapping(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidInput("mapping must be an object of {old_state: new_state}", field="mapping")
    return dict(value)


@routes.post("/api/workflows/publish")
async def publish_source(request: web.Request) -> web.Response:
    admin = current_user(request, Role.ADMIN)
    tl = request.app[TIERLINE]
    body = await read_json(request)
    source = _source(body)
    mapping = _mapping(body.get("mapping"))
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dry_run must be true or false", field="dry_run")
    note = body.get("note") or ""
    if not isinstance(note, str) or len(note) > 500:
        raise InvalidInput("note must be text of at most 500 characters", field="note")
    defn, problems = check_source(source)
    if problems:
        raise DefinitionError(problems)
    assert defn is not None
    now = tl.clock.now()
    try:
        async with tl.db.transaction() as db:
            report = await publish(
                db,
                tl.cache,
                source,
                now=now,
                mapping=mapping,
                actor_id=admin.id,
                dry_run=dry_run,
                note=note,
            )
            db.add(
                AuditEntry(
                    at=now,
                    actor_id=admin.id,
                    action="workflow.publish.dry_run" if dry_run else "workflow.publish",
                    target=f"workflow:{report.name}",
                    detail={**report.to_json(), "mapping": mapping, "note": note},
                )
            )
    except InvalidInput as err:
        if "missing" in err.details:
            async with tl.db.session() as db:
                err.details["counts"] = await _states_without_home(db, defn)
        raise
    if not dry_run and report.moves:
        await _announce(tl.bus, {defn.tier_of(mapping[old]) for old in mapping})
    return web.json_response({**report.to_json(), "dry_run": dry_run})


async def _announce(bus: Bus, tiers: set[str]) -> None:
    # Moved clients may now sit in another tier's pool: tell those queues to refresh.
    for tier in sorted(tiers):
        try:
            await bus.publish(
                QUEUE_CHANNEL,
                {"type": "queue_changed", "tier": tier, "owner_id": None, "client_id": None},
            )
        except Exception as exc:  # a lost nudge only delays a refresh; the rows are the truth
            log.warning("queue_changed not announced after publishing: %s", exc)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
