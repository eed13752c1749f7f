"""Published workflow definitions and what clients went through."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from engine.models._columns import utc


class WorkflowVersion(SQLModel, table=True):
    """Every published version is kept; clients point at the one they run on."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, index=True)
    version: int
    source: str = Field(sa_column=Column(Text, nullable=False))
    digest: str = Field(max_length=64)
    is_current: bool = Field(default=True, index=True)
    published_at: datetime = utc()
    published_by: int | None = Field(default=None, foreign_key="users.id")
    note: str = Field(default="", max_length=500)


class TransitionRecord(SQLModel, table=True):
    """One applied event: who, when, from where to where."""

    __tablename__ = "transitions"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", index=True)
    at: datetime = utc(index=True)
    actor_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    event: str = Field(max_length=64)
    from_state: str = Field(max_length=64)
    to_state: str = Field(max_length=64)
    from_tier: str = Field(max_length=32)
    to_tier: str = Field(max_length=32)
    workflow_version_id: int = Field(foreign_key="workflow_versions.id")
    call_id: int | None = Field(default=None, foreign_key="calls.id")
    kpi: str | None = Field(default=None, max_length=32, index=True)
    note: str = Field(default="", max_length=2000)
