"""Segments: saved filters (dynamic), groups (static), and contact imports.

Campaigns come later and will point at a filter or a group (``filter_id`` / ``group_id``);
a control group is a group too, so nothing here needs to change for them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, ForeignKey, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from engine.models._columns import json_dict, utc


class SavedFilter(SQLModel, table=True):
    """Criteria, not members: whoever matches when it is read is in it."""

    __tablename__ = "saved_filters"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    description: str = Field(default="", max_length=500)
    criteria: dict = json_dict()
    owner_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    created_at: datetime = utc()
    updated_at: datetime = utc()


class Group(SQLModel, table=True):
    """A fixed list of clients: made from a filter's result at one moment, or by hand."""

    __tablename__ = "client_groups"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    description: str = Field(default="", max_length=500)
    owner_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    # Where the first members came from (kept for the record; membership never re-reads it).
    source_filter_id: int | None = Field(default=None, foreign_key="saved_filters.id")
    source_criteria: dict = json_dict()
    created_at: datetime = utc()


class GroupMember(SQLModel, table=True):
    __tablename__ = "client_group_members"
    __table_args__ = (UniqueConstraint("group_id", "client_id", name="ux_group_member"),)

    id: int | None = Field(default=None, primary_key=True)
    # Deleting a group deletes its memberships with it.
    group_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("client_groups.id", ondelete="CASCADE"), nullable=False
        )
    )
    client_id: int = Field(foreign_key="clients.id", index=True)
    added_at: datetime = utc()


class ImportStatus(StrEnum):
    RUNNING = "running"  # under way, or the process died: the next run resumes it
    INTERRUPTED = "interrupted"  # stopped by an error after some batches: resumable
    DONE = "done"


class ImportJob(SQLModel, table=True):
    """One CSV import, resumable: batches commit together with ``last_row``."""

    __tablename__ = "import_jobs"

    id: int | None = Field(default=None, primary_key=True)
    file_name: str = Field(max_length=500)
    sha256: str = Field(max_length=64, index=True)
    file_size: int = 0
    encoding: str = Field(default="", max_length=16)
    mapping: dict = json_dict()
    on_duplicate: str = Field(default="merge", max_length=16)
    status: str = Field(default=ImportStatus.RUNNING, max_length=16)
    total_rows: int = 0  # data rows seen so far (header excluded)
    committed_rows: int = 0  # data rows whose batch committed (imported, merged or refused)
    last_row: int = 0  # file row number of the last committed row (header is row 1)
    created: int = 0
    merged: int = 0
    error_count: int = 0
    actor_id: int | None = Field(default=None, foreign_key="users.id")
    started_at: datetime = utc()
    finished_at: datetime | None = utc(nullable=True)
    message: str = Field(default="", max_length=2000)


class ImportRowError(SQLModel, table=True):
    """A row that was not imported, and why (``ImportError`` would shadow the builtin)."""

    __tablename__ = "import_errors"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("import_jobs.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    row: int  # file row number (header is row 1)
    column: str = Field(default="", max_length=200)
    message: str = Field(max_length=1000)
