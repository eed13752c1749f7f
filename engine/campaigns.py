"""Campaigns: call a segment (a saved filter or a group) with a held-out control arm.

A campaign is created as a draft (its segment, entry state, operators, control share and
dates checked here), launched by :mod:`engine.campaign_launch`, and then followed: the
members' responses (:func:`record_response`) and each arm's size for the reports.

A "mailing_follow_up" campaign is a campaign whose entry state's rule calls back after a
delay (the mailing must arrive first); responses to it (or to any campaign) are recorded
per member with :func:`record_response`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.campaign_operators import (
    checked_operator_ids,
)
from engine.definitions import current_version
from engine.errors import Conflict, InvalidInput, NotFound
from engine.filters import get_filter
from engine.groups import get_group
from engine.models import (
    Campaign,
    CampaignKind,
    CampaignMember,
    CampaignStatus,
    User,
)
from engine.runtime import Runtime
from engine.workflow import WorkflowDefinition

MAX_HOLDOUT = 0.5
RESPONSES = ("accepted", "declined", "no_response")


@dataclass(frozen=True)
class NewCampaign:
    name: str
    entry_state: str
    filter_id: int | None = None
    group_id: int | None = None
    kind: str = CampaignKind.CALLS
    holdout_share: float = 0.0
    seed: int | None = None  # None: drawn now and stored, so the split can be reproduced
    starts_on: date | None = None
    ends_on: date | None = None
    description: str = ""
    operator_ids: list[int] = field(default_factory=list)  # empty: the tier's pool


async def create_campaign(
    session: AsyncSession,
    runtime: Runtime,
    new: NewCampaign,
    *,
    now: datetime,
    actor: User | None = None,
) -> Campaign:
    name = new.name.strip() if isinstance(new.name, str) else ""
    if not name or len(name) > 128:
        raise InvalidInput("a name of 1 to 128 characters is required", field="name")
    if (await session.exec(select(Campaign.id).where(Campaign.name == name))).first():
        raise Conflict(f"a campaign named {name!r} already exists", field="name")
    if (new.filter_id is None) == (new.group_id is None):
        raise InvalidInput("give exactly one of filter_id and group_id", field="filter_id")
    if new.filter_id is not None:
        await get_filter(session, new.filter_id)
    else:
        await get_group(session, new.group_id)  # type: ignore[arg-type]
    if new.kind not in set(CampaignKind):
        raise InvalidInput(f"kind must be one of {[k.value for k in CampaignKind]}", field="kind")
    share = new.holdout_share
    if (
        isinstance(share, bool)
        or not isinstance(share, int | float)
        or not 0 <= share <= MAX_HOLDOUT
    ):
        raise InvalidInput(
            f"holdout_share must be between 0 and {MAX_HOLDOUT}", field="holdout_share"
        )
    if new.starts_on and new.ends_on and new.ends_on < new.starts_on:
        raise InvalidInput("ends_on is before starts_on", field="ends_on")
    version = await current_version(session)
    defn = await runtime.cache.get(session, version.id)  # type: ignore[arg-type]
    refusal = entry_refusal(defn, new.entry_state, new.kind)
    if refusal is not None:
        raise InvalidInput(refusal, field="entry_state")
    sdef = defn.states[new.entry_state]
    operator_ids = await checked_operator_ids(session, new.operator_ids, sdef.tier)
    campaign = Campaign(
        name=name,
        description=new.description[:500],
        filter_id=new.filter_id,
        group_id=new.group_id,
        entry_state=new.entry_state,
        tier=sdef.tier,
        kind=new.kind,
        starts_on=new.starts_on,
        ends_on=new.ends_on,
        holdout_share=float(share),
        seed=new.seed if new.seed is not None else secrets.randbelow(2**31),
        operator_ids=operator_ids,
        status=CampaignStatus.DRAFT,
        created_at=now,
        created_by=actor.id if actor else None,
    )
    session.add(campaign)
    await session.flush()
    return campaign


def entry_refusal(defn: WorkflowDefinition, state: str, kind: str) -> str | None:
    """Why ``state`` cannot be the entry state of a campaign of ``kind``; None when it can."""
    sdef = defn.states.get(state)
    if sdef is None:
        return f"{state!r} is not a state of the workflow"
    rule = sdef.follow_up
    if sdef.final or rule is None or rule.auto_event:
        # A campaign is calls: a state nobody calls in would enrol clients into nothing.
        return f"entry state {state!r} does not schedule a call"
    if kind == CampaignKind.MAILING_FOLLOW_UP and rule.due.mode == "after" and not rule.due.after:
        return (
            f"a mailing follow-up needs an entry state that calls back after a delay; "
            f"{state!r} calls at once"
        )
    return None


async def get_campaign(session: AsyncSession, campaign_id: int) -> Campaign:
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return campaign


async def list_campaigns(session: AsyncSession) -> list[Campaign]:
    return list(await session.exec(select(Campaign).order_by(col(Campaign.id).desc())))


async def record_response(
    session: AsyncSession,
    campaign_id: int,
    client_id: int,
    response: str | None,
    revenue: float | None,
    *,
    now: datetime,
) -> CampaignMember:
    """A member's answer to the campaign (either arm: a control client may buy unprompted)."""
    campaign = await get_campaign(session, campaign_id)
    if campaign.status != CampaignStatus.LAUNCHED:
        raise Conflict(f"campaign {campaign_id} has not been launched")
    if response is not None and response not in RESPONSES:
        raise InvalidInput(f"response must be one of {list(RESPONSES)} or null", field="response")
    if revenue is not None and (
        isinstance(revenue, bool) or not isinstance(revenue, int | float) or revenue < 0
    ):
        raise InvalidInput("revenue must be a number of 0 or more", field="revenue")
    member = (
        await session.exec(
            select(CampaignMember).where(
                CampaignMember.campaign_id == campaign_id, CampaignMember.client_id == client_id
            )
        )
    ).first()
    if member is None:
        raise NotFound(f"client {client_id} is not a member of campaign {campaign_id}")
    member.response = response
    member.revenue = float(revenue) if revenue is not None else None
    member.responded_at = now
    session.add(member)
    await session.flush()
    return member


def campaign_json(campaign: Campaign, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "description": campaign.description,
        "filter_id": campaign.filter_id,
        "group_id": campaign.group_id,
        "entry_state": campaign.entry_state,
        "tier": campaign.tier,
        "kind": campaign.kind,
        "starts_on": campaign.starts_on.isoformat() if campaign.starts_on else None,
        "ends_on": campaign.ends_on.isoformat() if campaign.ends_on else None,
        "holdout_share": campaign.holdout_share,
        "seed": campaign.seed,
        "operator_ids": list(campaign.operator_ids),
        "status": campaign.status,
        "created_at": campaign.created_at.isoformat(),
        "created_by": campaign.created_by,
        "launched_at": campaign.launched_at.isoformat() if campaign.launched_at else None,
        "arms": sizes or {"called": 0, "control": 0},
    }


def member_json(member: CampaignMember) -> dict[str, Any]:
    return {
        "campaign_id": member.campaign_id,
        "client_id": member.client_id,
        "arm": member.arm,
        "enrolled_at": member.enrolled_at.isoformat(),
        "response": member.response,
        "revenue": member.revenue,
        "responded_at": member.responded_at.isoformat() if member.responded_at else None,
    }


async def arm_sizes(session: AsyncSession) -> dict[int, dict[str, int]]:
    """campaign id -> {"called": n, "control": n}."""
    rows = await session.exec(
        select(CampaignMember.campaign_id, CampaignMember.arm, func.count()).group_by(
            col(CampaignMember.campaign_id), col(CampaignMember.arm)
        )
    )
    sizes: dict[int, dict[str, int]] = {}
    for cid, arm, n in rows:
        sizes.setdefault(cid, {"called": 0, "control": 0})[arm] = n
    return sizes
