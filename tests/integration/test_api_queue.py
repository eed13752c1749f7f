"""GET /api/queue: membership, ordering, overdue and escalated flags (real app, both DBs)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, select

from engine.followups.escalation import sweep_escalations
from engine.models import AuditEntry
from tests.conftest import START, sign_in
from tests.integration.helpers import make_client, make_user


async def _queue(web_client, **params) -> list[dict]:
    resp = await web_client.get("/api/queue", params=params)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["items"]


def _names(items: list[dict]) -> list[str]:
    return [i["client"]["name"] for i in items]


async def test_queue_membership_and_order(tl, web_client, clock):
    c1 = await make_user(tl, "cold1", tier="cold")
    c2 = await make_user(tl, "cold2", tier="cold")
    await make_user(tl, "sales1", tier="sales")
    await make_client(tl, "Pool new")  # tier pool, due at once (09:00 Moscow, in window)
    await make_client(tl, "Mine later", state="call_back_later", owner=c1)  # due in 1 day
    await make_client(tl, "Theirs later", state="call_back_later", owner=c2)  # c2's own
    await make_client(tl, "Auto handoff", state="qualified")  # an automatic event, due now
    await make_client(tl, "Pool retry", state="no_answer")  # tier pool, due in 2 h
    await make_client(tl, "Sales lead", state="presentation")  # another tier
    await sign_in(web_client, "cold1")

    now_items = await _queue(web_client)
    assert _names(now_items) == ["Pool new"]
    item = now_items[0]
    assert item["due_at"] == START.isoformat()
    assert item["when"] == "Mon 23 Nov 09:00 client time (Europe/Moscow)"
    assert item["kind"] == "call_back" and "calling window" in item["reason"]
    assert item["overdue"] is False and item["escalated"] is False
    assert set(item["client"]) == {"id", "name", "company", "tier", "state"}

    await clock.advance(timedelta(hours=2))
    assert _names(await _queue(web_client)) == ["Pool new", "Pool retry"]

    await clock.advance(timedelta(days=1))
    items = await _queue(web_client)
    # Own + pool, oldest first; never c2's personal follow-up, an auto event or sales.
    assert _names(items) == ["Pool new", "Pool retry", "Mine later"]
    assert [i["due_at"] for i in items] == sorted(i["due_at"] for i in items)

    await sign_in(web_client, "cold2")
    assert _names(await _queue(web_client)) == ["Pool new", "Pool retry", "Theirs later"]
    await sign_in(web_client, "sales1")
    assert _names(await _queue(web_client)) == ["Sales lead"]


async def test_overdue_and_escalated_flags(tl, web_client, clock):
    c1 = await make_user(tl, "cold1", tier="cold")
    await make_user(tl, "cold2", tier="cold")
    await make_client(tl, "Pool new")  # grace 4h, escalates to the supervisor
    await make_client(tl, "Personal", state="call_back_later", owner=c1)  # grace 1h, tier first
    await sign_in(web_client, "cold2")
    assert _names(await _queue(web_client)) == ["Pool new"]

    await clock.advance(timedelta(hours=3))
    assert [i["overdue"] for i in await _queue(web_client)] == [False]
    await clock.advance(timedelta(hours=1, minutes=1))
    assert [i["overdue"] for i in await _queue(web_client)] == [True]

    # A day on, c1's personal call is past its grace: the sweep opens it to the whole tier.
    await clock.advance(timedelta(days=1))
    await sweep_escalations(tl.db, tl.bus, tl.clock)
    items = {i["client"]["name"]: i for i in await _queue(web_client)}
    assert set(items) == {"Pool new", "Personal"}  # cold2 now sees c1's escalated call
    assert items["Personal"]["escalated"] is True and items["Personal"]["overdue"] is True
    assert items["Pool new"]["escalated"] is True  # level 1: told the supervisor


async def test_the_card_marks_overdue_as_the_queue_does(tl, web_client, clock):
    """The card sends the moment its next follow-up turns overdue (the browser marks it
    then, while the card is open); that moment agrees with the queue's flag either side."""
    c1 = await make_user(tl, "cold1", tier="cold")
    await make_user(tl, "boss", role="supervisor", tier=None)
    pool = await make_client(tl, "Pool new")  # grace 4h
    personal = await make_client(tl, "Personal", state="call_back_later", owner=c1)  # 1h
    auto = await make_client(tl, "Auto handoff", state="qualified")  # an automatic event

    async def overdue_at(client_id: int) -> str | None:
        resp = await web_client.get(f"/api/clients/{client_id}")
        assert resp.status == 200, await resp.text()
        return (await resp.json())["next_followup"]["overdue_at"]

    await sign_in(web_client, "boss")
    assert await overdue_at(pool.id) == (START + timedelta(hours=4)).isoformat()
    assert await overdue_at(auto.id) is None  # the engine's to fire, nobody's to be late for
    personal_at = datetime.fromisoformat(await overdue_at(personal.id) or "")
    assert personal_at == START + timedelta(days=1, hours=1)

    await sign_in(web_client, "cold1")
    for moment, late in ((personal_at - timedelta(minutes=1), False), (personal_at, False)):
        await clock.advance(moment - clock.now())
        assert {i["client"]["name"]: i["overdue"] for i in await _queue(web_client)} == {
            "Pool new": True, "Personal": late,
        }  # fmt: skip
    await clock.advance(timedelta(seconds=1))
    assert all(i["overdue"] for i in await _queue(web_client))


async def test_the_supervisor_sees_a_call_late_when_the_queue_does(tl, web_client, clock):
    """Graces differ by rule (4 h for a new lead, 1 h for an agreed call-back): the attention
    list takes each call in at its own moment, as the queue and the card mark it, never at
    one fixed hour for all (the SQL yardstick, on both databases)."""
    c1 = await make_user(tl, "cold1", tier="cold")
    await make_user(tl, "boss", role="supervisor", tier=None)
    pool = await make_client(tl, "Pool new")  # due at START, grace 4 h
    await clock.advance(timedelta(hours=1))
    personal = await make_client(tl, "Personal", state="call_back_later", owner=c1)  # 1 h
    personal_due = START + timedelta(days=1, hours=1)

    async def attention() -> dict[int, bool]:
        await sign_in(web_client, "boss")
        body = await (await web_client.get("/api/supervisor/live")).json()
        return {a["client_id"]: a["overdue"] for a in body["attention"]}

    async def queue_flags() -> dict[int, bool]:
        await sign_in(web_client, "cold1")
        return {i["client"]["id"]: i["overdue"] for i in await _queue(web_client)}

    moments = [
        (START + timedelta(hours=2), {}),  # an hour past due: within the new lead's 4 h
        (START + timedelta(hours=4), {}),  # the very moment: not yet
        (START + timedelta(hours=4, seconds=1), {pool.id: True}),
        (personal_due + timedelta(minutes=59), {pool.id: True}),
        (personal_due + timedelta(hours=1, seconds=1), {pool.id: True, personal.id: True}),
    ]
    for moment, expected in moments:
        await clock.advance(moment - clock.now())
        assert await attention() == expected, moment
        queued = await queue_flags()
        assert {cid for cid, late in queued.items() if late} == set(expected), moment


async def test_supervisors_pick_a_tier_operators_cannot(tl, web_client, clock):
    c1 = await make_user(tl, "cold1", tier="cold")
    await make_user(tl, "boss", role="supervisor", tier=None)
    await make_client(tl, "Pool new")
    await make_client(tl, "Personal", state="call_back_later", owner=c1)
    await make_client(tl, "Sales lead", state="presentation")
    await clock.advance(timedelta(days=1, hours=1))

    await sign_in(web_client, "boss")
    assert _names(await _queue(web_client, tier="cold")) == ["Pool new", "Personal"]
    assert _names(await _queue(web_client, tier="sales")) == ["Sales lead"]
    assert len(await _queue(web_client)) == 3
    bad = await web_client.get("/api/queue", params={"tier": "moon"})
    assert bad.status == 400

    await sign_in(web_client, "cold1")
    refused = await web_client.get("/api/queue", params={"tier": "sales"})
    assert refused.status == 403
    async with tl.db.session() as s:
        audit = (
            await s.exec(
                select(AuditEntry).where(
                    AuditEntry.action == "queue.read", col(AuditEntry.allowed).is_(False)
                )
            )
        ).all()
    assert [(a.actor_id, a.target) for a in audit] == [(c1.id, "tier:sales")]
    assert _names(await _queue(web_client, tier="cold")) == ["Pool new", "Personal"]


async def test_a_recorded_outcome_leaves_the_queue(tl, web_client, clock):
    await make_user(tl, "cold1", tier="cold")
    client = await make_client(tl, "Pool new")
    await sign_in(web_client, "cold1")
    assert _names(await _queue(web_client)) == ["Pool new"]
    resp = await web_client.post(f"/api/clients/{client.id}/events", json={"event": "no_answer"})
    assert resp.status == 200
    assert await _queue(web_client) == []  # the retry is 2 h away
    await clock.advance(timedelta(hours=2))
    assert _names(await _queue(web_client)) == ["Pool new"]


async def test_queue_needs_a_session(web_client):
    assert (await web_client.get("/api/queue")).status == 401
