"""Campaigns: call a segment (a saved filter or a group) with a held-out control arm.

Launching takes the segment's members at that moment and sorts them:

- not eligible, skipped and reported: flagged do-not-call, in a final state (do_not_call,
  ...), or working in another tier than the campaign's entry state (a campaign never pulls
  a sales client back to cold, nor pushes a cold lead past its qualification);
- eligible: shuffled with the campaign's seed; the first ``round(n × holdout_share)`` form
  the control arm (left exactly where they are: no transition, follow-up untouched), the
  rest the called arm.

The called arm enters the campaign's entry state as one transition per client, event
``campaign:<id>``: its pending follow-up is cancelled and the entry state's rule plans the
next one (the planner keeps calls inside the client's calling window), in the same
transaction as the members' rows and the audit entry. A campaign with operators gives each
called client an owner first (:mod:`engine.campaign_operators`) and that first call is the
owner's, whatever the state's rule says of later ones: the operators' queues are the point.

A "mailing_follow_up" campaign is the same with an entry state whose rule calls back after
a delay (the mailing must arrive first); responses to it (or to any campaign) are recorded
per member with :func:`record_response`.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.campaign_operators import (
    Assignment,
    active_operators,
    assign,
    checked_operator_ids,
)
from engine.definitions import current_version
from engine.errors import Conflict, InvalidInput, NotFound
from engine.filters import Context, get_filter, where_for
from engine.groups import get_group
from engine.models import (
    Arm,
    AuditEntry,
    Campaign,
    CampaignKind,
    CampaignMember,
    CampaignStatus,
    Client,
    ClientPhone,
    FollowUp,
    FollowUpStatus,
    GroupMember,
    TransitionRecord,
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


@dataclass
class LaunchReport:
    called: list[int] = field(default_factory=list)
    control: list[int] = field(default_factory=list)
    skipped: dict[str, list[int]] = field(default_factory=dict)  # reason -> client ids
    operators: Assignment = field(default_factory=Assignment)  # empty for a pool campaign

    def to_json(self) -> dict[str, object]:
        return {
            "called": len(self.called),
            "control": len(self.control),
            "skipped": {
                k: {"count": len(v), "client_ids": v[:100]} for k, v in self.skipped.items()
            },
            **self.operators.to_json(),
        }


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


def split_holdout(client_ids: list[int], share: float, seed: int) -> tuple[list[int], list[int]]:
    """(called, control): a seeded shuffle of the sorted ids, so a rerun gives the same split."""
    ids = sorted(client_ids)
    random.Random(seed).shuffle(ids)
    k = round(len(ids) * share)
    return sorted(ids[k:]), sorted(ids[:k])


async def launch(
    session: AsyncSession,
    runtime: Runtime,
    campaign_id: int,
    *,
    actor: User | None = None,
    tz: str = "UTC",
) -> tuple[Campaign, LaunchReport]:
    """Launch within the caller's transaction (see the module docstring for the rules)."""
    now = runtime.clock.now()
    campaign = await get_campaign(session, campaign_id)
    if campaign.status != CampaignStatus.DRAFT:
        raise Conflict(f"campaign {campaign_id} was already launched")
    today = now.astimezone(ZoneInfo(tz)).date()
    if campaign.starts_on and today < campaign.starts_on:
        raise Conflict(f"campaign {campaign_id} starts on {campaign.starts_on.isoformat()}")
    if campaign.ends_on and today > campaign.ends_on:
        raise Conflict(f"campaign {campaign_id} ended on {campaign.ends_on.isoformat()}")

    ids = await _segment_ids(session, campaign, Context(now=now, tz=tz))
    clients = await _lock_clients(session, ids)
    report = LaunchReport()
    eligible: list[int] = []
    for client in clients:
        defn = await runtime.cache.get(session, client.workflow_version_id)
        sdef = defn.states.get(client.state)
        reason = None
        if client.do_not_call:
            reason = "do_not_call"
        elif sdef is None or sdef.final:
            reason = "final_state"
        elif sdef.tier != campaign.tier or campaign.entry_state not in defn.states:
            reason = "other_tier"
        if reason:
            report.skipped.setdefault(reason, []).append(client.id)  # type: ignore[arg-type]
        else:
            eligible.append(client.id)  # type: ignore[arg-type]
    report.called, report.control = split_holdout(eligible, campaign.holdout_share, campaign.seed)

    by_id = {c.id: c for c in clients}
    if campaign.operator_ids:  # decided before any write: a refusal leaves nothing behind
        report.operators = assign(
            [by_id[cid] for cid in report.called],
            list(campaign.operator_ids),
            await active_operators(session, campaign.tier),
        )
    owners = report.operators.owners
    if report.called:
        await session.exec(
            update(FollowUp)  # type: ignore[call-overload]
            .where(col(FollowUp.client_id).in_(report.called), col(FollowUp.status) == "pending")
            .values(status=FollowUpStatus.CANCELLED, closed_at=now)
        )
    phones = await _primary_phones(session, report.called)
    for cid in report.called:
        await _enter(
            session, runtime, campaign, by_id[cid], phones.get(cid), owners.get(cid), now, actor
        )
    for arm, members in ((Arm.CALLED, report.called), (Arm.CONTROL, report.control)):
        session.add_all(
            CampaignMember(campaign_id=campaign.id, client_id=cid, arm=arm, enrolled_at=now)  # type: ignore[arg-type]
            for cid in members
        )
    campaign.status, campaign.launched_at = CampaignStatus.LAUNCHED, now
    session.add(campaign)
    session.add(
        AuditEntry(
            at=now,
            actor_id=actor.id if actor else None,
            action="campaign.launch",
            target=f"campaign:{campaign.id}",
            # Counts only: the members' rows and the follow-ups say who was who.
            detail={
                "called": len(report.called),
                "control": len(report.control),
                "skipped": {k: len(v) for k, v in report.skipped.items()},
                **report.operators.to_json(),
            },
        )
    )
    await session.flush()
    return campaign, report


async def _segment_ids(session: AsyncSession, campaign: Campaign, ctx: Context) -> list[int]:
    if campaign.filter_id is not None:
        row = await get_filter(session, campaign.filter_id)
        where = where_for(session, row.criteria, ctx)
        return list(await session.exec(select(Client.id).where(where).order_by(col(Client.id))))  # type: ignore[arg-type]
    query = select(GroupMember.client_id).where(GroupMember.group_id == campaign.group_id)
    return sorted(await session.exec(query))


async def _lock_clients(session: AsyncSession, ids: list[int]) -> list[Client]:
    """The members' rows, locked on PostgreSQL in the runtime's order (follow-ups, then
    clients), so an operator's outcome and a launch wait for each other instead of racing."""
    out: list[Client] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        await session.exec(
            select(FollowUp.id)
            .where(col(FollowUp.client_id).in_(chunk), col(FollowUp.status) == "pending")
            .order_by(col(FollowUp.id))
            .with_for_update()
        )
        rows = await session.exec(
            select(Client)
            .where(col(Client.id).in_(chunk))
            .order_by(col(Client.id))
            .with_for_update()
        )
        out.extend(rows)
    return out


async def _primary_phones(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    phones: dict[int, str] = {}
    for start in range(0, len(ids), 1000):
        rows = await session.exec(
            select(ClientPhone.client_id, ClientPhone.e164)
            .where(col(ClientPhone.client_id).in_(ids[start : start + 1000]))
            .order_by(col(ClientPhone.id))
        )
        for cid, e164 in rows:
            phones.setdefault(cid, e164)  # the first number given is the primary one
    return phones


async def _enter(
    session: AsyncSession,
    runtime: Runtime,
    campaign: Campaign,
    client: Client,
    primary: str | None,
    owner: int | None,
    now: datetime,
    actor: User | None,
) -> None:
    """Move one client into the entry state: Runtime.enroll_in's steps for a client who is
    already in the workflow (its pending follow-up was cancelled by the caller). ``owner``
    (a campaign with operators) becomes the client's operator and owns the first call."""
    defn = await runtime.cache.get(session, client.workflow_version_id)
    state = campaign.entry_state
    session.add(
        TransitionRecord(
            client_id=client.id,  # type: ignore[arg-type]
            at=now,
            actor_id=actor.id if actor else None,
            event=f"campaign:{campaign.id}",
            from_state=client.state,
            to_state=state,
            from_tier=client.tier,
            to_tier=defn.tier_of(state),
            workflow_version_id=client.workflow_version_id,
            note=f"campaign {campaign.name}"[:2000],
        )
    )
    client.state, client.tier, client.attempts = state, defn.tier_of(state), 0
    client.revision += 1  # a card open on the old state must not overwrite the move
    client.updated_at = now
    if owner is not None:
        client.owner_id = owner
    session.add(client)
    followup = runtime.plan_entry(client, defn.states[state], primary)
    if followup is not None:
        if owner is not None and followup.auto_event is None:
            # An entry state whose rule says "tier" would put the call in the pool, where
            # any operator of the tier takes it: the supervisor chose who calls.
            followup.owner_id = owner
        session.add(followup)


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
