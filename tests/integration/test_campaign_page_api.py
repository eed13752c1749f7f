"""What the segments page needs of the campaigns API beyond the original contract: the
states a campaign may enter, and a campaign's members with their clients' names."""

from __future__ import annotations

from engine.service import Tierline
from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user


async def test_entry_states_are_those_that_schedule_a_call(tl: Tierline, web_client) -> None:  # type: ignore[no-untyped-def]
    await make_user(tl, "olga", "operator", "cold")
    await make_user(tl, "sam", "supervisor", None)
    csrf = await sign_in(web_client, "olga")
    assert (await web_client.get("/api/campaigns/entry-states")).status == 403
    await web_client.delete("/api/session", headers={"X-CSRF-Token": csrf})

    await sign_in(web_client, "sam")
    resp = await web_client.get("/api/campaigns/entry-states")
    assert resp.status == 200, await resp.text()
    states = {s["name"]: s for s in (await resp.json())["states"]}
    # Called states of every tier are offered; automatic and final ones are not.
    assert {"new", "no_answer", "presentation", "upsell", "case_open"} <= set(states)
    assert not {"qualified", "not_interested", "paid", "resolved", "do_not_call"} & set(states)
    assert states["new"]["tier"] == "cold" and states["presentation"]["tier"] == "sales"
    # A mailing follow-up must call back after a delay: "new" calls at once.
    assert states["new"]["mailing"] is False
    assert states["no_answer"]["mailing"] is True


async def test_members_come_with_names_by_arm_and_page(tl: Tierline, web_client) -> None:  # type: ignore[no-untyped-def]
    await make_user(tl, "olga", "operator", "cold")
    await make_user(tl, "sam", "supervisor", None)
    made = [await make_client(tl, f"Member {i}") for i in range(5)]
    csrf = await sign_in(web_client, "sam")
    h = {"X-CSRF-Token": csrf}
    resp = await web_client.post(
        "/api/groups", json={"name": "Five", "client_ids": [c.id for c in made]}, headers=h
    )
    assert resp.status == 201, await resp.text()
    group_id = (await resp.json())["id"]
    body = {"name": "Five calls", "group_id": group_id, "entry_state": "new",
            "holdout_share": 0.4, "seed": 3}  # fmt: skip
    resp = await web_client.post("/api/campaigns", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    cid = (await resp.json())["id"]
    members_url = f"/api/campaigns/{cid}/members"
    assert (await (await web_client.get(members_url)).json())["members"] == []  # a draft
    assert (await web_client.post(f"/api/campaigns/{cid}/launch", headers=h)).status == 200

    resp = await web_client.get(members_url)
    assert resp.status == 200, await resp.text()
    page = await resp.json()
    assert [m["client"]["name"] for m in page["members"]] == [f"Member {i}" for i in range(5)]
    assert page["next_after"] is None
    arms = {m["client_id"]: m["arm"] for m in page["members"]}
    assert sorted(arms.values()).count("control") == 2  # round(5 × 0.4)

    control = (await (await web_client.get(members_url + "?arm=control")).json())["members"]
    assert sorted(m["client_id"] for m in control) == sorted(
        c for c, arm in arms.items() if arm == "control"
    )
    first = await (await web_client.get(members_url + "?limit=2")).json()
    assert len(first["members"]) == 2 and first["next_after"] == made[1].id
    rest = await (await web_client.get(f"{members_url}?limit=2&after_id={made[1].id}")).json()
    assert [m["client_id"] for m in rest["members"]] == [made[2].id, made[3].id]

    # A recorded response shows on the member's row.
    resp = await web_client.post(
        f"/api/campaigns/{cid}/responses",
        json={"client_id": made[0].id, "response": "accepted", "revenue": 250},
        headers=h,
    )
    assert resp.status == 200, await resp.text()
    row = (await (await web_client.get(members_url + "?limit=1")).json())["members"][0]
    assert (row["response"], row["revenue"]) == ("accepted", 250)

    assert (await web_client.get(members_url + "?arm=maybe")).status == 400
    assert (await web_client.get(members_url + "?after_id=x")).status == 400
    assert (await web_client.get("/api/campaigns/999999/members")).status == 404
    await web_client.delete("/api/session", headers=h)
    await sign_in(web_client, "olga")
    assert (await web_client.get(members_url)).status == 403
