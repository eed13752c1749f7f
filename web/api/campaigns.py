"""Campaigns for supervisors and admins: create, launch, record responses, read the report.

Operators get 403: a campaign spans a whole segment and its report compares colleagues' work.
"""

from __future__ import annotations

import logging
from datetime import date

from aiohttp import web

from engine import campaigns, control_group, funnel
from engine.campaigns import NewCampaign
from engine.errors import InvalidInput
from engine.models import Role, User
from engine.service import QUEUE_CHANNEL, Tierline
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

log = logging.getLogger("tierline.web")
routes = web.RouteTableDef()
STAFF = (Role.SUPERVISOR, Role.ADMIN)


def _staff(request: web.Request) -> tuple[User, Tierline]:
    return current_user(request, *STAFF), request.app[TIERLINE]


def _opt_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number", field=name)
    return value


def _opt_date(body: dict, name: str) -> date | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO date (YYYY-MM-DD)", field=name) from None


def _campaign_id(request: web.Request) -> int:
    return int(request.match_info["campaign_id"])


@routes.post("/api/campaigns")
async def create(request: web.Request) -> web.Response:
    """{name, filter_id | group_id, entry_state, kind?, holdout_share?, seed?, starts_on?,
    ends_on?, description?} -> 201 campaign."""
    user, tl = _staff(request)
    body = await read_json(request)
    share = body.get("holdout_share", 0.0)
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise InvalidInput("holdout_share must be a number", field="holdout_share")
    new = NewCampaign(
        name=body.get("name") if isinstance(body.get("name"), str) else "",  # type: ignore[arg-type]
        entry_state=str(body.get("entry_state") or ""),
        filter_id=_opt_int(body, "filter_id"),
        group_id=_opt_int(body, "group_id"),
        kind=str(body.get("kind") or "calls"),
        holdout_share=float(share),
        seed=_opt_int(body, "seed"),
        starts_on=_opt_date(body, "starts_on"),
        ends_on=_opt_date(body, "ends_on"),
        description=str(body.get("description") or ""),
    )
    async with tl.db.transaction() as db:
        row = await campaigns.create_campaign(db, tl.runtime, new, now=tl.clock.now(), actor=user)
    return web.json_response(campaigns.campaign_json(row), status=201)


@routes.get("/api/campaigns")
async def list_all(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.session() as db:
        rows = await campaigns.list_campaigns(db)
        sizes = await campaigns.arm_sizes(db)
    return web.json_response(
        {"campaigns": [campaigns.campaign_json(c, sizes.get(c.id)) for c in rows]}  # type: ignore[arg-type]
    )


@routes.post("/api/campaigns/{campaign_id:\\d+}/launch")
async def launch(request: web.Request) -> web.Response:
    user, tl = _staff(request)
    async with tl.db.transaction() as db:
        row, report = await campaigns.launch(
            db, tl.runtime, _campaign_id(request), actor=user, tz=tl.settings.timezone
        )
        sizes = {"called": len(report.called), "control": len(report.control)}
        payload = {"campaign": campaigns.campaign_json(row, sizes), "launch": report.to_json()}
        tier = row.tier
    if report.called:
        try:  # the tier's queues changed all at once: one nudge, not one per client
            await tl.bus.publish(
                QUEUE_CHANNEL,
                {"type": "queue_changed", "tier": tier, "owner_id": None, "client_id": None},
            )
        except Exception as exc:  # queues are queries; a lost nudge only delays a refresh
            log.warning("queue_changed not announced after a launch: %s", exc)
        tl.timer.wake_at(tl.clock.now())  # the dispatcher finds the new follow-ups itself
    return web.json_response(payload)


@routes.get("/api/campaigns/{campaign_id:\\d+}/report")
async def report(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.session() as db:
        row = await campaigns.get_campaign(db, _campaign_id(request))
        arms = await control_group.arm_stats(db, row)
        stages = await funnel.campaign_funnel(db, row)
    comparison = control_group.compare(arms["called"], arms["control"])
    return web.json_response(
        {
            "campaign": campaigns.campaign_json(
                row, {"called": arms["called"].n, "control": arms["control"].n}
            ),
            "funnel": {arm: [s.to_json() for s in st] for arm, st in stages.items()},
            "control_group": comparison.to_json(),
        }
    )


@routes.post("/api/campaigns/{campaign_id:\\d+}/responses")
async def respond(request: web.Request) -> web.Response:
    """{client_id, response: accepted|declined|no_response|null, revenue?} -> 200 member."""
    _, tl = _staff(request)
    body = await read_json(request)
    client_id = _opt_int(body, "client_id")
    if client_id is None:
        raise InvalidInput("client_id is required", field="client_id")
    response = body.get("response")
    if response is not None and not isinstance(response, str):
        raise InvalidInput("response must be a string or null", field="response")
    async with tl.db.transaction() as db:
        member = await campaigns.record_response(
            db,
            _campaign_id(request),
            client_id,
            response,
            body.get("revenue"),  # type: ignore[arg-type]
            now=tl.clock.now(),
        )
    return web.json_response(campaigns.member_json(member))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
