"""Groups: static lists of clients (a filter's result frozen at one moment, or picked by hand).

Membership is rows, so a client who later matches the filter a group was made from does
not join it. Every bulk change is one INSERT … SELECT or DELETE, whatever the list's size.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, exists, insert, literal
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import Conflict, InvalidInput, NotFound
from engine.filters import Context, where_for
from engine.models import Client, Group, GroupMember
from engine.storage.types import UTCDateTime

MAX_IDS = 10_000  # per bulk request; larger lists go in several requests


async def create_group(
    session: AsyncSession,
    name: str,
    *,
    now: datetime,
    owner_id: int | None = None,
    description: str = "",
    criteria: dict | None = None,
    ctx: Context | None = None,
    source_filter_id: int | None = None,
) -> tuple[Group, int]:
    """A new group, filled with ``criteria``'s current result if given; returns (group, size)."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 128:
        raise InvalidInput("a name of 1 to 128 characters is required", field="name")
    name = name.strip()
    if (await session.exec(select(Group.id).where(Group.name == name))).first():
        raise Conflict(f"a group named {name!r} already exists", field="name")
    where = None
    if criteria is not None:
        where = where_for(session, criteria, ctx or Context(now=now, tz="UTC"))
    group = Group(
        name=name,
        description=description[:500],
        owner_id=owner_id,
        source_filter_id=source_filter_id,
        source_criteria=criteria or {},
        created_at=now,
    )
    session.add(group)
    await session.flush()
    size = 0
    if where is not None:
        chosen = select(literal(group.id), col(Client.id), literal(now, UTCDateTime())).where(where)
        result = await session.exec(
            insert(GroupMember).from_select(["group_id", "client_id", "added_at"], chosen)
        )
        size = result.rowcount
    return group, size


async def get_group(session: AsyncSession, group_id: int) -> Group:
    group = await session.get(Group, group_id)
    if group is None:
        raise NotFound(f"group {group_id} does not exist")
    return group


async def list_groups(session: AsyncSession) -> list[tuple[Group, int]]:
    sizes = (
        select(GroupMember.group_id, func.count().label("n"))
        .group_by(col(GroupMember.group_id))
        .subquery()
    )
    rows = await session.exec(
        select(Group, sizes.c.n)
        .outerjoin(sizes, sizes.c.group_id == Group.id)
        .order_by(col(Group.name))
    )
    return [(g, n or 0) for g, n in rows]


async def delete_group(session: AsyncSession, group_id: int) -> None:
    group = await get_group(session, group_id)
    # Explicit rather than trusting ON DELETE CASCADE (SQLite needs foreign_keys=ON for it).
    await session.exec(delete(GroupMember).where(col(GroupMember.group_id) == group_id))
    await session.delete(group)


def _ids(client_ids: object) -> list[int]:
    if not isinstance(client_ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in client_ids
    ):
        raise InvalidInput("client_ids must be a list of client ids", field="client_ids")
    if len(client_ids) > MAX_IDS:
        raise InvalidInput(f"at most {MAX_IDS} ids per request", field="client_ids")
    return sorted(set(client_ids))


async def add_members(
    session: AsyncSession, group_id: int, client_ids: list[int], *, now: datetime
) -> int:
    """Add the clients that exist and are not members yet; returns how many joined."""
    await get_group(session, group_id)
    ids = _ids(client_ids)
    if not ids:
        return 0
    already = exists().where(
        col(GroupMember.group_id) == group_id, col(GroupMember.client_id) == col(Client.id)
    )
    chosen = select(literal(group_id), col(Client.id), literal(now, UTCDateTime())).where(
        col(Client.id).in_(ids), ~already
    )
    result = await session.exec(
        insert(GroupMember).from_select(["group_id", "client_id", "added_at"], chosen)
    )
    return result.rowcount


async def remove_members(session: AsyncSession, group_id: int, client_ids: list[int]) -> int:
    await get_group(session, group_id)
    ids = _ids(client_ids)
    if not ids:
        return 0
    result = await session.exec(
        delete(GroupMember).where(
            col(GroupMember.group_id) == group_id, col(GroupMember.client_id).in_(ids)
        )
    )
    return result.rowcount


async def count_members(session: AsyncSession, group_id: int) -> int:
    return (
        await session.exec(
            select(func.count()).select_from(GroupMember).where(GroupMember.group_id == group_id)
        )
    ).one()


async def list_members(
    session: AsyncSession, group_id: int, *, after_id: int = 0, limit: int = 50
) -> list[Client]:
    """Members ordered by client id, keyset-paginated."""
    await get_group(session, group_id)
    rows = await session.exec(
        select(Client)
        .join(GroupMember, col(GroupMember.client_id) == col(Client.id))
        .where(GroupMember.group_id == group_id, col(Client.id) > after_id)
        .order_by(col(Client.id))
        .limit(max(1, min(limit, 500)))
    )
    return list(rows)


def group_json(group: Group, size: int) -> dict[str, object]:
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "owner_id": group.owner_id,
        "source_filter_id": group.source_filter_id,
        "source_criteria": group.source_criteria,
        "created_at": group.created_at.isoformat(),
        "size": size,
    }
