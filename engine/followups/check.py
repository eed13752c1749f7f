"""The invariant: every client in a non-final state has exactly one pending follow-up."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.definitions import DefinitionCache
from engine.models import Client, FollowUp, FollowUpStatus


@dataclass(frozen=True)
class Violation:
    client_id: int
    state: str
    pending: int

    def __str__(self) -> str:
        expected = "none (final state)" if self.pending else "exactly one"
        return f"client {self.client_id} in {self.state!r} has {self.pending} pending; {expected}"


async def check_invariant(session: AsyncSession, cache: DefinitionCache) -> list[Violation]:
    pending = (
        select(FollowUp.client_id, func.count().label("n"))
        .where(col(FollowUp.status) == FollowUpStatus.PENDING)
        .group_by(col(FollowUp.client_id))
        .subquery()
    )
    rows = await session.exec(
        select(Client.id, Client.state, Client.workflow_version_id, pending.c.n).outerjoin(
            pending, pending.c.client_id == Client.id
        )
    )
    problems = []
    for client_id, state, version_id, n in rows:
        defn = await cache.get(session, version_id)
        sdef = defn.states.get(state)
        final = sdef is not None and sdef.final
        n = n or 0
        if (final and n) or (not final and n != 1):
            assert client_id is not None  # clients.id, a primary key
            problems.append(Violation(client_id=client_id, state=state, pending=n))
    return problems
