"""Click-to-dial through the real app; the PBX is the in-memory FakePbx."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from engine.models import AuditEntry, Call, Client
from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user

IVAN = "+7 916 123-45-67"


@pytest.fixture
async def olga(tl):
    return await make_user(tl, "olga", tier="cold", extension="101")


@pytest.fixture
async def csrf(web_client, olga) -> str:
    return await sign_in(web_client, "olga")


async def dial(web_client, csrf: str, **body: object):
    return await web_client.post(
        "/api/calls/dial", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://x"}
    )


async def calls(tl) -> list[Call]:
    async with tl.db.session() as s:
        return list(await s.exec(select(Call)))


async def audit(tl, action: str) -> list[AuditEntry]:
    async with tl.db.session() as s:
        return list(await s.exec(select(AuditEntry).where(AuditEntry.action == action)))


async def test_dial_rings_the_operator_then_the_client(
    web_client, tl, clock, fake_pbx, olga, csrf
) -> None:
    await clock.advance(timedelta(hours=2))  # 11:00 in Moscow
    ivan = await make_client(tl, "Ivan Petrov", IVAN)

    resp = await dial(web_client, csrf, client_id=ivan.id, number="8 (916) 123-45-67")

    assert resp.status == 202, await resp.text()
    call_id = (await resp.json())["call_id"]
    [request] = fake_pbx.originated
    assert (request.extension, request.number) == ("101", "+79161234567")
    assert request.request_id == call_id
    [call] = await calls(tl)
    assert (call.pbx_call_id, call.direction, call.client_id, call.operator_id) == (
        call_id,
        "outbound",
        ivan.id,
        olga.id,
    )
    assert (call.extension, call.number, call.override_reason) == ("101", "+79161234567", None)


async def test_do_not_call_is_refused_even_with_a_reason(
    web_client, tl, clock, fake_pbx, olga, csrf
) -> None:
    await clock.advance(timedelta(hours=2))
    flagged = await make_client(tl, "Flagged", IVAN)
    async with tl.db.transaction() as s:
        row = await s.get(Client, flagged.id)
        row.do_not_call = True
        s.add(row)
    asked = await make_client(tl, "Asked", "+7 916 555-00-11", state="do_not_call")

    for client, number in ((flagged, IVAN), (asked, "+7 916 555-00-11")):
        for extra in ({}, {"override_reason": "client called us"}):
            resp = await dial(web_client, csrf, client_id=client.id, number=number, **extra)
            assert resp.status == 400, await resp.text()
            assert (await resp.json())["reason"] == "do_not_call"
    assert fake_pbx.originated == [] and await calls(tl) == []


async def test_outside_the_window_needs_an_audited_reason(
    web_client, tl, clock, fake_pbx, olga, csrf
) -> None:
    await clock.advance(timedelta(hours=12))  # 21:00 in Moscow
    ivan = await make_client(tl, "Ivan Petrov", IVAN)

    refused = await dial(web_client, csrf, client_id=ivan.id, number=IVAN)
    assert refused.status == 400
    body = await refused.json()
    assert (body["reason"], body["field"], body["timezone"]) == (
        "outside_window",
        "override_reason",
        "Europe/Moscow",
    )
    assert fake_pbx.originated == []

    resp = await dial(
        web_client, csrf, client_id=ivan.id, number=IVAN, override_reason="asked to call at 21"
    )
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["overridden"] is True
    [call] = await calls(tl)
    assert call.override_reason == "asked to call at 21"
    [entry] = await audit(tl, "call.dial.override")
    assert (entry.actor_id, entry.target, entry.detail["reason"]) == (
        olga.id,
        f"client:{ivan.id}",
        "asked to call at 21",
    )
    assert entry.detail["call_id"] == call.pbx_call_id


async def test_a_client_abroad_is_called_in_their_own_hours(
    web_client, tl, clock, fake_pbx, olga, csrf
) -> None:
    await clock.advance(timedelta(hours=2))  # 11:00 Moscow = 03:00 in New York
    yank = await make_client(tl, "John", "+1 212 555 0100", timezone="America/New_York")
    resp = await dial(web_client, csrf, client_id=yank.id, number="+1 212 555 0100")
    assert resp.status == 400
    assert (await resp.json())["timezone"] == "America/New_York"


async def test_pbx_down_is_503_and_leaves_no_call(
    web_client, tl, clock, fake_pbx, olga, csrf
) -> None:
    await clock.advance(timedelta(hours=2))
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    fake_pbx.down = True
    resp = await dial(web_client, csrf, client_id=ivan.id, number=IVAN)
    assert resp.status == 503
    assert (await resp.json())["error"] == "PbxUnavailable"

    fake_pbx.down, fake_pbx.refuse = False, "no route to destination"
    resp = await dial(web_client, csrf, client_id=ivan.id, number=IVAN)
    assert resp.status == 400
    assert "no route to destination" in (await resp.json())["message"]
    assert await calls(tl) == []


async def test_another_tiers_client_is_403_and_audited(
    web_client, tl, clock, fake_pbx, olga, csrf
) -> None:
    await clock.advance(timedelta(hours=2))
    buyer = await make_client(tl, "Big Buyer", IVAN, state="presentation")
    resp = await dial(web_client, csrf, client_id=buyer.id, number=IVAN)
    assert resp.status == 403
    [entry] = await audit(tl, "call.dial")
    assert (entry.allowed, entry.actor_id) == (False, olga.id)
    assert fake_pbx.originated == [] and await calls(tl) == []


async def test_bad_requests(web_client, tl, clock, fake_pbx, olga, csrf) -> None:
    await clock.advance(timedelta(hours=2))
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    cases = [
        ({"client_id": ivan.id, "number": "+7 916 999-99-99"}, 400, "number"),
        ({"client_id": ivan.id, "number": "12"}, 400, "phone"),
        ({"client_id": "one", "number": IVAN}, 400, "client_id"),
        ({"client_id": ivan.id}, 400, "number"),
        ({"client_id": 99999, "number": IVAN}, 404, None),
    ]
    for body, status, field in cases:
        resp = await dial(web_client, csrf, **body)
        assert resp.status == status, (body, await resp.text())
        if field:
            assert (await resp.json())["field"] == field
    assert fake_pbx.originated == []

    await web_client.delete("/api/session")
    anonymous = await web_client.post(
        "/api/calls/dial", json={"client_id": ivan.id, "number": IVAN}
    )
    assert anonymous.status == 401
