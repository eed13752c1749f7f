"""KPI slices: what counts at 11:00 vs 17:00, prorated norms, behind flags, CSV, HTTP."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from itertools import count

import pytest
from sqlalchemy import update
from sqlmodel import col

from engine.kpi import KpiSlice, slice_csv, take_slice
from engine.models import Call, User
from engine.runtime import EventRequest
from engine.service import Tierline
from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user
from web.api import segments
from web.app import create_app

DAY = date(2026, 11, 23)  # Monday; the clock starts at 09:00 Moscow (06:00 UTC)
_ids = count(1)


def msk(hh: int, mm: int = 0, day: int = 23) -> datetime:
    return datetime(2026, 11, day, hh - 3, mm, tzinfo=UTC)


async def add_call(
    tl: Tierline,
    user: User,
    start: datetime,
    *,
    direction: str = "outbound",
    answered: bool = True,
    minutes: float = 1,
) -> None:
    end = start + timedelta(minutes=minutes)
    async with tl.db.transaction() as s:
        s.add(
            Call(
                pbx_call_id=f"c{next(_ids)}",
                direction=direction,
                extension=user.extension or "",
                operator_id=user.id,
                number="+79161234567",
                status="ended",
                started_at=start,
                answered_at=start if answered else None,
                ended_at=end,
                duration_s=int(minutes * 60) if answered else None,
                long_call=answered and minutes >= 10,
            )
        )


async def set_norms(tl: Tierline, user: User, norms: dict) -> None:
    async with tl.db.transaction() as s:
        await s.exec(update(User).where(col(User.id) == user.id).values(norms=norms))  # type: ignore[call-overload]


@pytest.fixture
async def day(tl: Tierline) -> dict[str, User]:
    s1 = await make_user(tl, "sales1", "operator", "sales", "201")
    s2 = await make_user(tl, "sales2", "operator", "sales", "202")
    c1 = await make_user(tl, "cold1", "operator", "cold", "101")
    await make_user(tl, "boss", "supervisor", None)
    await set_norms(
        tl, s1, {"calls": 22, "long_calls": 2, "presentations": 4, "invoices": 2, "payments": 1}
    )
    await set_norms(tl, s2, {"calls": 22})
    await add_call(tl, s1, msk(15, day=22))  # yesterday: never counted
    await add_call(tl, s1, msk(9, 30), answered=False)  # outbound, unanswered: a call
    await add_call(tl, s1, msk(10), minutes=15)  # long, ended 10:15
    await add_call(tl, s1, msk(10, 30), direction="inbound")
    await add_call(tl, s1, msk(10, 40), direction="inbound", answered=False)  # missed: not
    await add_call(tl, s1, msk(10, 55), minutes=15)  # long, but only from 11:10
    await add_call(tl, s1, msk(12), minutes=20)
    await add_call(tl, s2, msk(16))
    # Achievements come from real transitions, credited to the operator who made them.
    invoice_client = await make_client(tl, "Invoice Co", state="objections")
    payer = await make_client(tl, "Payer Co", state="invoice_sent")
    await tl.clock.advance(msk(10, 20) - tl.clock.now())  # type: ignore[attr-defined]
    await tl.apply(EventRequest(invoice_client.id, "send_invoice", actor=s1))  # type: ignore[arg-type]
    await tl.clock.advance(msk(13) - tl.clock.now())  # type: ignore[attr-defined]
    await tl.apply(EventRequest(payer.id, "payment_received", actor=s1))  # type: ignore[arg-type]
    return {"s1": s1, "s2": s2, "c1": c1}


async def slice_at(tl: Tierline, at: time | None, tier: str | None = None) -> KpiSlice:
    async with tl.db.session() as s:
        return await take_slice(
            s,
            day=DAY,
            at=at,
            tz=tl.settings.timezone,
            policy=tl.policy,
            now=tl.clock.now(),
            tier=tier,
        )


def figures(kpi: KpiSlice, username: str) -> dict[str, tuple]:
    op = next(o for o in kpi.operators if o.username == username)
    return {f.name: (f.actual, f.expected, f.behind) for f in op.figures}


async def test_slices_at_11_and_17(tl: Tierline, day: dict[str, User]):
    at11 = await slice_at(tl, time(11))
    assert [o.username for o in at11.operators] == ["cold1", "sales1", "sales2"]
    # 09:00-20:00 working day: 2/11 of it gone at 11:00; expected = floor(norm x share).
    assert figures(at11, "sales1") == {
        "calls": (4, 4, False),
        "long_calls": (1, 0, False),
        "presentations": (0, 0, False),
        "invoices": (1, 0, False),
        "payments": (0, 0, False),
    }
    assert figures(at11, "sales2")["calls"] == (0, 4, True)
    assert figures(at11, "cold1")["calls"] == (0, None, False)  # no norm, never behind

    at17 = await slice_at(tl, time(17))
    assert figures(at17, "sales1") == {
        "calls": (5, 16, True),
        "long_calls": (3, 1, False),
        "presentations": (0, 2, True),
        "invoices": (1, 1, False),
        "payments": (1, 0, False),
    }
    assert figures(at17, "sales2")["calls"] == (1, 16, True)
    sales = {f.name: (f.actual, f.norm, f.expected, f.behind) for f in at17.tiers["sales"]}
    assert sales["calls"] == (6, 44, 32, True)
    assert sales["payments"] == (1, 1, 0, False)

    now = await slice_at(tl, None)  # the clock is at 13:00
    assert now.label == "now" and figures(now, "sales1")["calls"][0] == 5
    assert [o.username for o in (await slice_at(tl, time(17), tier="cold")).operators] == ["cold1"]


async def test_csv_has_a_line_per_operator_and_tier_totals(tl: Tierline, day: dict[str, User]):
    await set_norms(tl, day["c1"], {"calls": 10})
    async with tl.db.transaction() as s:
        evil = update(User).where(col(User.id) == day["c1"].id)
        await s.exec(evil.values(display_name="=cmd|' /C calc'!A0"))  # type: ignore[call-overload]
    rows = list(csv.DictReader(io.StringIO(slice_csv(await slice_at(tl, time(17))))))
    assert [(r["username"], r["operator"]) for r in rows] == [
        ("cold1", "'=cmd|' /C calc'!A0"),  # a formula is written as text
        ("sales1", "Sales1"),
        ("sales2", "Sales2"),
        ("", "TOTAL"),
        ("", "TOTAL"),
    ]
    s1 = rows[1]
    assert (s1["calls"], s1["calls_expected"], s1["calls_norm"], s1["calls_behind"]) == (
        "5",
        "16",
        "22",
        "yes",
    )
    assert (s1["payments"], s1["payments_behind"], s1["behind"]) == ("1", "no", "yes")
    assert rows[0]["calls_expected"] == "7" and rows[0]["tier"] == "cold"


@pytest.fixture
async def http(aiohttp_client, tl: Tierline, fake_pbx):  # type: ignore[no-untyped-def]
    app = create_app(tl, pbx=fake_pbx, start_engine=False)
    routes = {r.resource.canonical for r in app.router.routes() if r.resource}
    if "/api/kpi/slices" not in routes:
        segments.setup(app)  # until web/app.py lists the module
    return await aiohttp_client(app)


async def test_kpi_over_http(http, tl: Tierline, day: dict[str, User]):  # type: ignore[no-untyped-def]
    await sign_in(http, "sales1")
    resp = await http.get("/api/kpi/slices?day=2026-11-23&at=11:00")
    assert resp.status == 403
    await sign_in(http, "boss")
    resp = await http.get("/api/kpi/slices?day=2026-11-23&at=17:00&tier=sales")
    assert resp.status == 200
    body = await resp.json()
    assert body["at"] == "17:00" and [o["username"] for o in body["operators"]] == [
        "sales1",
        "sales2",
    ]
    assert body["operators"][0]["figures"]["calls"] == {
        "actual": 5,
        "norm": 22,
        "expected": 16,
        "behind": True,
    }
    assert body["tiers"]["sales"]["behind"] is True
    resp = await http.get("/api/kpi/slices.csv?day=2026-11-23&at=11:00")
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "kpi-2026-11-23-1100.csv" in resp.headers["Content-Disposition"]
    assert (await resp.text()).startswith("day,at,tier,username,operator,calls,")
    resp = await http.get("/api/kpi/slices?at=25:99")
    assert resp.status == 400 and (await resp.json())["field"] == "at"
