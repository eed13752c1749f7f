"""Clients by API: card, search, leads, outcomes, notes, next call, export (real app, both DBs)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from engine import export
from engine.models import AuditEntry, Call, Client, ClientPhone, FollowUp, FollowUpStatus
from tests.conftest import START, sign_in
from tests.integration.helpers import make_client, make_user


async def _refusals(tl, action: str, actor_id: int) -> list[AuditEntry]:
    async with tl.db.session() as s:
        rows = await s.exec(
            select(AuditEntry).where(
                AuditEntry.action == action,
                AuditEntry.actor_id == actor_id,
                col(AuditEntry.allowed).is_(False),
            )
        )
        return list(rows)


async def _add_call(tl, pbx_id: str, operator, *, extension: str, client_id=None) -> int:
    async with tl.db.transaction() as s:
        call = Call(
            pbx_call_id=pbx_id,
            direction="inbound",
            extension=extension,
            operator_id=operator.id if operator else None,
            client_id=client_id,
            number="+79165551234",
            status="answered",
            started_at=START,
        )
        s.add(call)
        await s.flush()
        return call.id


async def _call(tl, call_id: int) -> Call:
    async with tl.db.session() as s:
        return await s.get(Call, call_id)


async def test_card_own_tier_ok_other_tier_403_and_audited(tl, web_client):
    cold = await make_user(tl, "cold1", tier="cold")
    await make_user(tl, "boss", role="supervisor", tier=None)
    mine = await make_client(tl, "Ivan Petrov")
    theirs = await make_client(tl, "Oleg Sidorov", state="presentation")
    await sign_in(web_client, "cold1")

    resp = await web_client.get(f"/api/clients/{mine.id}")
    assert resp.status == 200
    body = await resp.json()
    assert (body["id"], body["tier"], body["state"]) == (mine.id, "cold", "new")
    assert body["phones"][0]["e164"].startswith("+7916")
    assert "no_answer" in body["events"] and body["next_followup"]["kind"] == "call_back"

    refused = await web_client.get(f"/api/clients/{theirs.id}")
    assert refused.status == 403
    assert "sales" in (await refused.json())["message"]
    rows = await _refusals(tl, "client.read", cold.id)
    assert [r.target for r in rows] == [f"client:{theirs.id}"]
    assert (await web_client.get("/api/clients/999999")).status == 404

    await sign_in(web_client, "boss")
    assert (await web_client.get(f"/api/clients/{theirs.id}")).status == 200


async def test_search_by_name_company_and_phone_stays_in_the_operators_tier(tl, web_client):
    cold = await make_user(tl, "cold1", tier="cold")
    await make_user(tl, "boss", role="supervisor", tier=None)
    ivan = await make_client(tl, "Иван Петров", "+7 916 123-45-67")
    await make_client(tl, "Иван Сидоров", state="presentation")  # sales: hidden from cold
    promo = await make_client(tl, "Anna Smirnova")
    async with tl.db.transaction() as s:
        row = await s.get(Client, promo.id)
        row.company = "Discount 50% Ltd"
        s.add(row)
    await make_client(tl, "Petr 500 Ltd")  # "50%" must not match as a wildcard
    await sign_in(web_client, "cold1")

    found = await (await web_client.get("/api/clients", params={"q": "иван"})).json()
    assert [c["id"] for c in found["clients"]] == [ivan.id]
    found = await (await web_client.get("/api/clients", params={"q": "50%"})).json()
    assert [c["id"] for c in found["clients"]] == [promo.id]
    found = await (await web_client.get("/api/clients", params={"q": "_"})).json()
    assert found["clients"] == []
    by_phone = await web_client.get("/api/clients", params={"phone": "8 (916) 123 45 67"})
    found = await by_phone.json()
    assert [c["id"] for c in found["clients"]] == [ivan.id]
    assert set(found["clients"][0]) == {"id", "name", "company", "tier", "state"}

    bad = await web_client.get("/api/clients", params={"phone": "12"})
    assert bad.status == 400 and "'12'" in (await bad.json())["message"]
    assert (await web_client.get("/api/clients", params={"q": "a", "limit": "x"})).status == 400
    assert (await web_client.get("/api/clients")).status == 400

    # Asking for another tier outright is refused and audited.
    other = await web_client.get("/api/clients", params={"q": "иван", "tier": "sales"})
    assert other.status == 403
    assert len(await _refusals(tl, "client.search", cold.id)) == 1

    await sign_in(web_client, "boss")
    everyone = await (await web_client.get("/api/clients", params={"q": "ИВАН"})).json()
    assert len(everyone["clients"]) == 2
    sales = await (
        await web_client.get("/api/clients", params={"q": "иван", "tier": "sales"})
    ).json()
    assert [c["tier"] for c in sales["clients"]] == ["sales"]


async def test_search_limit_is_capped_at_100(tl, web_client):
    await make_user(tl, "boss", role="supervisor", tier=None)
    for i in range(103):
        await make_client(tl, f"Bulk {i:03d}")
    await sign_in(web_client, "boss")
    body = await (
        await web_client.get("/api/clients", params={"q": "bulk", "limit": "1000"})
    ).json()
    assert len(body["clients"]) == 100
    body = await (await web_client.get("/api/clients", params={"q": "bulk", "limit": "3"})).json()
    assert [c["name"] for c in body["clients"]] == ["Bulk 000", "Bulk 001", "Bulk 002"]


async def test_create_lead_from_the_pop_links_the_operators_call(tl, web_client):
    cold = await make_user(tl, "cold1", tier="cold", extension="101")
    other = await make_user(tl, "cold2", tier="cold", extension="102")
    mine = await _add_call(tl, "1763884800.42", cold, extension="101")
    theirs = await _add_call(tl, "1763884800.42", other, extension="102")
    await sign_in(web_client, "cold1")

    resp = await web_client.post(
        "/api/clients",
        json={
            "name": " Maria Ivanova ",
            "phones": ["8 916 555-12-34"],
            "company": "Roga",
            "email": "m@example.com",
            "timezone": "Asia/Yekaterinburg",
            "call_id": "1763884800.42",
        },
    )
    assert resp.status == 201, await resp.text()
    card = await resp.json()
    assert (card["name"], card["state"], card["tier"]) == ("Maria Ivanova", "new", "cold")
    assert card["phones"][0]["e164"] == "+79165551234"
    assert card["timezone"] == "Asia/Yekaterinburg" and card["owner"] == "Cold1"
    assert (await _call(tl, mine)).client_id == card["id"]
    assert (await _call(tl, theirs)).client_id is None  # not the signed-in operator's row

    bad = await web_client.post("/api/clients", json={"name": "X", "phones": ["+7 916", "x"]})
    assert bad.status == 400
    err = await bad.json()
    assert err["field"] == "phones" and err["value"] == "+7 916" and "'+7 916'" in err["message"]
    assert (
        await (await web_client.post("/api/clients", json={"phones": ["+79161112233"]})).json()
    )["field"] == "name"
    tz = await web_client.post(
        "/api/clients", json={"name": "Y", "phones": ["+79161112233"], "timezone": "Mars/Base"}
    )
    assert tz.status == 400 and (await tz.json())["field"] == "timezone"


async def test_a_sales_operator_creates_a_lead_in_the_cold_pool(tl, web_client):
    await make_user(tl, "sales1", tier="sales")
    await sign_in(web_client, "sales1")
    resp = await web_client.post(
        "/api/clients", json={"name": "Caller", "phones": ["+79161112233"]}
    )
    assert resp.status == 201
    card = await resp.json()
    assert (card["state"], card["tier"], card["owner"]) == ("new", "cold", None)


async def test_outcome_moves_the_client_and_fills_the_call(tl, web_client):
    cold = await make_user(tl, "cold1", tier="cold", extension="101")
    client = await make_client(tl, "Ivan Petrov")
    call = await _add_call(tl, "pbx-1", cold, extension="101", client_id=client.id)
    await sign_in(web_client, "cold1")

    resp = await web_client.post(
        f"/api/clients/{client.id}/events",
        json={
            "event": "call_back",
            "expected_revision": 0,
            "note": "after lunch tomorrow",
            "call_id": "pbx-1",
            "follow_up_at": "2026-11-24T15:00:00+03:00",
            "checklist": {"contact": True, "diagnosis": False},
        },
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["applied"]["from_state"] == "new"
    assert body["applied"]["to_state"] == "call_back_later"
    assert body["applied"]["to_tier"] == "cold" and body["applied"]["kpi"] is None
    assert body["client"]["revision"] == 1 and body["client"]["state"] == "call_back_later"
    assert body["client"]["next_followup"]["due_at"] == "2026-11-24T12:00:00+00:00"
    assert body["client"]["history"][0]["note"] == "after lunch tomorrow"
    row = await _call(tl, call)
    assert row.outcome == "call_back" and row.notes == "after lunch tomorrow"
    assert row.checklist == {"contact": True, "diagnosis": False}


async def test_outcome_refusals(tl, web_client):
    cold = await make_user(tl, "cold1", tier="cold")
    client = await make_client(tl, "Ivan Petrov")
    sales_client = await make_client(tl, "Oleg", state="presentation")
    await sign_in(web_client, "cold1")
    url = f"/api/clients/{client.id}/events"

    stale = await web_client.post(url, json={"event": "no_answer", "expected_revision": 7})
    assert stale.status == 409
    assert (await stale.json())["state"] == "new"

    wrong = await web_client.post(url, json={"event": "payment_received"})
    assert wrong.status == 400
    err = await wrong.json()
    assert err["error"] == "EventNotAllowed"
    assert {"no_answer", "call_back", "offer_accepted"} <= set(err["allowed"])
    assert "no_answer" in err["message"]

    naive = await web_client.post(
        url, json={"event": "call_back", "follow_up_at": "2026-11-24T15:00:00"}
    )
    assert naive.status == 400 and (await naive.json())["field"] == "follow_up_at"
    stage = await web_client.post(url, json={"event": "no_answer", "checklist": {"invoice": True}})
    assert stage.status == 400 and (await stage.json())["allowed"] == ["contact", "diagnosis"]
    nocall = await web_client.post(url, json={"event": "no_answer", "call_id": "nope"})
    assert nocall.status == 400 and (await nocall.json())["field"] == "call_id"

    other = await web_client.post(
        f"/api/clients/{sales_client.id}/events", json={"event": "objection"}
    )
    assert other.status == 403
    assert [r.target for r in await _refusals(tl, "client.event", cold.id)] == [
        f"client:{sales_client.id}"
    ]
    async with tl.db.session() as s:
        assert (await s.get(Client, client.id)).revision == 0  # nothing above applied
        assert (await s.get(Client, sales_client.id)).state == "presentation"

    ok = await web_client.post(url, json={"event": "no_answer", "expected_revision": 0})
    assert ok.status == 200 and (await ok.json())["applied"]["to_state"] == "no_answer"


async def test_notes_and_next_call(tl, web_client, clock):
    cold = await make_user(tl, "cold1", tier="cold")
    client = await make_client(tl, "Ivan Petrov")
    sales_client = await make_client(tl, "Oleg", state="presentation")
    await sign_in(web_client, "cold1")

    resp = await web_client.post(f"/api/clients/{client.id}/notes", json={"text": "prefers email"})
    assert resp.status == 201 and (await resp.json())["note"]["author"] == "cold1"
    card = await (await web_client.get(f"/api/clients/{client.id}")).json()
    assert card["notes"][0]["text"] == "prefers email"
    blank = await web_client.post(f"/api/clients/{client.id}/notes", json={"text": " "})
    assert blank.status == 400
    other = await web_client.post(f"/api/clients/{sales_client.id}/notes", json={"text": "x"})
    assert other.status == 403 and len(await _refusals(tl, "client.note", cold.id)) == 1

    r = await web_client.post(f"/api/clients/{client.id}/events", json={"event": "no_answer"})
    assert r.status == 200
    nxt = await (await web_client.get(f"/api/clients/{client.id}/next-call")).json()
    assert nxt["due_at"] == (START + timedelta(hours=2)).isoformat()
    assert nxt["text"].startswith(
        "Next call Mon 23 Nov 11:00 client time (Europe/Moscow): call back 2h after the last step"
    )
    assert "calling window 09:00–20:00" in nxt["text"]
    assert "1 unanswered attempt of 5 so far; after 5, give_up" in nxt["text"]
    assert [s["event"] for s in nxt["steps"]] == ["no_answer", "enroll"]
    assert nxt["steps"][0]["by"] == "cold1"

    await clock.advance(timedelta(hours=5))
    late = await (await web_client.get(f"/api/clients/{client.id}/next-call")).json()
    assert "Overdue since Mon 23 Nov 11:00" in late["text"]
    other = await web_client.get(f"/api/clients/{sales_client.id}/next-call")
    assert other.status == 403


async def test_next_call_for_a_final_state_says_so(tl, web_client):
    await make_user(tl, "cold1", tier="cold")
    client = await make_client(tl, "Ivan Petrov")
    await sign_in(web_client, "cold1")
    r = await web_client.post(f"/api/clients/{client.id}/events", json={"event": "do_not_call"})
    assert r.status == 200
    nxt = await (await web_client.get(f"/api/clients/{client.id}/next-call")).json()
    assert nxt["due_at"] is None and "final" in nxt["text"]


async def test_export_streams_every_client_to_admins_only(tl, web_client, monkeypatch):
    admin = await make_user(tl, "admin", role="admin", tier=None)
    boss = await make_user(tl, "boss", role="supervisor", tier=None)
    cold = await make_user(tl, "cold1", tier="cold")
    monkeypatch.setattr(export, "CHUNK", 3)  # several chunks from a handful of clients
    made = [await make_client(tl, f"Client {i}", owner=cold if i == 0 else None) for i in range(7)]
    await make_client(tl, "=HYPERLINK(evil)")

    for user in (boss, cold):
        await sign_in(web_client, user.username)
        refused = await web_client.get("/api/export/clients.csv")
        assert refused.status == 403
        assert len(await _refusals(tl, "export.clients", user.id)) == 1

    await sign_in(web_client, "admin")
    resp = await web_client.get("/api/export/clients.csv")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert tuple(rows[0]) == export.COLUMNS
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [int(r["id"]) for r in body] == [c.id for c in made] + [made[-1].id + 1]
    assert body[0]["owner"] == "cold1" and body[0]["state"] == "new"
    async with tl.db.session() as s:
        phone = (await s.exec(select(ClientPhone).where(ClientPhone.client_id == made[0].id))).one()
        due = (
            await s.exec(
                select(FollowUp).where(
                    FollowUp.client_id == made[0].id, FollowUp.status == FollowUpStatus.PENDING
                )
            )
        ).one()
    assert body[0]["phones"] == phone.e164
    assert datetime.fromisoformat(body[0]["next_followup_at"]) == due.due_at.astimezone(UTC)
    assert body[-1]["name"] == "'=HYPERLINK(evil)"  # never a live formula in a spreadsheet
    async with tl.db.session() as s:
        audit = (
            await s.exec(
                select(AuditEntry).where(
                    AuditEntry.action == "export.clients", AuditEntry.actor_id == admin.id
                )
            )
        ).one()
    assert audit.allowed and audit.detail == {"rows": 8, "complete": True}
