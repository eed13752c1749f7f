"""``GET /api/export/clients.csv``: the whole client base, streamed, admins only.

Every export is audited with how many rows it sent and whether it finished; a refusal is
audited too (engine.access).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from engine import export
from engine.access import refuse
from engine.models import AuditEntry, Role, User
from engine.service import Tierline
from web.keys import TIERLINE
from web.middleware import current_user

routes = web.RouteTableDef()


@routes.get("/api/export/clients.csv")
async def export_clients(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    tl = request.app[TIERLINE]
    if user.role != Role.ADMIN:
        async with tl.db.session() as db:
            raise await refuse(
                db,
                user,
                "export.clients",
                "clients",
                tl.clock.now(),
                "exporting the client base needs the admin role",
            )
    started = tl.clock.now()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="clients-{started:%Y%m%d-%H%M}.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    rows, complete = 0, False
    try:
        async for text, n in export.csv_chunks(tl.db):
            await response.write(text.encode("utf-8"))
            rows += n
        await response.write_eof()
        complete = True
    finally:
        # Shielded: a download cut short still leaves its trace (how far it got).
        await asyncio.shield(_audit_export(tl, user, rows, complete))
    return response


async def _audit_export(tl: Tierline, user: User, rows: int, complete: bool) -> None:
    async with tl.db.transaction() as db:
        db.add(
            AuditEntry(
                at=tl.clock.now(),
                actor_id=user.id,
                action="export.clients",
                target="clients",
                allowed=True,
                detail={"rows": rows, "complete": complete},
            )
        )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
