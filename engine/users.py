"""Staff accounts: creation with checks, argon2 password hashing, authentication.

Hashing is memory-hard on purpose (tens of milliseconds of CPU), so it runs in a worker
thread: a sign-in must never stall someone else's screen pop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import Conflict, InvalidInput
from engine.models import Role, User

_hasher = PasswordHasher()
# Verifying against this keeps an unknown username as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("tierline-timing-equaliser")

MIN_PASSWORD = 8
# Bus channel of user changes: {"type": "user_changed", "user_id", "access": bool}.
USERS_CHANNEL = "users"


@dataclass(frozen=True)
class NewUser:
    username: str
    password: str
    role: str
    tier: str | None = None
    extension: str | None = None
    display_name: str = ""

    def check(self, tiers: tuple[str, ...]) -> None:
        if not self.username or len(self.username) > 64 or not self.username.isprintable():
            raise InvalidInput("username must be 1-64 printable characters", field="username")
        if len(self.password) < MIN_PASSWORD:
            raise InvalidInput(
                f"password must be at least {MIN_PASSWORD} characters", field="password"
            )
        if self.role not in {r.value for r in Role}:
            raise InvalidInput(
                f"role must be one of {', '.join(r.value for r in Role)}", field="role"
            )
        if self.role == Role.OPERATOR and not self.tier:
            raise InvalidInput("an operator works one tier: give a tier", field="tier")
        if self.tier is not None and self.tier not in tiers:
            raise InvalidInput(
                f"unknown tier {self.tier!r}; tiers are {', '.join(tiers)}", field="tier"
            )


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, password) and bool(stored_hash)
        except (VerifyMismatchError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


async def create_user(
    session: AsyncSession, new: NewUser, *, tiers: tuple[str, ...], now: datetime
) -> User:
    new.check(tiers)
    taken = (
        await session.exec(
            select(User).where(
                (User.username == new.username)
                | ((User.extension == new.extension) & (User.extension.is_not(None)))  # type: ignore[union-attr]
            )
        )
    ).first()
    if taken is not None:
        what = "username" if taken.username == new.username else "extension"
        raise Conflict(f"{what} {getattr(new, what)!r} is already taken", field=what)
    user = User(
        username=new.username,
        display_name=new.display_name or new.username,
        password_hash=await hash_password(new.password),
        role=new.role,
        tier=new.tier,
        extension=new.extension or None,
        created_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise Conflict("username or extension is already taken") from exc
    return user


async def authenticate(session: AsyncSession, username: str, password: str) -> User | None:
    user = (await session.exec(select(User).where(User.username == username))).first()
    ok = await verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.active:
        return None
    return user


def public_user(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "tier": user.tier,
        "extension": user.extension,
        "active": user.active,
    }
