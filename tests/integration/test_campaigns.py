"""Campaigns: launch with a held-out control arm, responses, the report; both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from engine import calendar, campaigns, filters, groups
from engine.campaigns import NewCampaign
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import CampaignMember, Client, FollowUp, FollowUpStatus, TransitionRecord
from engine.service import Tierline
from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user


async def set_fields(tl: Tierline, client_id: int, **values: object) -> None:
    async with tl.db.transaction() as s:
        await s.exec(update(Client).where(col(Client.id) == client_id).values(**values))  # type: ignore[call-overload]


async def pending_of(tl: Tierline, client_id: int) -> list[FollowUp]:
    async with tl.db.session() as s:
        rows = await s.exec(
            select(FollowUp).where(
                FollowUp.client_id == client_id, FollowUp.status == FollowUpStatus.PENDING
            )
        )
        return list(rows)


async def client_row(tl: Tierline, client_id: int) -> Client:
    async with tl.db.session() as s:
        row = await s.get(Client, client_id)
        assert row is not None
        return row


@pytest.fixture
async def segment(tl: Tierline) -> dict[str, object]:
    """Ten cold clients who declined earlier (two far away in time), plus three ineligible."""
    zones = ["Europe/Moscow"] * 8 + ["America/New_York", "Asia/Vladivostok"]
    eligible = [
        (await make_client(tl, f"Lead {i}", state="not_interested", timezone=tz)).id
        for i, tz in enumerate(zones)
    ]
    flagged = (await make_client(tl, "Flagged", state="not_interested")).id
    await set_fields(tl, flagged, do_not_call=True)
    final = (await make_client(tl, "Refused", state="do_not_call")).id
    selling = (await make_client(tl, "In sales", state="presentation")).id
    async with tl.db.transaction() as s:
        group, _ = await groups.create_group(s, "Winback", now=tl.clock.now())
        await groups.add_members(
            s, group.id, [*eligible, flagged, final, selling], now=tl.clock.now()  # type: ignore[arg-type]
        )
    return {"group_id": group.id, "eligible": eligible, "flagged": flagged, "final": final,
            "selling": selling}  # fmt: skip


async def test_launch_splits_calls_and_holds_out(tl: Tierline, segment: dict):
    before = {cid: await pending_of(tl, cid) for cid in segment["eligible"]}
    async with tl.db.transaction() as s:
        campaign = await campaigns.create_campaign(
            s,
            tl.runtime,
            NewCampaign("Winback Q4", "new", group_id=segment["group_id"], holdout_share=0.3,
                        seed=42),
            now=tl.clock.now(),
        )  # fmt: skip
        campaign, report = await campaigns.launch(s, tl.runtime, campaign.id, tz="Europe/Moscow")  # type: ignore[arg-type]

    assert len(report.control) == 3 and len(report.called) == 7
    assert sorted(report.called + report.control) == sorted(segment["eligible"])
    assert report.skipped == {
        "do_not_call": [segment["flagged"]],
        "final_state": [segment["final"]],
        "other_tier": [segment["selling"]],
    }
    # The draw is the seed's, not luck: the same seed splits the same ids the same way.
    assert campaigns.split_holdout(segment["eligible"], 0.3, 42) == (report.called, report.control)
    assert campaigns.split_holdout(segment["eligible"], 0.3, 43) != (report.called, report.control)

    for cid in report.control:  # untouched: same state, same follow-up
        row = await client_row(tl, cid)
        assert row.state == "not_interested"
        assert [f.id for f in await pending_of(tl, cid)] == [f.id for f in before[cid]]
    now = tl.clock.now()
    for cid in report.called:
        row = await client_row(tl, cid)
        assert (row.state, row.tier, row.revision) == ("new", "cold", 1)
        (fu,) = await pending_of(tl, cid)
        assert fu.kind == "call_back" and fu.auto_event is None and fu.state == "new"
        assert fu.due_at >= now
        assert calendar.in_window(fu.due_at, row.timezone or "Europe/Moscow", tl.policy)
    async with tl.db.session() as s:
        events = list(
            await s.exec(
                select(TransitionRecord.client_id).where(
                    TransitionRecord.event == f"campaign:{campaign.id}"
                )
            )
        )
        arms = dict(
            (await s.exec(select(CampaignMember.client_id, CampaignMember.arm))).all()
        )
    assert sorted(events) == report.called
    assert arms == {**dict.fromkeys(report.called, "called"),
                    **dict.fromkeys(report.control, "control")}  # fmt: skip
    # New York is asleep at 01:00: its first call waits for its own morning.
    ny = segment["eligible"][8]
    assert ny in report.called  # seed 42 calls it
    (fu,) = await pending_of(tl, ny)
    assert fu.due_at > now
    assert await tl.check_followups() == []

    async with tl.db.transaction() as s:
        with pytest.raises(Conflict):
            await campaigns.launch(s, tl.runtime, campaign.id)  # type: ignore[arg-type]


async def test_filter_campaign_mailing_follow_up_and_responses(tl: Tierline):
    loyal = [(await make_client(tl, f"Loyal {i}", state="loyalty")).id for i in range(4)]
    await make_client(tl, "Cold one", state="not_interested")
    async with tl.db.transaction() as s:
        row = await filters.create_filter(
            s, "Loyal", {"field": "state", "op": "eq", "value": "loyalty"}, owner_id=None,
            now=tl.clock.now(),
        )
        with pytest.raises(InvalidInput, match="after a delay"):
            await campaigns.create_campaign(
                s, tl.runtime,
                NewCampaign("Bad", "new", filter_id=row.id, kind="mailing_follow_up"),
                now=tl.clock.now(),
            )  # fmt: skip
        with pytest.raises(InvalidInput, match="does not schedule a call"):
            await campaigns.create_campaign(
                s, tl.runtime, NewCampaign("Bad", "qualified", filter_id=row.id),
                now=tl.clock.now(),
            )  # fmt: skip
        with pytest.raises(InvalidInput, match="holdout_share"):
            await campaigns.create_campaign(
                s, tl.runtime,
                NewCampaign("Bad", "satisfaction_check", filter_id=row.id, holdout_share=0.6),
                now=tl.clock.now(),
            )  # fmt: skip
        campaign = await campaigns.create_campaign(
            s, tl.runtime,
            NewCampaign("Newsletter", "satisfaction_check", filter_id=row.id,
                        kind="mailing_follow_up", holdout_share=0.5, seed=7),
            now=tl.clock.now(),
        )  # fmt: skip
        campaign, report = await campaigns.launch(s, tl.runtime, campaign.id, tz="Europe/Moscow")  # type: ignore[arg-type]
    assert sorted(report.called + report.control) == loyal and len(report.control) == 2
    for cid in report.called:  # called back the next business day, after the mailing landed
        (fu,) = await pending_of(tl, cid)
        assert fu.kind == "satisfaction_check"
        assert fu.due_at.date() > tl.clock.now().date()
    assert await tl.check_followups() == []

    async with tl.db.transaction() as s:
        member = await campaigns.record_response(
            s, campaign.id, report.control[0], "accepted", 1200, now=tl.clock.now()  # type: ignore[arg-type]
        )
        assert (member.arm, member.response, member.revenue) == ("control", "accepted", 1200.0)
        with pytest.raises(InvalidInput):
            await campaigns.record_response(s, campaign.id, loyal[0], "maybe", None,  # type: ignore[arg-type]
                                            now=tl.clock.now())  # fmt: skip
        with pytest.raises(NotFound):
            await campaigns.record_response(s, campaign.id, 999_999, "declined", None,  # type: ignore[arg-type]
                                            now=tl.clock.now())  # fmt: skip


@pytest.fixture
def http(web_client):  # type: ignore[no-untyped-def]
    return web_client


async def test_campaigns_over_http(http, tl: Tierline, segment: dict):  # type: ignore[no-untyped-def]
    await make_user(tl, "olga", "operator", "cold")
    await make_user(tl, "sam", "supervisor", None)

    csrf = await sign_in(http, "olga")
    resp = await http.get("/api/campaigns")
    assert resp.status == 403
    await http.delete("/api/session", headers={"X-CSRF-Token": csrf})

    csrf = await sign_in(http, "sam")
    h = {"X-CSRF-Token": csrf}
    body = {"name": "Winback", "group_id": segment["group_id"], "entry_state": "new",
            "holdout_share": 0.2, "seed": 5}  # fmt: skip
    resp = await http.post("/api/campaigns", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert (created["status"], created["tier"], created["seed"]) == ("draft", "cold", 5)
    resp = await http.post("/api/campaigns", json=body, headers=h)
    assert resp.status == 409
    bad = {**body, "name": "Other", "entry_state": "nowhere"}
    assert (await http.post("/api/campaigns", json=bad, headers=h)).status == 400

    resp = await http.post(f"/api/campaigns/{created['id']}/launch", headers=h)
    assert resp.status == 200, await resp.text()
    launched = await resp.json()
    assert launched["launch"]["called"] == 8 and launched["launch"]["control"] == 2
    assert launched["launch"]["skipped"]["do_not_call"]["client_ids"] == [segment["flagged"]]
    assert launched["campaign"]["status"] == "launched"
    assert (await http.post(f"/api/campaigns/{created['id']}/launch", headers=h)).status == 409
    assert await tl.check_followups() == []

    async with tl.db.session() as s:
        arms = dict(
            (await s.exec(select(CampaignMember.client_id, CampaignMember.arm))).all()
        )
    called = sorted(c for c, a in arms.items() if a == "called")
    control = sorted(c for c, a in arms.items() if a == "control")

    url = f"/api/campaigns/{created['id']}/responses"
    for cid, answer, revenue in [(called[0], "accepted", 500), (called[1], "declined", None),
                                 (control[0], "declined", None)]:  # fmt: skip
        resp = await http.post(
            url, json={"client_id": cid, "response": answer, "revenue": revenue}, headers=h
        )
        assert resp.status == 200, await resp.text()
    resp = await http.post(url, json={"client_id": called[0], "revenue": -1}, headers=h)
    assert resp.status == 400

    resp = await http.get("/api/campaigns")
    listed = (await resp.json())["campaigns"]
    assert [(c["name"], c["arms"]) for c in listed] == [("Winback", {"called": 8, "control": 2})]

    resp = await http.get(f"/api/campaigns/{created['id']}/report")
    assert resp.status == 200, await resp.text()
    rep = await resp.json()
    cg = rep["control_group"]
    assert cg["called"]["members"] == 8 and cg["called"]["conversions"] == 1
    assert cg["called"]["revenue_per_member"] == pytest.approx(500 / 8)
    assert cg["control"]["conversions"] == 0 and cg["lift"] is None
    assert cg["conversion_diff"]["estimate"] == pytest.approx(1 / 8)
    assert cg["significant"] is False  # one sale in eight proves nothing
    assert [s["tier"] for s in rep["funnel"]["called"]] == ["cold", "sales", "key_account"]
    assert rep["funnel"]["called"][0]["reached"] == 8

    # The called arm's first calls are in the cold operators' queue now.
    await http.delete("/api/session", headers=h)
    await sign_in(http, "olga")
    resp = await http.get("/api/queue")
    assert resp.status == 200
    queued = {item["client"]["id"] for item in (await resp.json())["items"]}
    moscow = set(segment["eligible"][:8])
    assert set(called) & moscow <= queued
    assert not queued & set(control)
