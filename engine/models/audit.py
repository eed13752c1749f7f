"""Who did what: sign-ins, refusals, exports, publications, escalations."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from engine.models._columns import json_dict, utc


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = utc(index=True)
    actor_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=128)
    allowed: bool = True
    detail: dict = json_dict()


class KpiEvent(SQLModel, table=True):
    """One counted achievement (presentation, invoice, payment) for the day's slices."""

    __tablename__ = "kpi_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = utc(index=True)
    kind: str = Field(max_length=32, index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    tier: str = Field(max_length=32)
    client_id: int = Field(foreign_key="clients.id")
    transition_id: int = Field(foreign_key="transitions.id")


class AppSetting(SQLModel, table=True):
    """Settings an admin changes at run time (windows, holidays, norms)."""

    __tablename__ = "app_settings"

    key: str = Field(primary_key=True, max_length=64)
    value: dict = json_dict()
    updated_at: datetime = utc()
