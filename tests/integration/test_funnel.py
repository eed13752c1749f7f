"""The conversion funnel read from real transitions, department-wide and per campaign."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import campaign_launch, campaigns, groups
from engine.campaigns import NewCampaign
from engine.funnel import build_funnel, campaign_funnel, department_funnel, percentile
from engine.runtime import EventRequest
from engine.service import Tierline
from tests.integration.helpers import make_client

DAY = timedelta(days=1)
TO_SALES = ["offer_accepted", "hand_to_sales"]
TO_KEY = ["send_invoice", "payment_received", "hand_to_key_accounts"]


async def walk(tl: Tierline, client_id: int, events: list[str]) -> None:
    for event in events:
        await tl.apply(EventRequest(client_id, event))


async def advance(tl: Tierline, delta: timedelta) -> None:
    await tl.clock.advance(delta)  # type: ignore[attr-defined]


def by_tier(stages):  # type: ignore[no-untyped-def]
    return {s.tier: (s.reached, s.median_days, s.p90_days) for s in stages}


async def test_department_funnel_counts_and_times(tl: Tierline):
    a = (await make_client(tl, "A")).id
    b = (await make_client(tl, "B")).id
    c = (await make_client(tl, "C")).id  # stays cold
    start = tl.clock.now()
    await advance(tl, 2 * DAY)
    await walk(tl, a, TO_SALES)  # a: sales after 2 days
    await advance(tl, 2 * DAY)
    await walk(tl, b, TO_SALES)  # b: sales after 4 days
    await advance(tl, DAY)
    await walk(tl, a, TO_KEY)  # a: key accounts after 5 days
    await walk(tl, c, ["no_answer"])  # a move inside cold is not a stage

    async with tl.db.session() as s:
        stages = await department_funnel(s)
        assert by_tier(stages) == {
            "cold": (3, 0.0, 0.0),
            "sales": (2, 3.0, pytest.approx(3.8)),
            "key_account": (1, 5.0, 5.0),
        }
        assert [s.share for s in stages] == [1.0, pytest.approx(2 / 3), pytest.approx(1 / 3)]
        # Only the cohort that entered cold in the window: nobody started after day 1.
        later = await department_funnel(s, since=start + DAY)
        assert by_tier(later)["cold"][0] == 0 and by_tier(later)["sales"][0] == 0


async def test_campaign_funnel_per_arm(tl: Tierline):
    ids = [(await make_client(tl, f"L{i}", state="not_interested")).id for i in range(4)]
    async with tl.db.transaction() as s:
        group, _ = await groups.create_group(s, "G", now=tl.clock.now())
        await groups.add_members(s, group.id, ids, now=tl.clock.now())  # type: ignore[arg-type]
        campaign = await campaigns.create_campaign(
            s, tl.runtime, NewCampaign("C", "new", group_id=group.id, holdout_share=0.5, seed=1),
            now=tl.clock.now(),
        )  # fmt: skip
        campaign, report = await campaign_launch.launch(s, tl.runtime, campaign.id)  # type: ignore[arg-type]
    await advance(tl, 3 * DAY)
    await walk(tl, report.called[0], TO_SALES)
    async with tl.db.session() as s:
        arms = await campaign_funnel(s, campaign)
    assert by_tier(arms["called"]) == {
        "cold": (2, 0.0, 0.0), "sales": (1, 3.0, 3.0), "key_account": (0, None, None),
    }  # fmt: skip
    assert by_tier(arms["control"])["sales"] == (0, None, None)
    assert by_tier(arms["control"])["cold"][0] == 2


def test_pure_parts():
    assert percentile([], 0.5) is None
    assert percentile([1.0], 0.9) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)
    assert build_funnel({}, [], ("cold", "sales"))[1].share is None
