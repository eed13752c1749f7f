"""The aiohttp application: routes, middlewares, and what starts and stops with it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from cti_adapter.port import PbxConnector
from engine.service import Tierline
from web import pages, pages_segments, ws
from web.api import (
    admin,
    calls,
    campaigns,
    clients,
    cti,
    export_csv,
    health,
    imports,
    management,
    outcomes,
    queue,
    segments,
    session,
    users,
    workflows,
)
from web.keys import PBX, SESSIONS, THROTTLE, TIERLINE
from web.middleware import errors_as_json, identify
from web.secrets_store import persistent_secret
from web.sessions import SessionCodec, SignInThrottle

log = logging.getLogger("tierline.web")

MAX_BODY = 1024 * 1024


def create_app(
    tl: Tierline, *, pbx: PbxConnector | None = None, start_engine: bool = True
) -> web.Application:
    settings = tl.settings
    app = web.Application(middlewares=[errors_as_json, identify], client_max_size=MAX_BODY)
    app[TIERLINE] = tl
    secret = (
        settings.session_secret.get_secret_value()
        if settings.session_secret
        else persistent_secret(settings.data_dir, "session.key")
    )
    app[SESSIONS] = SessionCodec(secret)
    app[THROTTLE] = SignInThrottle(settings.login_max_failures, settings.login_lockout_seconds)
    if pbx is not None:
        app[PBX] = pbx
    if start_engine:
        app.cleanup_ctx.append(_engine_lifecycle)
    # Each module adds its routes and whatever background work it needs (after the engine
    # starts, before it stops: cleanup_ctx runs in order and unwinds in reverse).
    modules = (
        health,
        session,
        users,
        clients,
        outcomes,
        export_csv,
        queue,
        workflows,
        segments,
        campaigns,
        management,
        imports,
        cti,
        calls,
        admin,
    )
    for module in (*modules, ws, pages, pages_segments):
        module.setup(app)
    return app


async def _engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    tl = app[TIERLINE]
    await tl.start()
    log.info("engine started on %s", tl.db.safe_url)
    yield
    await tl.stop()
