"""Small builders shared by the integration tests."""

from __future__ import annotations

import json
from itertools import count

from cti_adapter.webhook import SIGNATURE_HEADER, sign
from engine.clients import NewClient
from engine.definitions import current_version
from engine.models import Client, User
from engine.service import Tierline
from engine.users import NewUser, create_user

_numbers = count(1000)
PBX_SECRET = "test-pbx-secret"  # tests/conftest.py's settings
IVAN = "+7 916 123-45-67"


async def pbx(client, *events: dict) -> None:  # type: ignore[no-untyped-def]
    """Events in through the signed webhook, as a PBX sends them; each must be accepted."""
    body = json.dumps(list(events)).encode()
    resp = await client.post(
        "/cti/events", data=body, headers={SIGNATURE_HEADER: sign(PBX_SECRET, body)}
    )
    assert resp.status == 202, await resp.text()


def ev(kind: str, call_id: str, ext: str = "101", number: str = IVAN) -> dict:
    """A webhook event of an inbound call from ``number`` at extension ``ext``."""
    return {"event": kind, "call_id": call_id, "from": number, "to": "7000", "extension": ext}


async def make_user(
    tl: Tierline,
    username: str,
    role: str = "operator",
    tier: str | None = "cold",
    extension: str | None = None,
) -> User:
    async with tl.db.transaction() as session:
        tiers = tl.cache.remember(await current_version(session)).tiers
        return await create_user(
            session,
            NewUser(username, "correct horse battery", role, tier, extension, username.title()),
            tiers=tiers,
            now=tl.clock.now(),
        )


async def make_client(
    tl: Tierline,
    name: str = "Ivan Petrov",
    phone: str | None = None,
    *,
    state: str | None = None,
    email: str | None = "ivan@example.com",
    owner: User | None = None,
    timezone: str | None = None,
) -> Client:
    phone = phone or f"+7 916 000-{next(_numbers):04d}"
    return await tl.add_client(
        NewClient(
            name=name,
            phones=[phone],
            email=email,
            owner_id=owner.id if owner else None,
            timezone=timezone,
        ),
        state=state,
    )
