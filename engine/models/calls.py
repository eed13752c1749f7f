"""Calls and the raw PBX events that built them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from engine.models._columns import json_dict, utc

LONG_CALL_SECONDS = 600


class CallStatus(StrEnum):
    """A ``calls`` row is one leg: one extension's part in a PBX call."""

    RINGING = "ringing"
    ANSWERED = "answered"  # up: the operator is talking
    ENDED = "ended"
    # Ended unanswered while another extension took the call (a ring group's or a queue's
    # other leg): never this operator's call, so no wrap-up, and not on the client's card.
    TAKEN_ELSEWHERE = "taken_elsewhere"


# A missed call: inbound, ended, never answered (a leg another phone took is taken_elsewhere).
# The partial index ix_calls_missed and the missed-calls query both say it with this text:
# SQLite uses a partial index only for a query whose own terms imply its condition.
MISSED_CONDITION = "direction = 'inbound' AND status = 'ended' AND answered_at IS NULL"
# What the missed-calls list reads of each missed call (engine/missed_calls.py), and the
# condition's own columns: SQLite 3.40 reads a row to check them even when the partial index
# implies them.
MISSED_INDEX_COLUMNS = (
    "started_at",
    "number",
    "pbx_call_id",
    "client_id",
    "operator_id",
    "direction",
    "status",
    "answered_at",
)


class Call(SQLModel, table=True):
    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("pbx_call_id", "extension"),
        # A number's calls in time order: whether a missed call was returned since (a dial,
        # or an answer), read from the index alone.
        Index("ix_calls_number_started_at", "number", "started_at", "direction", "answered_at"),
        # The missed calls of the week, without reading the week's answered ones: every
        # console's queue refresh lists them (bench/missed_calls.py), from the index alone.
        Index(
            "ix_calls_missed",
            *MISSED_INDEX_COLUMNS,
            sqlite_where=text(MISSED_CONDITION),
            postgresql_where=text(MISSED_CONDITION),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    pbx_call_id: str = Field(max_length=64, index=True)
    direction: str = Field(max_length=16)
    extension: str = Field(max_length=32, index=True)
    operator_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    client_id: int | None = Field(default=None, foreign_key="clients.id", index=True)
    number: str = Field(max_length=64)  # the customer's number as normalised (or raw)
    status: str = Field(default=CallStatus.RINGING, max_length=16)  # a CallStatus
    started_at: datetime = utc(index=True)
    answered_at: datetime | None = utc(nullable=True)
    ended_at: datetime | None = utc(nullable=True)
    duration_s: int | None = None  # talk time, answer to hangup
    long_call: bool = False
    outcome: str | None = Field(default=None, max_length=64)
    checklist: dict = json_dict()
    notes: str = Field(default="", max_length=4000)
    override_reason: str | None = Field(default=None, max_length=500)


class CallEventRecord(SQLModel, table=True):
    """Every PBX event once: the unique key makes a repeated webhook delivery a no-op."""

    __tablename__ = "call_events"
    __table_args__ = (UniqueConstraint("pbx_call_id", "event", "extension"),)

    id: int | None = Field(default=None, primary_key=True)
    pbx_call_id: str = Field(max_length=64)
    event: str = Field(max_length=16)
    extension: str = Field(max_length=32)
    direction: str = Field(max_length=16)
    from_number: str = Field(max_length=64)
    to_number: str = Field(max_length=64)
    at: datetime | None = utc(nullable=True)
    received_at: datetime = utc()


class MissedCallDismissal(SQLModel, table=True):
    """ "No call back needed": a number's missed calls up to ``at`` leave the call-back list
    (``engine.missed_calls``); a later missed call from it is listed again."""

    __tablename__ = "missed_call_dismissals"

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=64, index=True)
    at: datetime = utc()
    user_id: int = Field(foreign_key="users.id")
