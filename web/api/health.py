"""Liveness for load balancers and process supervisors."""

from __future__ import annotations

from aiohttp import web

from web.keys import TIERLINE

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    if await request.app[TIERLINE].db.ping():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "unavailable", "database": "not answering"}, status=503)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
