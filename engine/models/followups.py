"""Follow-ups: the next call the system owes each client. The row is the truth."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from engine.models._columns import utc


class FollowUpStatus(StrEnum):
    PENDING = "pending"  # owed: in a queue, or waiting for its time
    DONE = "done"  # a transition closed it (the call happened, or an auto event fired)
    CANCELLED = "cancelled"  # superseded: the client moved on without it


class FollowUp(SQLModel, table=True):
    __tablename__ = "followups"
    __table_args__ = (
        Index("ix_followups_pending_due", "status", "due_at"),
        # What the dispatcher claims: not yet fired. Call follow-ups stay pending after they
        # fire (the operator still owes the call), so without this every claim re-reads them.
        Index(
            "ix_followups_unfired_due",
            "due_at",
            sqlite_where=text("status = 'pending' AND fired_at IS NULL"),
            postgresql_where=text("status = 'pending' AND fired_at IS NULL"),
        ),
        # The invariant "exactly one pending follow-up per client" is a constraint, not a hope.
        Index(
            "ux_followups_one_pending",
            "client_id",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", index=True)
    status: str = Field(default=FollowUpStatus.PENDING, max_length=16)
    kind: str = Field(max_length=32)
    state: str = Field(max_length=64)  # the state it was scheduled for
    tier: str = Field(max_length=32, index=True)
    owner_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    due_at: datetime = utc()
    escalate_at: datetime | None = utc(nullable=True)
    escalation_level: int = 0  # 0 personal/tier as scheduled, 1 opened to tier, 2 supervisor
    escalation_steps: str = Field(default="", max_length=64)  # "tier,supervisor"
    grace_s: int = 0  # how long after due (and after each step) before the next step
    attempt: int = 0
    auto_event: str | None = Field(default=None, max_length=64)
    reason: str = Field(default="", max_length=500)  # why this time: shown to the operator
    created_at: datetime = utc()
    # Set once, by whichever node claims it first: "came due and was announced/applied".
    fired_at: datetime | None = utc(nullable=True)
    lateness_ms: int | None = None
    closed_at: datetime | None = utc(nullable=True)
