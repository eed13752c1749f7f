"""Campaigns: a segment called at one go, with a randomly held-out control arm."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Column, Float, ForeignKey, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from engine.models._columns import utc
from engine.storage.types import JSONList


class CampaignKind(StrEnum):
    CALLS = "calls"  # call the segment now (from the entry state's rule)
    MAILING_FOLLOW_UP = "mailing_follow_up"  # a mailing went out: call back after a delay


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    LAUNCHED = "launched"


class Arm(StrEnum):
    CALLED = "called"
    CONTROL = "control"  # held out: neither called nor moved, measured all the same


class Campaign(SQLModel, table=True):
    __tablename__ = "campaigns"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    description: str = Field(default="", max_length=500)
    # Exactly one source: a saved filter (read at launch) or a group.
    filter_id: int | None = Field(default=None, foreign_key="saved_filters.id")
    group_id: int | None = Field(default=None, foreign_key="client_groups.id")
    entry_state: str = Field(max_length=64)
    tier: str = Field(max_length=32, index=True)  # the entry state's tier
    kind: str = Field(default=CampaignKind.CALLS, max_length=32)
    starts_on: date | None = None
    ends_on: date | None = None
    holdout_share: float = 0.0  # 0 .. 0.5 of the eligible members go to the control arm
    seed: int = 0  # the holdout draw is reproducible from it
    # Active operators of ``tier`` (sorted ids) who take the called clients; empty: the
    # tier's pool. The server default fills the campaigns made before there was a choice.
    operator_ids: list[int] = Field(
        default_factory=list,
        sa_column=Column(JSONList, nullable=False, server_default=text("'[]'")),
    )
    status: str = Field(default=CampaignStatus.DRAFT, max_length=16)
    created_at: datetime = utc()
    created_by: int | None = Field(default=None, foreign_key="users.id")
    launched_at: datetime | None = utc(nullable=True)


class CampaignMember(SQLModel, table=True):
    __tablename__ = "campaign_members"
    __table_args__ = (UniqueConstraint("campaign_id", "client_id", name="ux_campaign_member"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    client_id: int = Field(foreign_key="clients.id", index=True)
    arm: str = Field(max_length=16)
    enrolled_at: datetime = utc()
    response: str | None = Field(default=None, max_length=32)
    revenue: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    responded_at: datetime | None = utc(nullable=True)
