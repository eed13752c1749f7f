"""The client base as CSV, produced chunk by chunk.

The whole base never sits in memory: rows are read by keyset pagination (``id > last``,
a bounded chunk at a time, each chunk in its own short session so no read transaction is
held open while a slow client downloads), and each chunk becomes CSV text for the caller
to send. Who may export, and the audit of it, is the caller's business (the API allows
admins only).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import and_
from sqlmodel import col, select

from engine.models import Client, ClientPhone, FollowUp, FollowUpStatus, User
from engine.storage.database import Database

COLUMNS = (
    "id",
    "name",
    "company",
    "email",
    "phones",
    "timezone",
    "segment_class",
    "tier",
    "state",
    "owner",
    "attempts",
    "do_not_call",
    "source",
    "created_at",
    "last_contact_at",
    "last_outcome",
    "next_followup_at",
)
CHUNK = 500
# A spreadsheet runs a cell that starts with one of these as a formula ("CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def header() -> str:
    return _csv([list(COLUMNS)])


def _csv(rows: list[list[object]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


async def client_rows(
    db: Database, *, chunk: int | None = None
) -> AsyncIterator[list[list[object]]]:
    """Yield the base as lists of CSV rows (``COLUMNS`` order), ``chunk`` clients at a time."""
    chunk = chunk or CHUNK
    last_id = 0
    while True:
        async with db.session() as session:
            clients = (
                await session.exec(
                    select(Client, User.username, FollowUp.due_at)
                    .outerjoin(User, col(User.id) == col(Client.owner_id))
                    .outerjoin(
                        FollowUp,
                        # At most one pending follow-up per client (a unique index).
                        and_(
                            col(FollowUp.client_id) == col(Client.id),
                            col(FollowUp.status) == FollowUpStatus.PENDING,
                        ),
                    )
                    .where(col(Client.id) > last_id)
                    .order_by(col(Client.id))
                    .limit(chunk)
                )
            ).all()
            if not clients:
                return
            ids = [c.id for c, _, _ in clients]
            numbers: dict[int, list[str]] = {}
            for client_id, e164 in (
                await session.exec(
                    select(ClientPhone.client_id, ClientPhone.e164)
                    .where(col(ClientPhone.client_id).in_(ids))
                    .order_by(col(ClientPhone.id))
                )
            ).all():
                numbers.setdefault(client_id, []).append(e164)
        yield [
            [
                c.id,
                _text(c.name),
                _text(c.company),
                _text(c.email),
                ";".join(numbers.get(c.id, [])),  # type: ignore[arg-type]
                c.timezone or "",
                c.segment_class,
                c.tier,
                c.state,
                owner or "",
                c.attempts,
                "yes" if c.do_not_call else "no",
                _text(c.source),
                _iso(c.created_at),
                _iso(c.last_contact_at),
                c.last_outcome or "",
                _iso(due),
            ]
            for c, owner, due in clients
        ]
        last_id = ids[-1]  # type: ignore[assignment]
        if len(clients) < chunk:
            return


async def csv_chunks(db: Database, *, chunk: int | None = None) -> AsyncIterator[tuple[str, int]]:
    """The header, then each chunk as CSV text with the number of clients in it."""
    yield header(), 0
    async for rows in client_rows(db, chunk=chunk):
        yield _csv(rows), len(rows)
