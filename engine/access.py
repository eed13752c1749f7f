"""Who may see and change what. Every refusal is audited.

Operators work one tier: they see and change only that tier's clients, and only their
own or the tier's follow-ups. Supervisors see the whole department; admins everything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import PermissionDenied
from engine.models import AuditEntry, Client, FollowUp, Role, User


class Viewer(Protocol):
    """Whoever looks at a client: a User, or a lighter record with the same fields."""

    @property
    def role(self) -> str: ...

    @property
    def tier(self) -> str | None: ...


def can_see_client(user: User | Viewer, client: Client) -> bool:
    if user.role in (Role.ADMIN, Role.SUPERVISOR):
        return True
    return user.role == Role.OPERATOR and user.tier is not None and client.tier == user.tier


def can_work_followup(user: User, fu: FollowUp) -> bool:
    if user.role in (Role.ADMIN, Role.SUPERVISOR):
        return True
    return fu.tier == user.tier and (fu.owner_id is None or fu.owner_id == user.id)


async def refuse(
    session: AsyncSession, user: User | None, action: str, target: str, now: datetime, why: str
) -> PermissionDenied:
    """Record the refused attempt and return the error to raise."""
    session.add(
        AuditEntry(
            at=now,
            actor_id=user.id if user else None,
            action=action,
            target=target,
            allowed=False,
            detail={"why": why},
        )
    )
    await session.commit()
    return PermissionDenied(why)


async def ensure_client_visible(
    session: AsyncSession, user: User, client: Client, action: str, now: datetime
) -> None:
    if not can_see_client(user, client):
        raise await refuse(
            session,
            user,
            action,
            f"client:{client.id}",
            now,
            f"client {client.id} is on the {client.tier} tier; you work {user.tier or 'no tier'}",
        )


def require_role(user: User, *roles: Role) -> None:
    if user.role not in roles:
        raise PermissionDenied(
            "this needs the role " + " or ".join(r.value for r in roles),
            required=[r.value for r in roles],
        )
