"""People who sign in: operators, supervisors, admins."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from engine.models._columns import json_dict, utc


class Role(StrEnum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    display_name: str = Field(default="", max_length=128)
    password_hash: str = Field(max_length=256)
    role: str = Field(max_length=16)
    tier: str | None = Field(default=None, max_length=32, index=True)
    extension: str | None = Field(default=None, max_length=32, unique=True)
    active: bool = True
    # Daily norms the supervisor dashboard compares against: calls, long_calls, ...
    norms: dict = json_dict()
    created_at: datetime = utc()
