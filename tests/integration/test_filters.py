"""Saved filters (dynamic) and groups (static), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event, text, update
from sqlmodel import col

from engine import filters, groups
from engine.errors import Conflict, InvalidInput
from engine.filters import Context
from engine.filters.statistics import MIN_ROWS, refresh_statistics
from engine.models import Client
from engine.service import Tierline
from tests.integration.helpers import make_client


async def set_fields(tl: Tierline, client_id: int, **values: object) -> None:
    async with tl.db.transaction() as s:
        await s.exec(update(Client).where(col(Client.id) == client_id).values(**values))  # type: ignore[call-overload]


def ctx(tl: Tierline) -> Context:
    return Context(now=tl.clock.now(), tz=tl.settings.timezone)


async def matching(tl: Tierline, criteria: dict) -> list[str]:
    async with tl.db.session() as s:
        total = await filters.count_matching(s, criteria, ctx(tl))
        names = [c.name for c in await filters.page_matching(s, criteria, ctx(tl), limit=500)]
    assert total == len(names)
    return sorted(names)


@pytest.fixture
async def people(tl: Tierline) -> dict[str, int]:
    now = tl.clock.now()
    anna = await make_client(tl, "Anna Acme", state="new", timezone="Europe/Moscow")
    await tl.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    boris = await make_client(tl, "Boris Beta", state="presentation")
    cyril = await make_client(tl, "Cyril", state="paid", timezone="Asia/Yekaterinburg")
    await set_fields(
        tl,
        anna.id,
        company="Acme Ltd",
        source="fair",
        last_outcome="no_answer",
        segment_class="key",
        custom={"industry": "retail", "employees": "120"},
        last_contact_at=tl.clock.now() - timedelta(days=2, hours=1),
    )
    await set_fields(
        tl,
        boris.id,
        company="Beta 100%_off",
        segment_class="important",
        custom={"industry": "banking", "employees": 15},
    )
    await set_fields(
        tl,
        cyril.id,
        custom={"employees": "many", "ключ": "да"},
        last_contact_at=now - timedelta(days=40),
    )
    return {"anna": anna.id, "boris": boris.id, "cyril": cyril.id}


CASES = [
    ({"field": "tier", "op": "eq", "value": "sales"}, ["Boris Beta", "Cyril"]),
    ({"field": "tier", "op": "ne", "value": "sales"}, ["Anna Acme"]),
    ({"field": "state", "op": "in", "value": ["new", "paid"]}, ["Anna Acme", "Cyril"]),
    ({"field": "segment_class", "op": "eq", "value": "key"}, ["Anna Acme"]),
    ({"field": "name", "op": "contains", "value": "BETA"}, ["Boris Beta"]),
    # LIKE wildcards in the value are literal characters.
    ({"field": "company", "op": "contains", "value": "100%_"}, ["Boris Beta"]),
    ({"field": "company", "op": "contains", "value": "%"}, ["Boris Beta"]),
    ({"field": "company", "op": "is_null", "value": True}, ["Cyril"]),
    ({"field": "timezone", "op": "is_null", "value": True}, ["Boris Beta"]),
    ({"field": "timezone", "op": "ne", "value": "Europe/Moscow"}, ["Boris Beta", "Cyril"]),
    ({"field": "source", "op": "eq", "value": "fair"}, ["Anna Acme"]),
    ({"field": "last_outcome", "op": "ne", "value": "no_answer"}, ["Boris Beta", "Cyril"]),
    ({"field": "name", "op": "gt", "value": "Boris"}, ["Boris Beta", "Cyril"]),
    ({"field": "days_since_contact", "op": "eq", "value": 2}, ["Anna Acme"]),
    ({"field": "days_since_contact", "op": "gt", "value": 30}, ["Boris Beta", "Cyril"]),
    (
        {"field": "days_since_contact", "op": "gte", "value": 2},
        ["Anna Acme", "Boris Beta", "Cyril"],
    ),
    ({"field": "days_since_contact", "op": "lt", "value": 3}, ["Anna Acme"]),
    ({"field": "days_since_contact", "op": "lte", "value": 1}, []),
    ({"field": "days_since_contact", "op": "is_null", "value": True}, ["Boris Beta"]),
    ({"field": "days_since_contact", "op": "ne", "value": 2}, ["Boris Beta", "Cyril"]),
    ({"field": "days_since_contact", "op": "in", "value": [2, 41]}, ["Anna Acme", "Cyril"]),
    ({"field": "created_at", "op": "lt", "value": "2026-11-24"}, ["Anna Acme"]),
    (
        {"field": "created_at", "op": "gte", "value": "2026-11-24T00:00:00+03:00"},
        ["Boris Beta", "Cyril"],
    ),
    ({"field": "custom.industry", "op": "eq", "value": "retail"}, ["Anna Acme"]),
    ({"field": "custom.industry", "op": "ne", "value": "retail"}, ["Boris Beta", "Cyril"]),
    (
        {"field": "custom.industry", "op": "in", "value": ["retail", "banking"]},
        ["Anna Acme", "Boris Beta"],
    ),
    ({"field": "custom.industry", "op": "contains", "value": "BANK"}, ["Boris Beta"]),
    ({"field": "custom.industry", "op": "is_null", "value": True}, ["Cyril"]),
    ({"field": "custom.ключ", "op": "eq", "value": "да"}, ["Cyril"]),
    # Numbers compare as numbers, stored as text ("120") or as JSON numbers (15); "many" never.
    ({"field": "custom.employees", "op": "gt", "value": 100}, ["Anna Acme"]),
    ({"field": "custom.employees", "op": "lte", "value": 15}, ["Boris Beta"]),
    ({"field": "custom.employees", "op": "eq", "value": 120}, ["Anna Acme"]),
    ({"field": "custom.employees", "op": "ne", "value": 120}, ["Boris Beta", "Cyril"]),
    ({"field": "custom.employees", "op": "eq", "value": "many"}, ["Cyril"]),
    ({"all": []}, ["Anna Acme", "Boris Beta", "Cyril"]),
    (
        {
            "all": [
                {"field": "tier", "op": "eq", "value": "sales"},
                {"field": "state", "op": "eq", "value": "paid"},
            ]
        },
        ["Cyril"],
    ),
    (
        {
            "any": [
                {"field": "segment_class", "op": "eq", "value": "key"},
                {"field": "state", "op": "eq", "value": "paid"},
            ]
        },
        ["Anna Acme", "Cyril"],
    ),
    ({"not": {"field": "tier", "op": "eq", "value": "cold"}}, ["Boris Beta", "Cyril"]),
    (
        {
            "all": [
                {
                    "not": {
                        "any": [
                            {"field": "name", "op": "contains", "value": "anna"},
                            {"field": "name", "op": "contains", "value": "cyril"},
                        ]
                    }
                }
            ]
        },
        ["Boris Beta"],
    ),
    # "not" is the complement, also where the inner node meets an empty value (SQL NULL).
    ({"not": {"field": "last_outcome", "op": "eq", "value": "no_answer"}}, ["Boris Beta", "Cyril"]),
    ({"not": {"field": "custom.industry", "op": "eq", "value": "retail"}}, ["Boris Beta", "Cyril"]),
    ({"not": {"field": "days_since_contact", "op": "lt", "value": 3}}, ["Boris Beta", "Cyril"]),
    ({"not": {"not": {"field": "timezone", "op": "eq", "value": "Europe/Moscow"}}}, ["Anna Acme"]),
    ({"not": {"all": []}}, []),
]
EVERYONE = ["Anna Acme", "Boris Beta", "Cyril"]


@pytest.mark.parametrize(("criteria", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
async def test_each_operator(tl: Tierline, people: dict[str, int], criteria: dict, expected):
    assert await matching(tl, criteria) == expected
    # Every filter and its negation split the base in two, whatever is empty.
    assert await matching(tl, {"not": criteria}) == [n for n in EVERYONE if n not in expected]


@pytest.mark.parametrize(
    ("criteria", "node"),
    [
        ({"all": [{"field": "tier", "op": "eq", "value": 1}]}, "$.all[0] (tier eq)"),
        ({"any": []}, "$.any"),
        ({"all": [{"not": {"field": "color", "op": "eq", "value": "x"}}]}, "$.all[0].not"),
        ({"field": "tier", "op": "like", "value": "x"}, "$"),
        ({"field": "custom.a'b", "op": "eq", "value": "x"}, "$"),
        ({"field": "days_since_contact", "op": "gt", "value": "3"}, "$ (days_since_contact gt)"),
        ({"field": "created_at", "op": "gt", "value": "yesterday"}, "$ (created_at gt)"),
        ({"field": "state", "op": "in", "value": []}, "$ (state in)"),
        ({"all": [{"field": "tier", "op": "eq", "value": "x", "extra": 1}]}, "$.all[0]"),
        ([1, 2], "$"),
    ],
)
async def test_bad_criteria_name_the_node(tl: Tierline, criteria: object, node: str):
    with pytest.raises(InvalidInput) as err:
        filters.validate_criteria(criteria)
    assert err.value.details["node"] == node.split(" ")[0]
    assert f"filter node {node}" in err.value.message


async def test_keyset_pages_cover_everyone_once(tl: Tierline, people: dict[str, int]):
    seen: list[int] = []
    after = 0
    async with tl.db.session() as s:
        while True:
            page = await filters.preview(s, {"all": []}, ctx(tl), after_id=after, limit=2)
            assert page.count == 3
            seen += [c.id for c in page.clients]
            if page.next_after is None:
                break
            after = page.next_after
    assert seen == sorted(people.values())


async def test_keyset_pages_of_a_filter_follow_id_order(tl: Tierline, people: dict[str, int]):
    sales = {"field": "tier", "op": "eq", "value": "sales"}
    async with tl.db.session() as s:
        first = await filters.preview(s, sales, ctx(tl), limit=1)
        second = await filters.preview(s, sales, ctx(tl), after_id=first.next_after or 0, limit=1)
    assert [c.id for c in first.clients + second.clients] == [people["boris"], people["cyril"]]
    assert (first.count, second.count, second.next_after) == (2, 2, people["cyril"])


async def test_a_filter_matching_nobody_is_read_once(tl: Tierline, people: dict[str, int]):
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    nobody = {"field": "custom.industry", "op": "eq", "value": "mining"}
    event.listen(tl.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with tl.db.session() as s:
            page = await filters.preview(s, nobody, ctx(tl))
            assert (page.count, page.clients, page.next_after) == (0, [], None)
            reads = [q for q in statements if "FROM clients" in q]
            assert len(reads) == 1 and "count(" in reads[0].lower()
            page = await filters.preview(
                s, {"field": "name", "op": "eq", "value": "Cyril"}, ctx(tl)
            )
    finally:
        event.remove(tl.db.engine.sync_engine, "before_cursor_execute", seen)
    assert [c.id for c in page.clients] == [people["cyril"]]
    assert len([q for q in statements if "FROM clients" in q]) == 3


async def test_statistics_are_refreshed_after_bulk_writes(tl: Tierline, people: dict[str, int]):
    marker = f"bulk-{uuid.uuid4().hex[:8]}"
    async with tl.db.transaction() as s:
        await s.exec(update(Client).values(source=marker))  # type: ignore[call-overload]

    async def known_sources() -> str:
        async with tl.db.session() as s:
            row = await s.exec(
                text(
                    "SELECT most_common_vals::text FROM pg_stats "
                    "WHERE tablename = 'clients' AND attname = 'source'"
                )
            )  # type: ignore[call-overload]
            return str(row.all())

    if tl.db.is_sqlite:  # SQLite plans these filters well without statistics
        assert await refresh_statistics(tl.db, changed_rows=MIN_ROWS) is False
        return
    assert await refresh_statistics(tl.db, changed_rows=MIN_ROWS - 1) is False
    assert marker not in await known_sources()
    assert await refresh_statistics(tl.db, changed_rows=MIN_ROWS) is True
    assert marker in await known_sources()


async def test_saved_filter_is_dynamic_and_group_is_static(tl: Tierline, people: dict[str, int]):
    criteria = {"field": "tier", "op": "eq", "value": "cold"}
    now = tl.clock.now()
    async with tl.db.transaction() as s:
        saved = await filters.create_filter(s, "Cold leads", criteria, owner_id=None, now=now)
        group, size = await groups.create_group(
            s,
            "Cold on Monday",
            now=now,
            criteria=saved.criteria,
            ctx=ctx(tl),
            source_filter_id=saved.id,
        )
    assert size == 1
    with pytest.raises(Conflict):
        async with tl.db.transaction() as s:
            await filters.create_filter(s, "Cold leads", criteria, owner_id=None, now=now)

    late = await make_client(tl, "Late Lead")  # joins the filter, not the group
    async with tl.db.session() as s:
        stored = await filters.get_filter(s, saved.id)  # type: ignore[arg-type]
        names = [c.name for c in await filters.page_matching(s, stored.criteria, ctx(tl))]
        members = [c.name for c in await groups.list_members(s, group.id)]  # type: ignore[arg-type]
    assert names == ["Anna Acme", "Late Lead"]
    assert members == ["Anna Acme"]

    async with tl.db.transaction() as s:
        gid = group.id
        assert await groups.add_members(s, gid, [late.id, people["anna"], 999_999], now=now) == 1
        assert await groups.add_members(s, gid, [late.id], now=now) == 0  # already in
        assert await groups.remove_members(s, gid, [people["anna"]]) == 1
    async with tl.db.session() as s:
        assert [c.name for c in await groups.list_members(s, gid)] == ["Late Lead"]  # type: ignore[arg-type]
        assert [(g.name, n) for g, n in await groups.list_groups(s)] == [("Cold on Monday", 1)]
    async with tl.db.transaction() as s:
        await groups.delete_group(s, gid)  # type: ignore[arg-type]
        await filters.delete_filter(s, saved.id)  # type: ignore[arg-type]
    async with tl.db.session() as s:
        assert await groups.list_groups(s) == [] and await filters.list_filters(s) == []


@pytest.fixture
async def http(aiohttp_client, tl: Tierline, fake_pbx):  # type: ignore[no-untyped-def]
    from web.api import segments
    from web.app import create_app

    app = create_app(tl, pbx=fake_pbx, start_engine=False)
    routes = {r.resource.canonical for r in app.router.routes() if r.resource}
    if "/api/filters" not in routes:
        segments.setup(app)  # until web/app.py lists the module
    return await aiohttp_client(app)


async def test_filters_and_groups_over_http(http, tl: Tierline, people: dict[str, int]):  # type: ignore[no-untyped-def]
    from tests.conftest import sign_in
    from tests.integration.helpers import make_user

    await make_user(tl, "op", "operator", "cold")
    await make_user(tl, "boss", "supervisor", None)
    sales = {"field": "tier", "op": "eq", "value": "sales"}
    await sign_in(http, "op")
    assert (await http.post("/api/filters/preview", json={"criteria": sales})).status == 403
    assert (await http.get("/api/groups")).status == 403
    await sign_in(http, "boss")

    resp = await http.post("/api/filters/preview", json={"criteria": sales, "limit": 1})
    body = await resp.json()
    assert (body["count"], [c["name"] for c in body["first_page"]]) == (2, ["Boris Beta"])
    assert body["next_after"] == people["boris"]
    resp = await http.post("/api/filters/preview", json={"criteria": {"any": []}})
    assert resp.status == 400 and (await resp.json())["node"] == "$.any"

    resp = await http.post("/api/filters", json={"name": "Sales", "criteria": sales})
    assert resp.status == 201
    fid = (await resp.json())["id"]
    again = await http.post("/api/filters", json={"name": "Sales", "criteria": sales})
    assert again.status == 409
    resp = await http.patch(f"/api/filters/{fid}", json={"description": "all of sales"})
    assert (await resp.json())["description"] == "all of sales"
    assert (await (await http.get(f"/api/filters/{fid}")).json())["count"] == 2
    page = await (await http.get(f"/api/filters/{fid}/clients?limit=5")).json()
    assert [c["name"] for c in page["clients"]] == ["Boris Beta", "Cyril"]
    assert [f["name"] for f in (await (await http.get("/api/filters")).json())["filters"]] == [
        "Sales"
    ]

    resp = await http.post("/api/groups", json={"name": "Sales today", "filter_id": fid})
    assert resp.status == 201
    group = await resp.json()
    assert (group["size"], group["source_filter_id"]) == (2, fid)
    gid = group["id"]
    members = f"/api/groups/{gid}/members"
    assert (await (await http.post(members, json={"client_ids": [people["anna"]]})).json()) == {
        "added": 1
    }
    resp = await http.delete(members, json={"client_ids": [people["boris"], people["cyril"]]})
    assert await resp.json() == {"removed": 2}
    page = await (await http.get(members)).json()
    assert [c["name"] for c in page["clients"]] == ["Anna Acme"]
    assert (await http.post(members, json={"client_ids": "all"})).status == 400
    # Deleting the filter keeps the group (and its copy of the criteria).
    assert (await http.delete(f"/api/filters/{fid}")).status == 204
    group = await (await http.get(f"/api/groups/{gid}")).json()
    assert (group["size"], group["source_filter_id"], group["source_criteria"]) == (1, None, sales)
    assert (await http.delete(f"/api/groups/{gid}")).status == 204
    assert (await http.get(f"/api/groups/{gid}")).status == 404
