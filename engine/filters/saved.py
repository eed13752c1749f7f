"""Saved filters: named criteria, stored and edited; what they match is read when asked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import Conflict, InvalidInput, NotFound
from engine.filters.criteria import validate_criteria
from engine.models import Group, SavedFilter


async def create_filter(
    session: AsyncSession,
    name: str,
    criteria: dict,
    *,
    owner_id: int | None,
    now: datetime,
    description: str = "",
) -> SavedFilter:
    name = _name(name)
    validate_criteria(criteria)
    if (await session.exec(select(SavedFilter.id).where(SavedFilter.name == name))).first():
        raise Conflict(f"a filter named {name!r} already exists", field="name")
    row = SavedFilter(
        name=name,
        description=description[:500],
        criteria=criteria,
        owner_id=owner_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def get_filter(session: AsyncSession, filter_id: int) -> SavedFilter:
    row = await session.get(SavedFilter, filter_id)
    if row is None:
        raise NotFound(f"filter {filter_id} does not exist")
    return row


async def list_filters(session: AsyncSession) -> list[SavedFilter]:
    return list(await session.exec(select(SavedFilter).order_by(col(SavedFilter.name))))


async def update_filter(
    session: AsyncSession,
    filter_id: int,
    *,
    now: datetime,
    name: str | None = None,
    criteria: dict | None = None,
    description: str | None = None,
) -> SavedFilter:
    row = await get_filter(session, filter_id)
    if name is not None and _name(name) != row.name:
        taken = await session.exec(select(SavedFilter.id).where(SavedFilter.name == _name(name)))
        if taken.first():
            raise Conflict(f"a filter named {name!r} already exists", field="name")
        row.name = _name(name)
    if criteria is not None:
        validate_criteria(criteria)
        row.criteria = criteria
    if description is not None:
        row.description = description[:500]
    row.updated_at = now
    session.add(row)
    await session.flush()
    return row


async def delete_filter(session: AsyncSession, filter_id: int) -> None:
    row = await get_filter(session, filter_id)
    # Groups made from it keep their members and the criteria they copied; only the link goes.
    await session.exec(
        update(Group).where(col(Group.source_filter_id) == filter_id).values(source_filter_id=None)
    )
    await session.delete(row)


def filter_json(row: SavedFilter) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "criteria": row.criteria,
        "owner_id": row.owner_id,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 128:
        raise InvalidInput("a name of 1 to 128 characters is required", field="name")
    return name.strip()
