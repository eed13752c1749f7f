"""Supervisor live view, norms, and run-time settings through the real app."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from engine.models import AuditEntry, FollowUp
from engine.runtime import EventRequest
from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user


async def test_live_view_shows_operators_funnel_and_overdue(tl, web_client, clock):
    await make_user(tl, "boss", role="supervisor", tier=None)
    cold = await make_user(tl, "cold1", extension="101")
    client = await make_client(tl, owner=cold)
    await tl.apply(EventRequest(client.id, "offer_accepted", actor=cold))
    await tl.dispatcher.run_due()  # qualified hands the lead to sales: cold -> sales today
    await sign_in(web_client, "boss")
    resp = await web_client.get("/api/supervisor/live")
    assert resp.status == 200
    body = await resp.json()
    assert [o["status"] for o in body["operators"]] == ["idle"]
    assert body["funnel"] == {"cold->sales": 1}
    assert body["attention"] == []
    await clock.advance(timedelta(days=3))  # nobody called: the follow-up is overdue
    body = await (await web_client.get("/api/supervisor/live")).json()
    assert [a["client_id"] for a in body["attention"]] == [client.id]
    assert body["funnel"] == {}  # a new day


async def test_operators_cannot_see_the_live_view(tl, web_client):
    await make_user(tl, "cold1")
    await sign_in(web_client, "cold1")
    assert (await web_client.get("/api/supervisor/live")).status == 403
    assert (await web_client.get("/api/settings")).status == 403


async def test_supervisor_sets_norms_and_bad_norms_are_named(tl, web_client):
    await make_user(tl, "boss", role="supervisor", tier=None)
    op = await make_user(tl, "cold1")
    await sign_in(web_client, "boss")
    resp = await web_client.put(f"/api/users/{op.id}/norms", json={"calls": 60, "payments": 1})
    assert resp.status == 200 and (await resp.json())["norms"] == {"calls": 60, "payments": 1}
    bad = await web_client.put(f"/api/users/{op.id}/norms", json={"calls": -1})
    assert bad.status == 400 and (await bad.json())["field"] == "calls"
    unknown = await web_client.put(f"/api/users/{op.id}/norms", json={"smiles": 3})
    assert unknown.status == 400 and (await unknown.json())["field"] == "smiles"


async def test_admin_changes_calling_window_at_run_time(tl, web_client):
    await make_user(tl, "admin", role="admin", tier=None)
    await sign_in(web_client, "admin")
    resp = await web_client.put(
        "/api/settings",
        json={
            "calling": {"window": "12:00-13:00"},
            "pbx": {"ami_host": "pbx.local", "ami_secret": "s3cret-value"},
        },
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["calling"]["window"] == "12:00-13:00"
    assert body["pbx"]["ami_secret"] == "********"  # never shown back
    assert "s3cret" not in await resp.text()
    # The new window applies to the next follow-up planned, at once.
    client = await make_client(tl)
    async with tl.db.session() as s:
        fu = (await s.exec(select(FollowUp).where(FollowUp.client_id == client.id))).one()
    local = fu.due_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Moscow"))
    assert 12 <= local.hour < 13
    # The masked secret sent back unchanged keeps the stored one.
    await web_client.put("/api/settings", json={"pbx": {"ami_secret": "********"}})
    async with tl.db.session() as s:
        audit = (
            await s.exec(select(AuditEntry).where(AuditEntry.action == "settings.update"))
        ).all()
    assert len(audit) == 2 and "s3cret" not in str(audit[0].detail)


async def test_bad_window_is_refused_naming_the_field(tl, web_client):
    await make_user(tl, "admin", role="admin", tier=None)
    await sign_in(web_client, "admin")
    resp = await web_client.put("/api/settings", json={"calling": {"window": "21:00-08:00"}})
    assert resp.status == 400 and (await resp.json())["field"] == "window"
