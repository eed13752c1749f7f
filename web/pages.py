"""HTML pages: sign-in, sign-out, the operator console, and the static files they load.

Pages are thin: they render a layout and hand the browser what it needs to talk to the JSON
API (the CSRF token, who is signed in, the translated strings). Everything after that is
done by ``/static/*.js`` against the public API, so the console and an integrator's client
see the same contracts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from engine.models import Role, User
from engine.users import public_user
from web.api.session import sign_in
from web.keys import TIERLINE
from web.middleware import USER, current_session
from web.sessions import COOKIE

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

HOME_BY_ROLE = {Role.OPERATOR: "/console", Role.SUPERVISOR: "/supervisor", Role.ADMIN: "/admin"}

# Scripts and styles only from our own origin: data shown on a page can never run as code.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

routes = web.RouteTableDef()

# --- translation ----------------------------------------------------------------------------
# English text is the key (gettext style): a missing translation shows the English. Adding a
# language is adding a catalog here; templates call ``_()``, scripts read ``strings``.
CATALOGS: dict[str, dict[str, str]] = {"en": {}, "ru": {}}

# Every string console.js shows; they travel to the page already translated.
JS_STRINGS = (
    "Offline — reconnecting…", "Call next", "Call", "Nobody to call right now.", "overdue",
    "escalated", "Loading…", "Incoming call", "Outgoing call", "Ringing", "On the call",
    "Call ended", "Tier", "State", "Owner", "Phones", "Next follow-up", "none scheduled",
    "Last calls", "History", "Notes", "Script", "Quality checklist", "Outcome", "Call back at",
    "Note (optional)", "Unknown number", "New lead", "Name", "Company", "E-mail", "Phone",
    "Create lead", "Several clients have this number — who is calling?", "This is the one",
    "This caller is another tier's client.", "You may not open this client.",
    "Someone else changed this client — reloaded. Check the card and choose again.",
    "Recorded.", "Dialling…", "Call anyway", "Reason for calling anyway", "No card open.",
    "Search clients", "No clients found.", "Open", "Dismiss", "Client", "Do not call",
    "unowned", "Error", "Open client", "Calls", "Queue", "min", "s", "no outcome",
    "Recording…", "Something went wrong", "Sign in again", "Close", "Add note", "Note added.",
    "Record another outcome", "Not set: {name}", "client time, {tz}: now {time}",
    "your own time: this browser does not know {tz}", "Missed call",
    "A colleague answered this call.", "missed", "No answer", "Missed calls",
    "missed {time}", "today {time}", "yesterday {time}", "{n} missed calls, the last {time}",
    "Call back", "No call back needed", "Unknown caller",
)  # fmt: skip


def pick_language(accept_language: str) -> str:
    """The first language in Accept-Language we have a non-empty catalog for (else English)."""
    for part in accept_language.split(","):
        lang = part.split(";")[0].strip().lower()[:2]
        if CATALOGS.get(lang):
            return lang
    return "en"


class Translator:
    """``_("Hello, {name}", name=...)``: the translated text, then ``str.format``."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self._catalog = CATALOGS.get(lang, {})

    def __call__(self, text: str, **params: object) -> str:
        text = self._catalog.get(text, text)
        return text.format(**params) if params else text

    def catalog(self, keys: tuple[str, ...]) -> dict[str, str]:
        return {key: self(key) for key in keys}


def _home(user: User) -> str:
    return HOME_BY_ROLE.get(Role(user.role), "/login")


def _static_url(name: str) -> str:
    """``/static/name?v=mtime``: a changed file is fetched again without a forced reload."""
    try:
        version = int((STATIC / name).stat().st_mtime)
    except OSError:
        version = 0
    return f"/static/{name}?v={version}"


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, object],
    *,
    status: int = 200,
    page_data: dict[str, object] | None = None,
) -> web.Response:
    """Render ``template`` with what every page's layout needs; ``page_data`` adds to what
    the page's scripts read."""
    translator = Translator(pick_language(request.headers.get("Accept-Language", "")))
    user: User | None = request.get(USER)
    session = current_session(request)
    data = {
        "user": public_user(user) if user else None,
        "strings": translator.catalog(JS_STRINGS),
        "lang": translator.lang,
        **(page_data or {}),
    }
    full = {
        "_": translator,
        "lang": translator.lang,
        "user": user,
        "csrf_token": session.csrf if session else "",
        "page_data": data,
        "static_url": _static_url,
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _require(request: web.Request, role: Role) -> User | web.Response:
    """The signed-in user holding ``role``; otherwise the page to show instead."""
    user: User | None = request.get(USER)
    if user is None:
        raise web.HTTPFound("/login?next=" + quote(request.path_qs, safe="/"))
    if user.role != role:
        return render(
            request,
            "forbidden.html",
            {"title": "Not for your role", "required": role.value, "home": _home(user)},
            status=403,
        )
    return user


def _safe_next(target: str | None) -> str | None:
    # Only local paths: a crafted link must not bounce a fresh session to another site.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    user: User | None = request.get(USER)
    raise web.HTTPFound(_home(user) if user else "/login")


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    user: User | None = request.get(USER)
    if user is not None:
        raise web.HTTPFound(_home(user))
    target = _safe_next(request.query.get("next")) or ""
    context = {"title": "Sign in", "error": None, "username": "", "next": target}
    return render(request, "login.html", context)


@routes.post("/login")
async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    answer = await sign_in(request, username, password) if username and password else None
    if answer is None or answer.status != 200:
        if answer is not None:  # throttled: its JSON says how long to wait
            error = json.loads(answer.body)["message"]  # type: ignore[arg-type]
        else:
            error = "Wrong username or password."
        return render(
            request,
            "login.html",
            {"title": "Sign in", "error": error, "username": username, "next": target or ""},
            status=429 if answer is not None else 401,
        )
    role = json.loads(answer.body)["user"]["role"]  # type: ignore[arg-type]
    home = HOME_BY_ROLE.get(Role(role), "/login")
    redirect = web.HTTPFound(target if target and target.startswith(home) else home)
    redirect.cookies.update(answer.cookies)
    raise redirect


@routes.get("/logout")
async def logout(request: web.Request) -> web.Response:
    redirect = web.HTTPFound("/login")
    redirect.del_cookie(COOKIE, path="/")
    raise redirect


@routes.get("/console")
async def console(request: web.Request) -> web.Response:
    user = _require(request, Role.OPERATOR)
    if isinstance(user, web.Response):
        return user
    # Call scripts say {company}: our own company's name, from the settings.
    company = request.app[TIERLINE].settings.company_name
    return render(
        request, "console.html", {"title": "Operator console"}, page_data={"company_name": company}
    )


def setup(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    app.add_routes(routes)
    # The supervisor and admin pages live in their own module; imported here, not at the
    # top, because that module builds on this one's render().
    from web import pages_staff

    pages_staff.setup(app)
    app.router.add_static("/static/", STATIC, name="static", append_version=False)
