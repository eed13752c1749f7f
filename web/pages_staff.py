"""The supervisor dashboard and the admin pages, and the few JSON helpers only they need.

The pages themselves are thin, like the console: the browser does the rest against the
public API (``/api/supervisor/live``, ``/api/users``, ``/api/settings``, ``/api/workflows/*``).
What lives here is what those pages need and no public contract gives them in one piece:

- ``GET /api/workflows/diagram.svg?version=n`` and ``POST /api/workflows/diagram.svg
  {source}``: the definition drawn on the server (no JS library, no CDN);
- ``POST /api/workflows/outline {source}``: the states of an edited definition, to offer
  them as targets when a publish must map clients off removed states;
- ``GET /api/supervisor/figures?at=HH:MM|now&day=&tier=``: a KPI slice plus the configured
  slice times, so the dashboard's selector and figures come in one request;
- ``GET /api/supervisor/client-names?ids=1,2``: names for the follow-ups needing attention.
"""

from __future__ import annotations

from aiohttp import web
from sqlmodel import col, select

from engine import runtime_settings
from engine.definitions import DEFAULT_NAME, current_version
from engine.errors import InvalidInput, NotFound
from engine.kpi import parse_at, parse_day, take_slice
from engine.models import Client, Role, User, WorkflowVersion
from engine.users import public_user
from engine.workflow import parse_definition
from engine.workflow.diagram import render_svg
from web import pages
from web.api.session import read_json
from web.api.workflows import outline as outline_of
from web.keys import TIERLINE
from web.middleware import USER, current_user

routes = web.RouteTableDef()

READERS = (Role.ADMIN, Role.SUPERVISOR)
SOURCE_MAX = 512 * 1024
MAX_NAMES = 200
# The SVG is only ever data: nothing in it may run or load, even opened on its own.
SVG_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

# Every string supervisor.js and admin.js show; they travel to the page already translated.
STAFF_STRINGS = (
    # supervisor
    "Operator", "Tier", "Status", "Since", "Calls", "Calls ≥ 10 min", "Presentations",
    "Invoices", "Payments", "Norms", "Edit norms", "Save", "Cancel", "behind", "on track",
    "no norm", "expected {expected} of {norm}", "On a call", "Ringing", "Wrap-up", "Idle",
    "Behind the norm", "Nobody needs attention.", "overdue", "escalated",
    "escalation level {n}", "Client", "Due", "Reason", "Owner", "unowned", "now",
    "No operators.", "Norms saved.", "No hand-overs today yet.", "Updated {time}",
    "Slice", "Something went wrong", "Offline — reconnecting…", "Unknown caller",
    "missed {time}", "{n} missed calls since {time}",
    # admin
    "Line", "Problems", "No problems.", "Validating…", "Unchanged since version {n}.",
    "Clients in removed states: map each to a state of the new version.",
    "Move {n} clients from {state} to", "Move {n} client from {state} to", "Dry run", "Publish",
    "Publish note",
    "Published version {n}.", "Dry run: {moves}; {n} clients stay where they are.",
    "Dry run: {moves}; {n} client stays where it is.",
    "nothing moves", "{n} clients: {move}", "{n} client: {move}", "Version", "Published", "By",
    "Note",
    "current", "View", "Back to editing", "Viewing version {n} (read only)",
    "Fix the problems first.", "Choose a state for every removed state.",
    "Username", "Display name", "Role", "Extension", "Active", "Actions", "Deactivate",
    "Reactivate", "active", "inactive", "User created.", "User updated.", "Saved.",
    "Settings saved.", "Diagram", "Diff against the published version", "no diff",
    "operator", "supervisor", "admin", "(none)", "choose…", "Line {line}",
    # import
    "Uploading…",
    "Importing: {rows} rows read, {created} created, {merged} merged, {errors} refused",
    "Import finished: {rows} rows, {created} created, {merged} merged, {errors} refused",
    "Import stopped: {message}", "(the first {n} refused rows are shown)",
)  # fmt: skip


def staff_page_data(
    request: web.Request, strings: tuple[str, ...] = STAFF_STRINGS
) -> dict[str, object]:
    """What a staff page's script starts from: the user, and ``strings`` translated."""
    translator = pages.Translator(pages.pick_language(request.headers.get("Accept-Language", "")))
    user: User | None = request.get(USER)
    return {
        "user": public_user(user) if user else None,
        "strings": translator.catalog(pages.JS_STRINGS + strings),
        "lang": translator.lang,
    }


def staff_page(request: web.Request, *roles: Role) -> User | web.Response:
    user: User | None = request.get(USER)
    if user is not None and user.role in roles:
        return user
    return pages._require(request, roles[0])  # the sign-in redirect or the 403 page


@routes.get("/supervisor")
async def supervisor(request: web.Request) -> web.Response:
    user = staff_page(request, Role.SUPERVISOR, Role.ADMIN)
    if isinstance(user, web.Response):
        return user
    context = {"title": "Supervisor dashboard", "page_data": staff_page_data(request)}
    return pages.render(request, "supervisor.html", context)


@routes.get("/admin")
async def admin(request: web.Request) -> web.Response:
    user = staff_page(request, Role.ADMIN)
    if isinstance(user, web.Response):
        return user
    context = {"title": "Administration", "page_data": staff_page_data(request)}
    return pages.render(request, "admin.html", context)


# ---- workflow diagram and outline ---------------------------------------------------------


def _source(body: dict) -> str:
    source = body.get("source")
    if not isinstance(source, str):
        raise InvalidInput("source (the YAML text) is required", field="source")
    if len(source) > SOURCE_MAX:
        raise InvalidInput(f"source is longer than {SOURCE_MAX} characters", field="source")
    return source


def _svg(text: str) -> web.Response:
    return web.Response(text=text, content_type="image/svg+xml", headers=SVG_HEADERS)


@routes.get("/api/workflows/diagram.svg")
async def diagram_of_version(request: web.Request) -> web.Response:
    current_user(request, *READERS)
    tl = request.app[TIERLINE]
    wanted = request.query.get("version", "")
    async with tl.db.session() as db:
        if not wanted:
            row: WorkflowVersion | None = await current_version(db)
        elif not wanted.isdigit():
            raise InvalidInput("version must be a version number", field="version")
        else:
            row = (
                await db.exec(
                    select(WorkflowVersion).where(
                        WorkflowVersion.name == DEFAULT_NAME,
                        WorkflowVersion.version == int(wanted),
                    )
                )
            ).first()
    if row is None:  # none published yet, or not that version
        raise NotFound(f"workflow version {wanted or 'current'} does not exist")
    defn = parse_definition(row.source)  # published versions always parse
    return _svg(render_svg(defn, title=f"Workflow {defn.name}, version {row.version}"))


@routes.post("/api/workflows/diagram.svg")
async def diagram_of_source(request: web.Request) -> web.Response:
    """Any definition that parses is drawn, valid or not: the admin sees what they typed.
    One that does not parse answers 400 with its problems (DefinitionError)."""
    current_user(request, Role.ADMIN)
    defn = parse_definition(_source(await read_json(request)))
    return _svg(render_svg(defn, title=f"Workflow {defn.name} (edited)"))


@routes.post("/api/workflows/outline")
async def draft_outline(request: web.Request) -> web.Response:
    current_user(request, Role.ADMIN)
    defn = parse_definition(_source(await read_json(request)))
    return web.json_response(outline_of(defn))


# ---- supervisor helpers -------------------------------------------------------------------


@routes.get("/api/supervisor/figures")
async def figures(request: web.Request) -> web.Response:
    current_user(request, *READERS)
    tl = request.app[TIERLINE]
    now = tl.clock.now()
    day = parse_day(request.query.get("day"), now, tl.settings.timezone)
    at = parse_at(request.query.get("at"))
    tier = request.query.get("tier") or None
    async with tl.db.session() as db:
        stored = await runtime_settings.load(db, runtime_settings.CALLING)
        kpi = await take_slice(
            db, day=day, at=at, tz=tl.settings.timezone, policy=tl.policy, now=now, tier=tier
        )
    calling = runtime_settings.calling_from(tl.settings, stored)
    return web.json_response(
        {"slice_times": calling.slice_times, "timezone": tl.settings.timezone, **kpi.to_json()}
    )


@routes.get("/api/supervisor/client-names")
async def client_names(request: web.Request) -> web.Response:
    current_user(request, *READERS)
    try:
        ids = sorted({int(i) for i in request.query.get("ids", "").split(",") if i.strip()})
    except ValueError:
        raise InvalidInput("ids must be client ids separated by commas", field="ids") from None
    if len(ids) > MAX_NAMES:
        raise InvalidInput(f"ask for at most {MAX_NAMES} names at once", field="ids")
    names: dict[str, str] = {}
    if ids:
        async with request.app[TIERLINE].db.session() as db:
            rows = await db.exec(select(Client.id, Client.name).where(col(Client.id).in_(ids)))
            names = {str(i): name for i, name in rows.all()}
    return web.json_response({"names": names})


def setup(app: web.Application) -> None:
    app.add_routes(routes)
