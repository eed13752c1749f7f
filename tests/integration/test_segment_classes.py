"""Segment classes: rules over revenue and 90-day activity, applied in one bulk UPDATE."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from sqlalchemy import event
from sqlmodel import select

from engine.clients import NewClient
from engine.errors import InvalidInput
from engine.models import Call, CallStatus, Client
from engine.segment_classes import check_rules, reclassify
from engine.service import Tierline
from tests.conftest import sign_in
from tests.integration.helpers import make_user

_phones = count(100)


@pytest.fixture
def client(web_client):  # type: ignore[no-untyped-def]
    return web_client


async def add(tl: Tierline, name: str, custom: dict, segment: str = "regular") -> int:
    c = await tl.add_client(
        NewClient(name=name, phones=[f"+7 916 100-{next(_phones):04d}"], custom=custom)
    )
    if segment != "regular":
        async with tl.db.transaction() as s:
            row = await s.get(Client, c.id)
            row.segment_class = segment  # type: ignore[union-attr]
            s.add(row)
    return c.id  # type: ignore[return-value]


async def calls(tl: Tierline, client_id: int, n: int, days_ago: int) -> None:
    start = tl.clock.now() - timedelta(days=days_ago)
    async with tl.db.transaction() as s:
        for i in range(n):
            s.add(Call(pbx_call_id=f"s{client_id}-{days_ago}-{i}", direction="outbound",
                       extension="101", client_id=client_id, number="+79160000000",
                       started_at=start))  # fmt: skip


async def classes(tl: Tierline) -> dict[str, str]:
    async with tl.db.session() as s:
        return {name: cls for name, cls in await s.exec(select(Client.name, Client.segment_class))}


@pytest.fixture
async def base(tl: Tierline) -> dict[str, int]:
    ids = {
        "big": await add(tl, "big", {"revenue": "2500000"}),
        "edge": await add(tl, "edge", {"revenue": 1_000_000}),  # exactly the threshold
        "mid": await add(tl, "mid", {"revenue": "150000.50"}),
        "busy": await add(tl, "busy", {"revenue": "10"}),
        "stale": await add(tl, "stale", {}),
        "junk": await add(tl, "junk", {"revenue": "lots"}, segment="key"),  # demoted
        "other_field": await add(tl, "other_field", {"turnover": "5000000"}),
    }
    await calls(tl, ids["busy"], 5, days_ago=10)  # active: 5 calls in 90 days
    await calls(tl, ids["stale"], 4, days_ago=30)
    await calls(tl, ids["stale"], 3, days_ago=120)  # too old to count
    return ids


RULES = {
    "key": {"min_revenue": 1000000},
    "important": {"min_revenue": 100000, "or_min_calls_90d": 5},
}


async def test_rules_are_applied_in_one_bulk_update(tl: Tierline, base) -> None:
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(tl.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with tl.db.transaction() as s:
            result = await reclassify(s, tl.clock.now(), RULES)
    finally:
        event.remove(tl.db.engine.sync_engine, "before_cursor_execute", seen)
    assert await classes(tl) == {
        "big": "key", "edge": "key", "mid": "important", "busy": "important",
        "stale": "regular", "junk": "regular", "other_field": "regular",
    }  # fmt: skip
    assert result.changed == 5  # big, edge, mid, busy up; junk down
    assert result.counts == {"key": 2, "important": 2, "regular": 3}
    updates = [x for x in statements if x.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1, updates  # set-based: no row-by-row writes

    # Run again: nothing changes. Another revenue field and an AND rule.
    async with tl.db.transaction() as s:
        assert (await reclassify(s, tl.clock.now(), RULES)).changed == 0
    rules = {
        "revenue_field": "turnover",
        "key": {"min_revenue": 1_000_000},
        "important": {"min_revenue": 0, "min_calls_90d": 4},
    }
    async with tl.db.transaction() as s:
        await reclassify(s, tl.clock.now(), rules)
    got = await classes(tl)
    assert got["other_field"] == "key" and got["big"] == "regular"
    # min_revenue 0 AND 4 calls: stale has 4 recent calls but no turnover at all.
    assert got["stale"] == "regular" and got["busy"] == "regular"


async def test_rules_over_http_and_bad_rules_name_the_field(tl: Tierline, base, client) -> None:
    await make_user(tl, "admin", "admin", None)
    await make_user(tl, "cold1", "operator", "cold", "101")
    await sign_in(client, "admin")
    defaults = await (await client.get("/api/settings/segment-rules")).json()
    assert defaults["revenue_field"] == "revenue" and "key" in defaults

    cases = [
        ({"important": {"min_revenue": -1}}, "important.min_revenue"),
        ({"important": {"or_min_calls_90d": 2.5}}, "important.or_min_calls_90d"),
        ({"key": {"min_profit": 5}}, "key.min_profit"),
        ({"key": {}}, "key"),
        ({"regular": {"min_revenue": 0}}, "regular"),
        ({"revenue_field": "a.b"}, "revenue_field"),
        ({"key": {"min_revenue": "1e6"}}, "key.min_revenue"),
    ]
    for rules, field in cases:
        resp = await client.put("/api/settings/segment-rules", json=rules)
        body = await resp.json()
        assert resp.status == 400 and body["field"] == field, (rules, body)
        assert field.split(".")[-1] in body["message"] or field in body["message"], body

    put = await client.put("/api/settings/segment-rules", json=RULES)
    assert put.status == 200, await put.text()
    resp = await client.post("/api/segments/reclassify")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["counts"] == {"key": 2, "important": 2, "regular": 3}
    assert (await classes(tl))["busy"] == "important"

    await sign_in(client, "cold1")
    assert (await client.post("/api/segments/reclassify")).status == 403
    assert (await client.get("/api/settings/segment-rules")).status == 403


def test_check_rules_keeps_valid_rules() -> None:
    assert check_rules(RULES) == {"revenue_field": "revenue", **RULES}
    with pytest.raises(InvalidInput):
        check_rules({"important": {"or_min_calls_90d": True}})


async def test_a_ring_groups_other_legs_are_not_calls(tl: Tierline, base) -> None:
    """A ring group's call is one row per extension that rang; the legs another extension
    answered are not calls with the client (4 calls stay 4: still under "5 calls in 90 days")."""
    async with tl.db.transaction() as s:
        s.add(Call(pbx_call_id="group-1", direction="inbound", extension="102",
                   client_id=base["stale"], number="+79160000000",
                   status=CallStatus.TAKEN_ELSEWHERE,
                   started_at=tl.clock.now() - timedelta(days=1)))  # fmt: skip
    async with tl.db.transaction() as s:
        await reclassify(s, tl.clock.now(), RULES)
    assert (await classes(tl))["stale"] == "regular"
