"""Campaigns: launch with a held-out control arm, responses, the report; both backends."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from engine import calendar, campaigns, filters, groups
from engine.campaign_launch import LaunchReport, launch, split_holdout
from engine.campaigns import NewCampaign
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import (
    AuditEntry,
    Campaign,
    CampaignMember,
    Client,
    FollowUp,
    FollowUpStatus,
    TransitionRecord,
    User,
)
from engine.queue import due_queue
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
            s,
            group.id,
            [*eligible, flagged, final, selling],
            now=tl.clock.now(),  # type: ignore[arg-type]
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
        campaign, report = await launch(s, tl.runtime, campaign.id, tz="Europe/Moscow")  # type: ignore[arg-type]

    assert len(report.control) == 3 and len(report.called) == 7
    assert sorted(report.called + report.control) == sorted(segment["eligible"])
    assert report.skipped == {
        "do_not_call": [segment["flagged"]],
        "final_state": [segment["final"]],
        "other_tier": [segment["selling"]],
    }
    # The draw is the seed's, not luck: the same seed splits the same ids the same way.
    assert split_holdout(segment["eligible"], 0.3, 42) == (report.called, report.control)
    assert split_holdout(segment["eligible"], 0.3, 43) != (report.called, report.control)

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
        arms = dict((await s.exec(select(CampaignMember.client_id, CampaignMember.arm))).all())
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
            await launch(s, tl.runtime, campaign.id)  # type: ignore[arg-type]


async def test_filter_campaign_mailing_follow_up_and_responses(tl: Tierline):
    loyal = [(await make_client(tl, f"Loyal {i}", state="loyalty")).id for i in range(4)]
    await make_client(tl, "Cold one", state="not_interested")
    async with tl.db.transaction() as s:
        row = await filters.create_filter(
            s,
            "Loyal",
            {"field": "state", "op": "eq", "value": "loyalty"},
            owner_id=None,
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
        campaign, report = await launch(s, tl.runtime, campaign.id, tz="Europe/Moscow")  # type: ignore[arg-type]
    assert sorted(report.called + report.control) == loyal and len(report.control) == 2
    for cid in report.called:  # called back the next business day, after the mailing landed
        (fu,) = await pending_of(tl, cid)
        assert fu.kind == "satisfaction_check"
        assert fu.due_at.date() > tl.clock.now().date()
    assert await tl.check_followups() == []

    async with tl.db.transaction() as s:
        member = await campaigns.record_response(
            s,
            campaign.id,
            report.control[0],
            "accepted",
            1200,
            now=tl.clock.now(),  # type: ignore[arg-type]
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
        arms = dict((await s.exec(select(CampaignMember.client_id, CampaignMember.arm))).all())
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


# ---- the tier's operators (issue #5: "a campaign takes ... the tier's operators") --------


async def deactivate(tl: Tierline, user: User) -> None:
    async with tl.db.transaction() as s:
        await s.exec(update(User).where(col(User.id) == user.id).values(active=False))  # type: ignore[call-overload]


async def queue_ids(tl: Tierline, operator: User) -> set[int]:
    async with tl.db.session() as s:
        items = await due_queue(
            s, now=tl.clock.now(), default_tz="Europe/Moscow", operator=operator
        )
    return {item.client["id"] for item in items}  # type: ignore[misc]


async def cold_group(
    tl: Tierline, name: str, n: int, owner: User | None = None
) -> tuple[int, list[int]]:
    """``n`` cold clients who declined earlier (eligible for a "new" campaign), in a group."""
    ids = [
        (await make_client(tl, f"{name} {i}", state="not_interested", owner=owner)).id
        for i in range(n)
    ]
    async with tl.db.transaction() as s:
        group, _ = await groups.create_group(s, name, now=tl.clock.now())
        await groups.add_members(s, group.id, ids, now=tl.clock.now())  # type: ignore[arg-type]
    return group.id, ids  # type: ignore[return-value]


async def create(tl: Tierline, new: NewCampaign) -> Campaign:
    async with tl.db.transaction() as s:
        return await campaigns.create_campaign(s, tl.runtime, new, now=tl.clock.now())


async def launch_now(tl: Tierline, campaign_id: int) -> LaunchReport:
    async with tl.db.transaction() as s:
        _, report = await launch(s, tl.runtime, campaign_id, tz="Europe/Moscow")
    return report


@pytest.fixture
async def crew(tl: Tierline) -> dict[str, User]:
    """Four cold operators (one of them since deactivated), a sales operator, a supervisor."""
    crew = {
        "anna": await make_user(tl, "anna", "operator", "cold"),
        "boris": await make_user(tl, "boris", "operator", "cold"),
        "clara": await make_user(tl, "clara", "operator", "cold"),
        "dmitri": await make_user(tl, "dmitri", "operator", "cold"),
        "gone": await make_user(tl, "gone", "operator", "cold"),
        "sveta": await make_user(tl, "sveta", "operator", "sales"),
        "sam": await make_user(tl, "sam", "supervisor", None),
    }
    await deactivate(tl, crew["gone"])
    return crew


async def test_operators_are_checked_when_the_campaign_is_made(tl: Tierline, crew: dict):
    group_id, _ = await cold_group(tl, "Checked", 2)
    anna, boris = crew["anna"].id, crew["boris"].id
    refusals = [
        ([anna, 999_999], "operator 999999 does not exist", 999_999),
        ([crew["sveta"].id], f"operator {crew['sveta'].id} works tier 'sales', not the entry "
                             "state's tier 'cold'", crew["sveta"].id),
        ([boris, crew["gone"].id], f"operator {crew['gone'].id} is deactivated", crew["gone"].id),
        ([crew["sam"].id], f"operator {crew['sam'].id} is a supervisor, not an operator",
         crew["sam"].id),
        ([anna, "7"], "is not a whole number", None),
        ([True], "is not a whole number", None),
    ]  # fmt: skip
    for ids, message, bad in refusals:
        with pytest.raises(InvalidInput, match=re.escape(message)) as caught:
            await create(tl, NewCampaign("Refused", "new", group_id=group_id, operator_ids=ids))
        assert caught.value.details["field"] == "operator_ids"
        if bad is not None:
            assert caught.value.details["operator_id"] == bad
    with pytest.raises(InvalidInput, match="must be a list"):
        await create(tl, NewCampaign("Refused", "new", group_id=group_id, operator_ids=5))  # type: ignore[arg-type]
    # The same operator is refused for a sales entry state: the tier is the entry state's.
    with pytest.raises(InvalidInput, match="works tier 'cold'"):
        await create(tl, NewCampaign("Refused", "presentation", group_id=group_id,
                                     operator_ids=[anna]))  # fmt: skip
    async with tl.db.session() as s:
        assert list(await s.exec(select(Campaign.id))) == []  # nothing was made

    made = await create(
        tl, NewCampaign("Chosen", "new", group_id=group_id, operator_ids=[boris, anna, boris])
    )
    async with tl.db.session() as s:
        stored = await s.get(Campaign, made.id)
    assert stored is not None and stored.operator_ids == [anna, boris]  # sorted, once each
    assert campaigns.campaign_json(stored)["operator_ids"] == [anna, boris]


async def test_launch_deals_clients_round_robin_and_first_calls_reach_their_queues(
    tl: Tierline, crew: dict
):
    anna, boris, clara, dmitri = (crew[k] for k in ("anna", "boris", "clara", "dmitri"))
    group_id, ids = await cold_group(tl, "Dealt", 6)
    kept, orphan = ids[1], ids[3]
    await set_fields(tl, kept, owner_id=clara.id)  # clara works this client: she keeps it
    await set_fields(tl, orphan, owner_id=crew["gone"].id)  # a deactivated owner does not
    campaign = await create(
        tl, NewCampaign("Dealt", "new", group_id=group_id, operator_ids=[boris.id, anna.id])
    )
    report = await launch_now(tl, campaign.id)  # type: ignore[arg-type]

    assert report.called == ids and report.control == []
    # Sorted operators (anna before boris), clients in id order, the kept one skipped over.
    expected = {ids[0]: anna.id, kept: clara.id, ids[2]: boris.id, orphan: anna.id,
                ids[4]: boris.id, ids[5]: anna.id}  # fmt: skip
    for cid, owner in expected.items():
        assert (await client_row(tl, cid)).owner_id == owner
        (fu,) = await pending_of(tl, cid)
        # "new" is a pool state ("owner: tier"); the campaign's first call is the owner's.
        assert (fu.state, fu.owner_id, fu.auto_event) == ("new", owner, None)
    launched = report.to_json()
    assert launched["assigned"] == {str(anna.id): 3, str(boris.id): 2}
    assert (launched["kept_owner"], launched["unavailable_operators"]) == (1, [])

    assert await queue_ids(tl, anna) >= {ids[0], orphan, ids[5]}
    assert not await queue_ids(tl, anna) & {kept, ids[2], ids[4]}
    assert await queue_ids(tl, boris) & set(ids) == {ids[2], ids[4]}
    assert await queue_ids(tl, clara) & set(ids) == {kept}
    assert await queue_ids(tl, dmitri) & set(ids) == set()  # not the campaign's: not his calls
    assert await tl.check_followups() == []

    async with tl.db.session() as s:
        (audit,) = list(
            await s.exec(select(AuditEntry).where(AuditEntry.action == "campaign.launch"))
        )
    assert audit.target == f"campaign:{campaign.id}"
    assert audit.detail["assigned"] == {str(anna.id): 3, str(boris.id): 2}
    assert (audit.detail["called"], audit.detail["kept_owner"]) == (6, 1)


async def test_control_clients_keep_their_owner_and_their_follow_up(tl: Tierline, crew: dict):
    gone, anna = crew["gone"], crew["anna"]
    group_id, ids = await cold_group(tl, "Held", 6, owner=gone)
    before = {cid: [f.id for f in await pending_of(tl, cid)] for cid in ids}
    campaign = await create(
        tl, NewCampaign("Held", "new", group_id=group_id, operator_ids=[anna.id],
                        holdout_share=0.5, seed=11),
    )  # fmt: skip
    report = await launch_now(tl, campaign.id)  # type: ignore[arg-type]
    assert len(report.control) == 3 and len(report.called) == 3
    for cid in report.control:
        row = await client_row(tl, cid)
        assert (row.state, row.owner_id) == ("not_interested", gone.id)
        assert [f.id for f in await pending_of(tl, cid)] == before[cid]
    for cid in report.called:
        assert (await client_row(tl, cid)).owner_id == anna.id
    assert report.to_json()["assigned"] == {str(anna.id): 3}
    assert not await queue_ids(tl, anna) & set(report.control)


async def test_no_operators_keeps_the_tier_pool(tl: Tierline, crew: dict):
    anna, boris = crew["anna"], crew["boris"]
    group_id, ids = await cold_group(tl, "Pool", 3)
    await set_fields(tl, ids[0], owner_id=crew["gone"].id)
    campaign = await create(tl, NewCampaign("Pool", "new", group_id=group_id))
    assert campaign.operator_ids == []
    report = await launch_now(tl, campaign.id)  # type: ignore[arg-type]
    assert report.called == ids
    assert [(await client_row(tl, cid)).owner_id for cid in ids] == [crew["gone"].id, None, None]
    for cid in ids:
        (fu,) = await pending_of(tl, cid)
        assert fu.owner_id is None  # the state's rule: the tier's pool
    assert report.to_json()["assigned"] == {} and report.to_json()["kept_owner"] == 0
    assert await queue_ids(tl, anna) >= set(ids)
    assert await queue_ids(tl, boris) >= set(ids)


async def test_operators_gone_by_the_launch(tl: Tierline, crew: dict):
    anna, boris, clara = crew["anna"], crew["boris"], crew["clara"]
    group_id, ids = await cold_group(tl, "Later", 3)
    shared = await create(
        tl, NewCampaign("Shared", "new", group_id=group_id, operator_ids=[anna.id, boris.id])
    )
    alone = await create(
        tl, NewCampaign("Alone", "new", group_id=group_id, operator_ids=[clara.id])
    )
    await deactivate(tl, boris)
    await deactivate(tl, clara)
    before = {cid: [f.id for f in await pending_of(tl, cid)] for cid in ids}

    # Nobody the supervisor chose is left: refused, and nothing at all was written.
    with pytest.raises(Conflict, match="none of the campaign's operators"):
        await launch_now(tl, alone.id)  # type: ignore[arg-type]
    async with tl.db.session() as s:
        assert (await s.get(Campaign, alone.id)).status == "draft"  # type: ignore[union-attr]
        assert list(await s.exec(select(CampaignMember.id))) == []
    for cid in ids:
        assert (await client_row(tl, cid)).owner_id is None
        assert [f.id for f in await pending_of(tl, cid)] == before[cid]

    # One of two left: the clients go to her, and the report names who was left out.
    report = await launch_now(tl, shared.id)  # type: ignore[arg-type]
    launched = report.to_json()
    assert launched["assigned"] == {str(anna.id): 3}
    assert launched["unavailable_operators"] == [boris.id]
    assert {(await client_row(tl, cid)).owner_id for cid in ids} == {anna.id}


async def test_operators_over_http(http, tl: Tierline, crew: dict):  # type: ignore[no-untyped-def]
    group_id, ids = await cold_group(tl, "Web", 4)
    csrf = await sign_in(http, "sam")
    h = {"X-CSRF-Token": csrf}
    body = {"name": "Web", "group_id": group_id, "entry_state": "new", "holdout_share": 0}
    for bad, needle in (
        ([crew["sveta"].id], "works tier 'sales'"),
        ([999_999], "does not exist"),
        ([2**40], "does not exist"),  # beyond the id column's range: still a 400
        ("all", "must be a list"),
        ([1.5], "not a whole number"),
    ):
        resp = await http.post("/api/campaigns", json={**body, "operator_ids": bad}, headers=h)
        assert resp.status == 400, await resp.text()
        error = await resp.json()
        assert error["field"] == "operator_ids" and needle in error["message"]

    chosen = [crew["boris"].id, crew["anna"].id]
    resp = await http.post("/api/campaigns", json={**body, "operator_ids": chosen}, headers=h)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["operator_ids"] == sorted(chosen)
    listed = (await (await http.get("/api/campaigns")).json())["campaigns"]
    assert [c["operator_ids"] for c in listed] == [sorted(chosen)]
    resp = await http.get(f"/api/campaigns/{created['id']}")
    assert resp.status == 200
    assert (await resp.json())["operator_ids"] == sorted(chosen)
    assert (await http.get("/api/campaigns/999999")).status == 404

    resp = await http.post(f"/api/campaigns/{created['id']}/launch", headers=h)
    assert resp.status == 200, await resp.text()
    launched = (await resp.json())["launch"]
    assert launched["assigned"] == {str(crew["anna"].id): 2, str(crew["boris"].id): 2}
    detail = await (await http.get(f"/api/campaigns/{created['id']}")).json()
    assert detail["arms"] == {"called": 4, "control": 0}
    report = await (await http.get(f"/api/campaigns/{created['id']}/report")).json()
    assert report["campaign"]["operator_ids"] == sorted(chosen)

    # Anna's console queue holds her two, not Boris's.
    await http.delete("/api/session", headers=h)
    await sign_in(http, "anna")
    queued = {i["client"]["id"] for i in (await (await http.get("/api/queue")).json())["items"]}
    assert queued & set(ids) == {ids[0], ids[2]}
    assert (await http.get(f"/api/campaigns/{created['id']}")).status == 403  # staff only
