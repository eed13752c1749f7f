"""Running a filter: the exact count and keyset pages in id order."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.filters.context import Context
from engine.filters.criteria import where_for
from engine.models import Client

MAX_PAGE = 500


@dataclass(frozen=True)
class Page:
    count: int
    clients: list[Client]
    next_after: int | None  # pass as after_id for the next page; None at the end


async def count_matching(session: AsyncSession, criteria: object, ctx: Context) -> int:
    where = where_for(session, criteria, ctx)
    return (await session.exec(select(func.count()).select_from(Client).where(where))).one()


async def page_matching(
    session: AsyncSession, criteria: object, ctx: Context, *, after_id: int = 0, limit: int = 50
) -> list[Client]:
    """One page ordered by id, keyset-paginated (no OFFSET: page 1,000 costs what page 1 does)."""
    where = where_for(session, criteria, ctx)
    rows = await session.exec(
        select(Client)
        .where(where, col(Client.id) > after_id)
        .order_by(col(Client.id))
        .limit(_limit(limit))
    )
    return list(rows)


async def preview(
    session: AsyncSession, criteria: object, ctx: Context, *, after_id: int = 0, limit: int = 50
) -> Page:
    total = await count_matching(session, criteria, ctx)
    if total == 0:
        # A filter that matches nobody and uses no index scans the whole table for its
        # page as for its count (about a second at a million clients): once is enough.
        return Page(0, [], None)
    clients = await page_matching(session, criteria, ctx, after_id=after_id, limit=limit)
    full = len(clients) == _limit(limit)
    return Page(total, clients, clients[-1].id if clients and full else None)


def _limit(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))
