"""Pilot economics: known calls, talk time, payments and hourly costs give exact figures."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from itertools import count

import pytest
from sqlmodel import col, select

from engine.economics import check_config, economics
from engine.errors import InvalidInput
from engine.models import AuditEntry, Call, KpiEvent, TransitionRecord, User
from engine.service import Tierline
from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user

DAY = date(2026, 11, 23)  # Monday, Moscow
_ids = count(1)


def utc(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=UTC)


@pytest.fixture
def client(web_client):  # type: ignore[no-untyped-def]
    return web_client


async def add_call(
    tl: Tierline, user: User, start: datetime, seconds: int | None, direction: str = "outbound"
) -> None:
    async with tl.db.transaction() as s:
        s.add(
            Call(
                pbx_call_id=f"e{next(_ids)}", direction=direction, extension=user.extension or "",
                operator_id=user.id, number="+79161234567", status="ended", started_at=start,
                answered_at=start if seconds is not None else None,
                ended_at=start + timedelta(seconds=seconds or 5), duration_s=seconds,
            )
        )  # fmt: skip


async def add_kpi(tl: Tierline, user: User, kind: str, at: datetime, client_id: int) -> None:
    async with tl.db.transaction() as s:
        transition = (
            await s.exec(select(TransitionRecord).where(TransitionRecord.client_id == client_id))
        ).first()
        assert transition is not None
        s.add(
            KpiEvent(at=at, kind=kind, user_id=user.id, tier=user.tier or "", client_id=client_id,
                     transition_id=transition.id)  # type: ignore[arg-type]
        )  # fmt: skip


@pytest.fixture
async def pilot(tl: Tierline) -> dict[str, User]:
    op1 = await make_user(tl, "op1", "operator", "cold", "101")
    op2 = await make_user(tl, "op2", "operator", "cold", "102")
    op3 = await make_user(tl, "op3", "operator", "sales", "103")  # made no call
    await make_user(tl, "boss", "supervisor", None)
    cid: int = (await make_client(tl)).id  # type: ignore[assignment]
    # op1: 00:30 Moscow (21:30 UTC the day before) is already the 23rd; the missed inbound
    # ring is no call; 23:00 Moscow on the 22nd and 00:30 on the 24th are outside the day.
    await add_call(tl, op1, utc(22, 21, 30), 300)
    await add_call(tl, op1, utc(23, 7), 600)
    await add_call(tl, op1, utc(23, 8), 900, direction="inbound")
    await add_call(tl, op1, utc(23, 9), None, direction="inbound")
    await add_call(tl, op1, utc(22, 20), 3600)
    await add_call(tl, op1, utc(23, 21, 30), 3600)
    await add_call(tl, op2, utc(23, 10), 720)
    for at in (utc(23, 7, 30), utc(23, 8, 30)):
        await add_kpi(tl, op1, "payment", at, cid)
    await add_kpi(tl, op1, "invoice", utc(23, 7, 10), cid)
    await add_kpi(tl, op1, "payment", utc(22, 20, 30), cid)  # the day before: not counted
    await add_kpi(tl, op2, "invoice", utc(23, 11), cid)
    return {"op1": op1, "op2": op2, "op3": op3}


CONFIG = {"default_hourly_cost": 500, "currency": "RUB"}


async def test_exact_figures_per_operator_and_average(tl: Tierline, pilot) -> None:
    config = {**CONFIG, "hourly_cost": {str(pilot["op1"].id): 600}}
    async with tl.db.session() as s:
        report = await economics(s, DAY, DAY, "Europe/Moscow", check_config(config))
    lines = {line.username: line.to_json() for line in report.operators}
    assert set(lines) == {"op1", "op2", "op3"}
    assert lines["op1"] == {
        "user_id": pilot["op1"].id, "username": "op1", "display_name": "Op1", "calls": 3,
        "talk_s": 1800, "successes": 2, "invoices": 1, "success_rate": 0.6667,
        "hourly_cost": 600.0, "cost": 300.0, "cost_per_success": 150.0,
    }  # fmt: skip
    op2 = lines["op2"]
    assert (op2["calls"], op2["talk_s"], op2["successes"], op2["invoices"]) == (1, 720, 0, 1)
    assert (op2["hourly_cost"], op2["cost"], op2["success_rate"]) == (500.0, 100.0, 0.0)
    assert op2["cost_per_success"] is None  # no success: no price of one
    op3 = lines["op3"]
    assert (op3["calls"], op3["cost"], op3["success_rate"], op3["cost_per_success"]) == (
        0, 0.0, None, None,
    )  # fmt: skip
    total = report.total.to_json()
    assert (total["calls"], total["talk_s"], total["successes"], total["cost"]) == (
        4,
        2520,
        2,
        400.0,
    )
    average = report.average.to_json()  # over the two operators who called
    assert (average["calls"], average["talk_s"], average["successes"], average["cost"]) == (
        2, 1260, 1, 200.0,
    )  # fmt: skip
    assert average["success_rate"] == 0.5 and average["cost_per_success"] == 200.0

    # Two days: the 22nd (23:00 Moscow call, and its payment) joins the figures.
    async with tl.db.session() as s:
        wider = await economics(s, date(2026, 11, 22), DAY, "Europe/Moscow", config)
    op1 = next(x for x in wider.operators if x.username == "op1")
    assert (op1.calls, op1.talk_s, op1.successes) == (4, 5400, 3)
    assert float(op1.cost) == 900.0 and float(op1.cost_per_success) == 300.0  # type: ignore[arg-type]


async def test_economics_over_http_json_csv_settings_and_refusals(tl, pilot, client) -> None:
    await sign_in(client, "boss")
    assert (await client.get("/api/settings/economics")).status == 200
    bad = await client.put("/api/settings/economics", json={"hourly_cost": {"7": -3}})
    assert bad.status == 400 and (await bad.json())["field"] == "hourly_cost.7"
    bad = await client.put("/api/settings/economics", json={"currency": "roubles"})
    assert bad.status == 400 and (await bad.json())["field"] == "currency"
    put = await client.put(
        "/api/settings/economics",
        json={**CONFIG, "hourly_cost": {str(pilot["op1"].id): 600}},
    )
    assert put.status == 200, await put.text()
    stored = await (await client.get("/api/settings/economics")).json()
    assert stored["hourly_cost"] == {str(pilot["op1"].id): 600}

    resp = await client.get("/api/economics", params={"from": "2026-11-23", "to": "2026-11-23"})
    body = await resp.json()
    assert resp.status == 200 and body["currency"] == "RUB"
    op1 = next(o for o in body["operators"] if o["username"] == "op1")
    assert (op1["cost"], op1["cost_per_success"]) == (300.0, 150.0)
    assert body["total"]["cost"] == 400.0

    csv_resp = await client.get("/api/economics.csv", params={"from": "2026-11-23"})
    assert csv_resp.status == 200 and csv_resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await csv_resp.text())))
    by_name = {r["operator"]: r for r in rows}
    assert by_name["Op1"]["cost"] == "300.0" and by_name["Op2"]["cost_per_success"] == ""
    assert by_name["TOTAL"]["calls"] == "4" and by_name["AVERAGE"]["cost"] == "200.0"

    bad_range = await client.get(
        "/api/economics", params={"from": "2026-11-24", "to": "2026-11-23"}
    )
    assert bad_range.status == 400 and (await bad_range.json())["field"] == "from"

    await sign_in(client, "op1")
    assert (await client.get("/api/economics")).status == 403
    assert (await client.put("/api/settings/economics", json={})).status == 403
    async with tl.db.session() as s:
        refused = (await s.exec(select(AuditEntry).where(col(AuditEntry.allowed).is_(False)))).all()
    assert {r.action for r in refused} >= {"economics.read", "settings.economics"}


def test_config_validation_names_fields() -> None:
    with pytest.raises(InvalidInput) as err:
        check_config({"default_hourly_cost": True})
    assert err.value.details["field"] == "default_hourly_cost"
    with pytest.raises(InvalidInput) as err:
        check_config({"hourly_cost": {"boss": 5}})
    assert err.value.details["field"] == "hourly_cost"
    with pytest.raises(InvalidInput) as err:
        check_config({"wages": 1})
    assert err.value.details["field"] == "wages"
