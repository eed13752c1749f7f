"""Launching a campaign (:mod:`engine.campaigns`), in the caller's transaction.

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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.campaign_operators import Assignment, active_operators, assign
from engine.campaigns import get_campaign
from engine.errors import Conflict
from engine.filters import Context, get_filter, where_for
from engine.models import (
    Arm,
    AuditEntry,
    Campaign,
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
            update(FollowUp)
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
