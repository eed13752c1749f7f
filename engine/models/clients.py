"""Clients, their phone numbers and notes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from engine.models._columns import json_dict, utc


class SegmentClass(StrEnum):
    KEY = "key"
    IMPORTANT = "important"
    REGULAR = "regular"


class Client(SQLModel, table=True):
    __tablename__ = "clients"
    # Filters page in id order (engine/filters/paging.py), and the newest clients are the
    # ones still cold and new, from the last import's source. With a plain index
    # PostgreSQL pages "source = <last import>" by walking the primary key from the oldest
    # client and meets the matches last (0.46 s for a first page at a million clients);
    # with id after the column they come out of the index in page order (5 ms). SQLite's
    # indexes end in the rowid, so there they cost nothing more. Migration 0005.
    __table_args__ = (
        Index("ix_clients_tier_id", "tier", "id"),
        Index("ix_clients_state_id", "state", "id"),
        Index("ix_clients_source_id", "source", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    company: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=254)
    timezone: str | None = Field(default=None, max_length=64, index=True)
    segment_class: str = Field(default=SegmentClass.REGULAR, max_length=16, index=True)
    custom: dict = json_dict()
    owner_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    source: str = Field(default="", max_length=64)
    do_not_call: bool = False
    created_at: datetime = utc()
    updated_at: datetime = utc()

    # Workflow position: the definition version the state belongs to, the state, its tier.
    workflow_version_id: int = Field(foreign_key="workflow_versions.id", index=True)
    state: str = Field(max_length=64)
    tier: str = Field(max_length=32)
    attempts: int = 0  # consecutive unanswered attempts in this state
    # Bumped by every transition: two operators acting at once cannot both win.
    revision: int = 0
    last_contact_at: datetime | None = utc(nullable=True, index=True)
    last_outcome: str | None = Field(default=None, max_length=64, index=True)


class ClientPhone(SQLModel, table=True):
    __tablename__ = "client_phones"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", index=True)
    e164: str = Field(max_length=20, index=True)
    raw: str = Field(default="", max_length=64)
    label: str = Field(default="", max_length=32)


class ClientNote(SQLModel, table=True):
    __tablename__ = "client_notes"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", index=True)
    author_id: int | None = Field(default=None, foreign_key="users.id")
    at: datetime = utc()
    text: str = Field(max_length=4000)
