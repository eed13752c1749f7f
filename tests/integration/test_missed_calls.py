"""Missed calls to call back (``GET /api/queue``'s ``missed``, ``POST /api/calls/missed/dismiss``).

Calls come in through the signed webhook, as from a PBX; SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlmodel import select

from engine.missed_calls import statement as missed_statement
from engine.models import Call, MissedCallDismissal
from tests.conftest import sign_in
from tests.integration.helpers import IVAN, ev, make_client, make_user, pbx

IVAN_E164 = "+79161234567"
STRANGER = "+7 903 555-01-02"


async def missed_call(web_client, call_id: str, *exts: str, number: str = IVAN) -> None:
    """An inbound call that rings ``exts`` and ends with nobody answering."""
    exts = exts or ("101",)
    await pbx(web_client, *(ev("ringing", call_id, e, number) for e in exts))
    await pbx(web_client, *(ev("hangup", call_id, e, number) for e in exts))


async def missed(browser, **params: str) -> list[dict]:
    resp = await browser.get("/api/queue", params=params)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["missed"]


async def browser_of(aiohttp_client, server, username: str):
    browser = await aiohttp_client(server)
    csrf = await sign_in(browser, username)
    browser.csrf = csrf
    return browser


async def dismiss(browser, body: object):
    return await browser.post(
        "/api/calls/missed/dismiss",
        json=body,
        headers={"X-CSRF-Token": browser.csrf, "Origin": "http://x"},
    )


@pytest.fixture
async def olga(tl):
    return await make_user(tl, "olga", tier="cold", extension="101")


@pytest.fixture
async def pavel(tl):
    return await make_user(tl, "pavel", tier="cold", extension="102")


async def test_a_missed_call_waits_for_a_call_back(
    web_client, aiohttp_client, tl, clock, olga, pavel
) -> None:
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    browser = await browser_of(aiohttp_client, web_client.server, "olga")
    assert await missed(browser) == []

    await missed_call(web_client, "m1")
    first = clock.now()
    await clock.advance(timedelta(minutes=10))
    await missed_call(web_client, "m2", "101", "102")  # a ring group: one call, two phones

    [entry] = await missed(browser)
    assert entry["number"] == IVAN_E164
    assert entry["written"] == "+7 916 123-45-67"
    assert entry["client"] == {
        "id": ivan.id, "name": "Ivan Petrov", "company": "", "tier": "cold", "state": "new",
    }  # fmt: skip
    assert entry["times"] == 2
    assert entry["first_at"] == first.isoformat()
    assert entry["last_at"] == clock.now().isoformat()

    # A call back by anyone, answered or not, takes it off every list.
    await clock.advance(timedelta(minutes=5))
    await pbx(web_client, {**ev("dialing", "out1", "102"), "direction": "outbound",
                           "from": "102", "to": IVAN})  # fmt: skip
    assert await missed(browser) == []
    # The client calls again, and nobody answers again: on the list again, once.
    await clock.advance(timedelta(minutes=5))
    await missed_call(web_client, "m3")
    assert [(e["number"], e["times"]) for e in await missed(browser)] == [(IVAN_E164, 1)]


async def test_answered_calls_are_no_missed_calls(
    web_client, aiohttp_client, tl, clock, olga, pavel
) -> None:
    await make_client(tl, "Ivan Petrov", IVAN)
    browser = await browser_of(aiohttp_client, web_client.server, "olga")
    # A ring group that pavel answered: olga's leg was taken elsewhere, not missed.
    await pbx(web_client, ev("ringing", "g1", "101"), ev("ringing", "g1", "102"))
    await pbx(web_client, ev("answered", "g1", "102"), ev("hangup", "g1", "101"))
    await pbx(web_client, ev("hangup", "g1", "102"))
    assert await missed(browser) == []

    await clock.advance(timedelta(minutes=1))
    await missed_call(web_client, "m1")
    assert len(await missed(browser)) == 1
    # The client's next call is answered: the missed one is returned.
    await clock.advance(timedelta(minutes=1))
    await pbx(web_client, ev("ringing", "c2", "102"), ev("answered", "c2", "102"))
    assert await missed(browser) == []


async def test_who_sees_which_missed_call(
    web_client, aiohttp_client, tl, clock, olga, pavel
) -> None:
    ivan = await make_client(tl, "Ivan Petrov", IVAN)
    buyer = await make_client(tl, "Big Buyer", "+7 916 777-00-11", state="presentation")
    await make_user(tl, "sasha", tier="sales", extension="201")
    await make_user(tl, "boss", role="supervisor", tier=None)
    await missed_call(web_client, "cold", "102")  # a cold client rang pavel's phone
    await clock.advance(timedelta(minutes=1))
    await missed_call(web_client, "sales", "101", number="+7 916 777-00-11")  # rang olga's
    await clock.advance(timedelta(minutes=1))
    await missed_call(web_client, "unknown", "101", number=STRANGER)

    async def numbers(username: str, **params: str) -> list[str]:
        browser = await browser_of(aiohttp_client, web_client.server, username)
        return [e["number"] for e in await missed(browser, **params)]

    # Operators: their tier's clients, wherever they rang; unknown callers who rang them.
    assert await numbers("olga") == [IVAN_E164, "+79035550102"]
    assert await numbers("pavel") == [IVAN_E164]
    assert await numbers("sasha") == ["+79167770011"]
    # Supervisors: everyone's, or one tier's (an unknown caller belongs to no tier).
    assert await numbers("boss") == [IVAN_E164, "+79167770011", "+79035550102"]
    assert await numbers("boss", tier="sales") == ["+79167770011"]
    browser = await browser_of(aiohttp_client, web_client.server, "sasha")
    [entry] = await missed(browser)
    assert entry["client"]["id"] == buyer.id and entry["client"]["id"] != ivan.id
    # The supervisor's dashboard lists them all; an operator may not read it.
    boss = await browser_of(aiohttp_client, web_client.server, "boss")
    live = await (await boss.get("/api/supervisor/live")).json()
    assert [(e["number"], e["times"]) for e in live["missed"]] == [
        (IVAN_E164, 1), ("+79167770011", 1), ("+79035550102", 1),
    ]  # fmt: skip
    assert (await browser.get("/api/supervisor/live")).status == 403


async def test_dismissing_a_missed_call(web_client, aiohttp_client, tl, clock, olga) -> None:
    await make_client(tl, "Ivan Petrov", IVAN)
    await make_client(tl, "Big Buyer", "+7 916 777-00-11", state="presentation")
    await missed_call(web_client, "m1")
    await missed_call(web_client, "m2", number="+7 916 777-00-11")  # another tier's client
    browser = await browser_of(aiohttp_client, web_client.server, "olga")

    for body, status, field in [
        ({}, 400, "number"),
        ({"number": "  "}, 400, "number"),
        ({"number": 79161234567}, 400, "number"),
        ({"number": "+79167770011"}, 404, None),  # not on olga's list: nothing learnt
        ({"number": "+79990000000"}, 404, None),
    ]:
        resp = await dismiss(browser, body)
        assert resp.status == status, (body, await resp.text())
        error = await resp.json()
        assert error["error"]
        assert error.get("field") == field
    async with tl.db.session() as s:
        assert (await s.exec(select(MissedCallDismissal))).all() == []

    resp = await dismiss(browser, {"number": "8 (916) 123-45-67"})  # as written anywhere
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["number"] == IVAN_E164
    assert await missed(browser) == []
    async with tl.db.session() as s:
        [row] = (await s.exec(select(MissedCallDismissal))).all()
    assert (row.number, row.user_id) == (IVAN_E164, olga.id)
    # Dismissed once is not dismissed for ever: the next missed call is listed.
    await clock.advance(timedelta(minutes=3))
    await missed_call(web_client, "m3")
    assert [e["times"] for e in await missed(browser)] == [1]


async def test_missed_calls_older_than_a_week_are_not_listed(
    web_client, aiohttp_client, tl, clock, olga
) -> None:
    await missed_call(web_client, "old", number=STRANGER)
    browser = await browser_of(aiohttp_client, web_client.server, "olga")
    await clock.advance(timedelta(days=6, hours=23))
    assert len(await missed(browser)) == 1
    await clock.advance(timedelta(hours=2))
    assert await missed(browser) == []


async def test_a_stranger_made_a_lead_is_a_clients_missed_call(
    web_client, aiohttp_client, tl, clock, olga, pavel
) -> None:
    """From the missed calls, "New lead": the lead's missed calls (and its other calls that
    rang this operator) become the lead's, so the list names it and its card lists them."""
    await missed_call(web_client, "m1", number=STRANGER)
    await missed_call(web_client, "m2", "102", number=STRANGER)  # rang pavel, not olga
    browser = await browser_of(aiohttp_client, web_client.server, "olga")
    [entry] = await missed(browser)
    assert entry["client"] is None

    resp = await browser.post(
        "/api/clients",
        json={"name": "Nina New", "phones": ["8 903 555-01-02"]},
        headers={"X-CSRF-Token": browser.csrf, "Origin": "http://x"},
    )
    assert resp.status == 201, await resp.text()
    lead = await resp.json()
    [entry] = await missed(browser)
    assert (entry["client"]["id"], entry["client"]["name"], entry["times"]) == (
        lead["id"], "Nina New", 1,
    )  # fmt: skip
    # Pavel, of the lead's tier, sees both calls now: the one it rang him and the lead's.
    other = await browser_of(aiohttp_client, web_client.server, "pavel")
    [entry] = await missed(other)
    assert (entry["client"]["name"], entry["times"]) == ("Nina New", 2)
    card = await (await browser.get(f"/api/clients/{lead['id']}")).json()
    assert [(c["direction"], c["answered"]) for c in card["calls"]] == [("inbound", False)]
    # Pavel's leg stays his to link: only olga's calls became the lead's.
    async with tl.db.session() as s:
        linked = (await s.exec(select(Call.extension).where(Call.client_id == lead["id"]))).all()
    assert linked == ["101"]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_list_reads_only_the_weeks_missed_calls(tl, clock, olga) -> None:
    """The partial index and the query say their condition with one text (MISSED_CONDITION):
    were the query to stop implying it, SQLite would silently read every call instead."""
    stmt = missed_statement(olga, clock.now())
    compiled = stmt.compile(dialect=sqlite_dialect(), compile_kwargs={"literal_binds": True})

    def plan(conn) -> str:  # type: ignore[no-untyped-def]
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
        return " | ".join(str(row[-1]) for row in rows)

    async with tl.db.engine.connect() as conn:
        detail = await conn.run_sync(plan)
    assert "ix_calls_missed" in detail, detail
    # From the indexes alone: no table row read for a missed call or for a later call of
    # its number (the covering indexes of migration 0008).
    assert "USING COVERING INDEX ix_calls_missed" in detail, detail
    assert "USING COVERING INDEX ix_calls_number_started_at" in detail, detail
