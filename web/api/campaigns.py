"""Campaigns for supervisors and admins: create, launch, record responses, read the report;
list the members (with names) and the states a campaign may enter, for the segments page.

Operators get 403: a campaign spans a whole segment and its report compares colleagues' work.
"""

from __future__ import annotations

import logging
from datetime import date

from aiohttp import web
from sqlalchemy import func
from sqlmodel import col, select

from engine import campaign_launch, campaigns, control_group, funnel
from engine.campaigns import NewCampaign
from engine.clients import summary
from engine.definitions import current_version
from engine.errors import InvalidInput
from engine.models import Arm, CampaignKind, CampaignMember, Client, Role, User
from engine.service import QUEUE_CHANNEL, Tierline
from web.api.session import read_json
from web.keys import TIERLINE
from web.middleware import current_user

log = logging.getLogger("tierline.web")
routes = web.RouteTableDef()
STAFF = (Role.SUPERVISOR, Role.ADMIN)
MAX_PAGE = 500


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
    ends_on?, description?, operator_ids?} -> 201 campaign. ``operator_ids``: active
    operators of the entry state's tier who take the calls; absent or [] the tier's pool."""
    user, tl = _staff(request)
    body = await read_json(request)
    operator_ids = body.get("operator_ids")
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
        # Checked by the engine (a list of ids of the tier's active operators).
        operator_ids=[] if operator_ids is None else operator_ids,
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


@routes.get("/api/campaigns/{campaign_id:\\d+}")
async def detail(request: web.Request) -> web.Response:
    _, tl = _staff(request)
    async with tl.db.session() as db:
        row = await campaigns.get_campaign(db, _campaign_id(request))
        counts = await db.exec(
            select(CampaignMember.arm, func.count())
            .where(col(CampaignMember.campaign_id) == row.id)
            .group_by(col(CampaignMember.arm))
        )
        sizes = {"called": 0, "control": 0, **dict(counts.all())}
    return web.json_response(campaigns.campaign_json(row, sizes))


@routes.post("/api/campaigns/{campaign_id:\\d+}/launch")
async def launch(request: web.Request) -> web.Response:
    user, tl = _staff(request)
    async with tl.db.transaction() as db:
        row, report = await campaign_launch.launch(
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


@routes.get("/api/campaigns/entry-states")
async def entry_states(request: web.Request) -> web.Response:
    """The current workflow's states a campaign may enter, and which of them also suit a
    mailing follow-up: the page offers these rather than letting every state be refused."""
    _, tl = _staff(request)
    async with tl.db.session() as db:
        defn = tl.cache.remember(await current_version(db))
    mailing = CampaignKind.MAILING_FOLLOW_UP
    states = [
        {
            "name": s.name,
            "title": s.title,
            "tier": s.tier,
            "mailing": campaigns.entry_refusal(defn, s.name, mailing) is None,
        }
        for s in defn.states.values()
        if campaigns.entry_refusal(defn, s.name, CampaignKind.CALLS) is None
    ]
    return web.json_response({"states": states})


@routes.get("/api/campaigns/{campaign_id:\\d+}/members")
async def members(request: web.Request) -> web.Response:
    """?arm=called|control&after_id=&limit= -> the members with their clients' names, by
    client id (keyset pages), so responses can be recorded against a name, not an id."""
    _, tl = _staff(request)
    arm = request.query.get("arm") or None
    if arm is not None and arm not in set(Arm):
        raise InvalidInput(f"arm must be one of {[a.value for a in Arm]}", field="arm")
    limit = min(_query_int(request, "limit", 50), MAX_PAGE) or 1
    after = _query_int(request, "after_id", 0)
    m = CampaignMember
    query = (
        select(m, Client)
        .join(Client, col(Client.id) == col(m.client_id))
        .where(col(m.campaign_id) == _campaign_id(request), col(m.client_id) > after)
        .order_by(col(m.client_id))
        .limit(limit)
    )
    if arm is not None:
        query = query.where(col(m.arm) == arm)
    async with tl.db.session() as db:
        await campaigns.get_campaign(db, _campaign_id(request))
        rows = list(await db.exec(query))
    return web.json_response(
        {
            "members": [{**campaigns.member_json(mb), "client": summary(c)} for mb, c in rows],
            "next_after": rows[-1][0].client_id if len(rows) == limit else None,
        }
    )


def _query_int(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise InvalidInput(f"{name} must be a whole number, 0 or more", field=name)
    return int(text)


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
            body.get("revenue"),
            now=tl.clock.now(),
        )
    return web.json_response(campaigns.member_json(member))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
