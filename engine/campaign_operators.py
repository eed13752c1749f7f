"""Which operators take a campaign's calls, and which client each of them gets.

A campaign names operators of its entry state's tier, or none (the tier's pool, as before
campaigns had operators). At launch every called client gets an owner: one who already
works the client on that tier keeps it (a campaign does not take a client away from the
operator who knows them); the others are dealt out round-robin over the campaign's
operators, sorted by id, clients in id order, so the same launch assigns the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import Conflict, InvalidInput
from engine.models import Client, Role, User

FIELD = "operator_ids"
MAX_OPERATORS = 500  # far more than a tier has; bounds the IN list of one request
MAX_ID = 2**31 - 1  # users.id is a 32-bit integer


async def checked_operator_ids(session: AsyncSession, ids: object, tier: str) -> list[int]:
    """``ids`` deduplicated and sorted, each an active operator of ``tier``.

    Raises InvalidInput (field ``operator_ids``, ``operator_id`` the first bad one) naming
    the id and why it cannot take the calls."""
    if not isinstance(ids, list | tuple):
        raise InvalidInput("operator_ids must be a list of user ids", field=FIELD)
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"operator id {value!r} is not a whole number", field=FIELD)
        if not 0 < value <= MAX_ID:  # PostgreSQL would refuse it as a parameter: a 500
            raise InvalidInput(f"operator {value} does not exist", field=FIELD, operator_id=value)
    unique = sorted(set(ids))
    if len(unique) > MAX_OPERATORS:
        raise InvalidInput(f"at most {MAX_OPERATORS} operators per campaign", field=FIELD)
    if not unique:
        return []
    found = {u.id: u for u in await session.exec(select(User).where(col(User.id).in_(unique)))}
    for uid in unique:
        why = _refusal(found.get(uid), tier)
        if why is not None:
            raise InvalidInput(f"operator {uid} {why}", field=FIELD, operator_id=uid)
    return unique


def _refusal(user: User | None, tier: str) -> str | None:
    if user is None:
        return "does not exist"
    if user.role != Role.OPERATOR:
        return f"is a {user.role}, not an operator"
    if not user.active:
        return "is deactivated"
    if user.tier != tier:
        return f"works tier {user.tier!r}, not the entry state's tier {tier!r}"
    return None


async def active_operators(session: AsyncSession, tier: str) -> set[int]:
    rows = await session.exec(
        select(User.id).where(
            col(User.role) == Role.OPERATOR, col(User.active).is_(True), col(User.tier) == tier
        )
    )
    return {uid for uid in rows if uid is not None}


@dataclass
class Assignment:
    """Who owns each called client after a launch with operators."""

    owners: dict[int, int] = field(default_factory=dict)  # client id -> owner id
    assigned: dict[int, int] = field(default_factory=dict)  # operator id -> clients given
    kept_owner: int = 0  # clients whose own operator on the tier kept them
    unavailable: list[int] = field(default_factory=list)  # named, but no longer on the tier

    def to_json(self) -> dict[str, object]:
        return {
            # JSON object keys are strings; the ids stay sorted for a stable display.
            "assigned": {str(k): v for k, v in sorted(self.assigned.items())},
            "kept_owner": self.kept_owner,
            "unavailable_operators": self.unavailable,
        }


def assign(
    clients: Iterable[Client], operator_ids: list[int], tier_operators: set[int]
) -> Assignment:
    """Owners for ``clients`` (the called arm): see the module docstring.

    ``operator_ids`` are the campaign's; those no longer active on the tier are left out
    and listed. Raises Conflict when none is left and a client needs an owner: the calls
    would land on people the supervisor did not choose, so a person must decide again."""
    available = [uid for uid in sorted(operator_ids) if uid in tier_operators]
    out = Assignment(
        assigned=dict.fromkeys(available, 0),
        unavailable=[uid for uid in sorted(operator_ids) if uid not in tier_operators],
    )
    turn = 0
    for client in sorted(clients, key=lambda c: c.id or 0):
        if client.owner_id is not None and client.owner_id in tier_operators:
            out.owners[client.id] = client.owner_id  # type: ignore[index]
            out.kept_owner += 1
            continue
        if not available:
            raise Conflict(
                f"none of the campaign's operators {sorted(operator_ids)} is an active "
                "operator of its tier any more; create the campaign again with the tier's "
                "operators",
                field=FIELD,
            )
        owner = available[turn % len(available)]
        turn += 1
        out.owners[client.id] = owner  # type: ignore[index]
        out.assigned[owner] += 1
    return out
