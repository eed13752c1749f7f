"""The segments page in a real Chromium against the real server: filters, groups,
campaigns and economics, as a supervisor works them.

Clients added behind the page's back go in through the public API, as an integrator's
client would. Every wait is on something the user would see.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.e2e.conftest import (
    PASSWORD,
    REPO,
    USERS,
    Server,
    new_call_id,
    no_script_errors,
    sign_in,
)

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO / "docs" / "screenshots"
OPERATORS = tuple(name for name, role, *_ in USERS if role == "operator")
SEEDED_COLD = ("Anna Known", "Boris Busy", "Tanya Twin", "Timur Twin")


def doc_screenshot(tab: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"segments-{tab}.png"


@asynccontextmanager
async def api_as(server: Server, username: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=server.base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:
        resp = await http.post("/api/session", json={"username": username, "password": PASSWORD})
        assert resp.status == 200, await resp.text()
        yield http


async def open_segments(page: Any, server: Server, username: str) -> None:
    await sign_in(page, server, username)
    await page.wait_for_url("**/supervisor" if username == "boss" else "**/admin")
    await page.get_by_test_id("staff-nav").get_by_role("link", name="Segments").click()
    await page.wait_for_url("**/segments")
    await page.wait_for_selector("body[data-ready=true]")


def condition(page: Any, n: int) -> Any:
    return page.get_by_test_id("criteria").get_by_test_id("condition").nth(n)


async def test_supervisor_works_a_segment_to_a_campaign(page: Any, server: Server) -> None:
    await open_segments(page, server, "boss")
    nav = page.get_by_test_id("staff-nav")
    await expect(nav.get_by_role("link")).to_have_count(2)  # no administration for supervisors
    count = page.get_by_test_id("preview-count")
    await expect(count).to_have_text(f"{len(server.clients)} clients match")  # no condition yet
    # The first preview may come before the workflow's titles: it gets them all the same.
    await expect(page.locator("#preview-body .client-state").first).to_have_text("New lead")

    # A condition built with typed controls; the count follows before anything is saved.
    await page.get_by_test_id("add-condition").click()
    row = condition(page, 0)
    await expect(row.get_by_test_id("cond-field")).to_have_value("tier")
    await expect(count).to_contain_text("Complete the highlighted conditions")
    await expect(row).to_have_class("cond-row is-incomplete")
    await row.get_by_test_id("cond-value").select_option("cold")
    await expect(count).to_have_text("4 clients match")
    preview = page.locator("#preview-body tr.client-row")
    await expect(preview).to_have_count(4)
    await expect(page.locator("#preview-body .client-name")).to_have_text(list(SEEDED_COLD))
    # States by their titles, as the console names them; the workflow's name on hover.
    states = page.locator("#preview-body .client-state")
    await expect(states).to_have_text(["New lead"] * len(SEEDED_COLD))
    await expect(states.first).to_have_attribute("title", "new")
    await page.get_by_test_id("filter-name").fill("Cold base")
    await page.get_by_test_id("filter-save").click()
    await expect(page.locator("#flash")).to_contain_text("Filter saved.")
    saved = page.get_by_test_id("filter-list").get_by_text("Cold base", exact=True)
    await expect(saved).to_be_visible()

    # A lead added afterwards joins the filter: it is dynamic.
    async with api_as(server, "boss") as http:
        resp = await http.post(
            "/api/clients", json={"name": "Nina Newcomer", "phones": ["+7 916 555-09-09"]}
        )
        assert resp.status == 201, await resp.text()
        nina = (await resp.json())["id"]
    await page.get_by_test_id("filter-new").click()
    await expect(count).to_have_text(f"{len(server.clients) + 1} clients match")
    await saved.click()
    await expect(page.get_by_test_id("filter-name")).to_have_value("Cold base")
    await expect(condition(page, 0).get_by_test_id("cond-value")).to_have_value("cold")
    await expect(count).to_have_text("5 clients match")
    await expect(page.locator(f'#preview-body tr[data-client-id="{nina}"]')).to_contain_text(
        "Nina Newcomer"
    )
    await page.screenshot(path=doc_screenshot("filters"))

    # One click: a group of the filter's current result.
    await page.get_by_test_id("filter-to-group").click()
    await expect(page.locator("#tab-groups")).to_be_visible()
    size = page.get_by_test_id("group-size")
    await expect(size).to_have_text("5 members")
    members = page.locator("#members-body tr.client-row")
    await expect(members).to_have_count(5)

    # Two members removed with their checkboxes, in one click.
    for client in ("known", "conflict"):
        box = f'#members-body input[data-client-id="{server.clients[client]}"]'
        await page.locator(box).check()
    remove = page.get_by_test_id("members-remove")
    await expect(remove).to_have_text("Remove selected (2)")
    await remove.click()
    await expect(size).to_have_text("3 members")
    await expect(members).to_have_count(3)
    await expect(page.locator("#members-body")).not_to_contain_text("Anna Known")
    await expect(page.locator("#members-body")).not_to_contain_text("Boris Busy")
    await expect(page.locator("#flash")).to_contain_text("Removed 2 clients from the group.")

    # "Select all on this page", then nothing selected: the button says so.
    await page.get_by_test_id("members-all").check()
    await expect(remove).to_have_text("Remove selected (3)")
    await page.get_by_test_id("members-all").uncheck()
    await expect(remove).to_be_disabled()

    # Clients added by hand from a search, in one click.
    await page.get_by_test_id("picker-q").fill("Sergei")
    await page.get_by_test_id("picker-search").click()
    picked = page.locator(f'#picker-body input[data-client-id="{server.clients["sales"]}"]')
    await picked.check()
    await page.get_by_test_id("picker-add").click()
    await expect(size).to_have_text("4 members")
    await expect(page.locator("#flash")).to_contain_text("Added 1 client to the group.")
    await expect(page.locator("#members-body")).to_contain_text("Sergei Sales")
    group_item = page.get_by_test_id("group-list").locator("li.is-active")
    await expect(group_item.get_by_test_id("group-item-size")).to_have_text("4")
    await page.screenshot(path=doc_screenshot("groups"))

    # A campaign over the filter with a fifth held back; the launch says what it did.
    await page.click("#tab-btn-campaigns")
    form = page.get_by_test_id("campaign-form")
    await form.get_by_test_id("campaign-name").fill("Spring calls")
    await form.get_by_test_id("campaign-segment").select_option(label="Cold base")
    await form.get_by_test_id("campaign-entry").select_option("new")
    # The cold tier's active operators, all ticked: the sales operator is not offered.
    boxes = form.get_by_test_id("campaign-operator")
    cold = [u for u in OPERATORS if u.startswith("cold")]
    await expect(boxes).to_have_count(len(cold))
    for username in cold:
        await expect(form.locator(f'[data-username="{username}"]')).to_be_checked()
    await form.get_by_test_id("campaign-share").fill("20")
    # Nobody ticked is refused before it reaches the server; then two operators are chosen.
    for username in cold:
        await form.locator(f'[data-username="{username}"]').uncheck()
    await form.get_by_test_id("campaign-create").click()
    error = form.get_by_test_id("campaign-error")
    await expect(error).to_have_text("Tick at least one operator to take the calls.")
    await form.locator('[data-username="cold1"]').check()
    await form.locator('[data-username="cold3"]').check()
    await form.get_by_test_id("campaign-create").click()
    detail = page.get_by_test_id("campaign-detail")
    await expect(detail.locator("#campaign-title")).to_have_text("Spring calls")
    await expect(error).to_be_hidden()
    await expect(detail.get_by_test_id("campaign-operator-names")).to_have_text(
        "Operators: Cold1, Cold3."
    )
    # The form is ready for the next campaign: no state chosen, then every box ticked again.
    await expect(form.get_by_test_id("campaign-operators")).to_have_text(
        "Choose an entry state to see who will call."
    )
    await expect(boxes).to_have_count(0)
    await form.get_by_test_id("campaign-entry").select_option("no_answer")
    for username in cold:
        await expect(form.locator(f'[data-username="{username}"]')).to_be_checked()
    row = page.locator("tr.campaign-row").filter(has_text="Spring calls")
    await expect(row.get_by_test_id("campaign-status")).to_have_text("draft")

    # The launch is held on its way to the server: the page shows it is working.
    release = asyncio.Event()

    async def hold(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await page.route("**/api/campaigns/*/launch", hold)
    launch = page.get_by_test_id("campaign-launch")
    await launch.click()
    await expect(launch).to_be_disabled()
    await expect(launch).to_have_text("Launching…")
    release.set()
    result = page.get_by_test_id("launch-result")
    await expect(result).to_contain_text(
        "Launched: 4 clients put into the workflow, 1 held back as the control group."
    )
    await expect(result).to_contain_text("Nobody was skipped.")
    # Four called clients dealt out between the two ticked operators.
    await expect(result).to_contain_text("Assigned: Cold1: 2, Cold3: 2.")
    async with api_as(server, "boss") as http:
        users = (await (await http.get("/api/users")).json())["users"]
    by_name = {u["username"]: u["id"] for u in users}
    async with api_as(server, "cold3") as http:
        resp = await http.get("/api/queue")
        assert resp.status == 200, await resp.text()
        owners = [item["owner_id"] for item in (await resp.json())["items"]]
    # Cold3's queue: her two first calls and the tier's pool (the control client), none of
    # Cold1's.
    assert owners.count(by_name["cold3"]) == 2
    assert set(owners) <= {by_name["cold3"], None}
    await expect(launch).to_be_hidden()
    await expect(row.get_by_test_id("campaign-status")).to_have_text("launched")

    # The report: both groups, and what the calls added with its interval, in words.
    arms = page.get_by_test_id("report-arms")
    await expect(arms.locator('tr[data-arm="called"] [data-testid=arm-members]')).to_have_text("4")
    await expect(arms.locator('tr[data-arm="control"] [data-testid=arm-members]')).to_have_text("1")
    sentence = page.get_by_test_id("report-conversion")
    await expect(sentence).to_contain_text("Calls added 0.0 percentage points of conversion")
    await expect(sentence).to_contain_text("(95 % CI")
    await expect(sentence).to_contain_text("no effect is proven yet")

    # A called client's answer recorded from the members table moves the report.
    called = page.locator('#campaign-members-body tr.member-row[data-arm="called"]').first
    await called.get_by_test_id("member-response").select_option("accepted")
    await called.get_by_test_id("member-revenue").fill("1200")
    await called.get_by_test_id("member-save").click()
    await expect(page.locator("#flash")).to_contain_text("Response recorded.")
    called_conversions = arms.locator('tr[data-arm="called"] [data-testid=arm-conversions]')
    await expect(called_conversions).to_have_text("1")
    await expect(sentence).to_contain_text("Calls added +25.0 percentage points")
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=doc_screenshot("campaigns"))

    # Economics: a row per operator, the average, and hourly costs that stay saved.
    call_id = new_call_id()
    for kind in ("ringing", "answered", "hangup"):  # cold1 takes a call through the PBX
        await server.call_event(kind, call_id, "+7 916 555-01-02", "201")
    await page.click("#tab-btn-economics")
    await page.get_by_test_id("eco-range").get_by_role("button", name="Show").click()
    rows = page.locator("#eco-body tr.eco-row")
    await expect(rows).to_have_count(len(OPERATORS))
    for username in OPERATORS:
        await expect(page.locator(f'#eco-body tr[data-username="{username}"]')).to_have_count(1)
    cold1 = page.locator('#eco-body tr[data-username="cold1"]')
    await expect(cold1.locator('[data-figure="calls"]')).to_have_text("1")
    await expect(
        page.locator('#eco-body tr[data-username="cold2"] [data-figure="calls"]')
    ).to_have_text("0")
    await expect(page.locator("#eco-foot tr.eco-total [data-figure=calls]")).to_have_text("1")
    await expect(page.locator("#eco-foot tr.eco-average")).to_contain_text("Average")
    await page.get_by_test_id("eco-default").fill("600")
    await cold1.get_by_test_id("eco-cost").fill("900")
    await page.get_by_test_id("eco-save").click()
    await expect(page.locator("#flash")).to_contain_text("Costs saved.")
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]")
    await expect(page.locator("#tab-economics")).to_be_visible()  # the tab is in the URL
    await expect(page.get_by_test_id("eco-default")).to_have_value("600")
    await expect(cold1.get_by_test_id("eco-cost")).to_have_value("900")
    csv = await page.get_by_test_id("eco-csv").get_attribute("href")
    assert csv.startswith("/api/economics.csv?from=")
    async with api_as(server, "boss") as http:
        resp = await http.get(csv)
        assert resp.status == 200 and resp.content_type == "text/csv"
        lines = (await resp.text()).splitlines()
        assert lines[0].startswith("from,to,username,operator,calls")
        assert sum(1 for line in lines if ",cold1," in line) == 1
    await page.screenshot(path=doc_screenshot("economics"))
    no_script_errors(page)


async def test_filter_errors_show_by_the_form_and_stale_counts_are_dropped(
    page: Any, server: Server, admin: str
) -> None:
    await open_segments(page, server, admin)
    await expect(page.get_by_test_id("staff-nav").get_by_role("link")).to_have_count(3)
    count = page.get_by_test_id("preview-count")
    await expect(count).to_contain_text("clients match")

    # The API's refusal is shown next to the form, at the condition it names.
    await page.get_by_test_id("add-condition").click()
    row = condition(page, 0)
    await row.get_by_test_id("cond-field").select_option("custom")
    await row.get_by_test_id("cond-key").fill("size/kind")
    await row.get_by_test_id("cond-value").fill("big")
    error = page.get_by_test_id("filter-error")
    await expect(error).to_contain_text("is not a custom field name")
    await expect(row).to_have_class("cond-row has-error")
    await row.get_by_test_id("cond-key").fill("size")
    await expect(count).to_have_text("0 clients match")
    await expect(error).to_be_hidden()
    await expect(row).to_have_class("cond-row")

    # Saving without a name: the server's message, no crash.
    await page.get_by_test_id("filter-save").click()
    await expect(error).to_contain_text("a name of 1 to 128 characters is required")

    # A slow answer to an older edit must not overwrite the count of the newer one.
    held: list[Any] = []
    first_held = asyncio.Event()
    release = asyncio.Event()

    async def hold_first(route: Any) -> None:
        if not held and "Twin" in (route.request.post_data or ""):
            held.append(route)
            first_held.set()
            await release.wait()
        await route.continue_()

    await page.route("**/api/filters/preview", hold_first)
    await row.get_by_test_id("cond-field").select_option("name")
    await row.get_by_test_id("cond-op").select_option("contains")
    await row.get_by_test_id("cond-value").fill("Twin")  # matches two clients
    await first_held.wait()
    await row.get_by_test_id("cond-value").fill("Tanya")  # matches one
    await expect(count).to_have_text("1 client matches")
    dropped = int(await count.get_attribute("data-dropped") or 0)
    release.set()
    await expect(count).to_have_attribute("data-dropped", str(dropped + 1))
    await expect(count).to_have_text("1 client matches")  # the late answer changed nothing
    await expect(page.locator("#preview-body .client-name")).to_have_text(["Tanya Twin"])
    await page.unroute("**/api/filters/preview")

    # Any of two conditions, from the "any" combinator.
    await page.get_by_test_id("cond-kind").select_option("any")
    await page.get_by_test_id("add-condition").click()
    second = condition(page, 1)
    await second.get_by_test_id("cond-field").select_option("name")
    await second.get_by_test_id("cond-op").select_option("contains")
    await second.get_by_test_id("cond-value").fill("Timur")
    await expect(count).to_have_text("2 clients match")
    no_script_errors(page)


ROUND_TRIPS = [
    {"all": []},
    {
        "any": [
            {"field": "tier", "op": "eq", "value": "cold"},
            {
                "all": [
                    {"field": "days_since_contact", "op": "gte", "value": 30},
                    {"field": "custom.size", "op": "gt", "value": 100},
                ]
            },
        ]
    },
    {
        "not": {
            "any": [
                {"field": "state", "op": "in", "value": ["new", "no_answer"]},
                {"field": "timezone", "op": "is_null", "value": True},
            ]
        }
    },
    {
        "all": [
            {"field": "created_at", "op": "gte", "value": "2026-01-01"},
            {"field": "custom.kind", "op": "in", "value": ["a", "b"]},
            {"field": "days_since_contact", "op": "in", "value": [1, 2]},
            {"field": "company", "op": "contains", "value": "Acme"},
        ]
    },
]


async def test_saved_criteria_load_into_the_editor_and_back_unchanged(
    page: Any, server: Server
) -> None:
    await open_segments(page, server, "boss")
    script = """(criteria) => {
        const C = window.TierlineCriteria;
        return C.serialize(C.load(criteria)).criteria;
    }"""
    for criteria in ROUND_TRIPS:
        assert await page.evaluate(script, criteria) == criteria
    # Shapes the editor writes differently mean the same: not(x) is "none of [x]".
    leaf = {"field": "tier", "op": "eq", "value": "cold"}
    assert await page.evaluate(script, {"not": leaf}) == {"not": {"any": [leaf]}}
    assert await page.evaluate(script, leaf) == {"all": [leaf]}
    # An API error's node path finds the editor's node, also inside "none of"; a path
    # below a node the editor does not have marks the nearest one it does.
    found = await page.evaluate(
        """(criteria) => {
            const C = window.TierlineCriteria;
            const s = C.serialize(C.load(criteria));
            return [C.nodeForPath(s.paths, "$.not.any[1]") === s.paths["$.not.any[1]"],
                    C.nodeForPath(s.paths, "$.not.any") === s.paths["$"],
                    C.nodeForPath(s.paths, "$.all[7]") === s.paths["$"],
                    C.nodeForPath(s.paths, "")];
        }""",
        ROUND_TRIPS[2],
    )
    assert found == [True, True, True, None]


async def test_operators_get_the_forbidden_page(page: Any, server: Server) -> None:
    await sign_in(page, server, "cold1")
    await page.wait_for_url("**/console")
    await expect(page.get_by_test_id("staff-nav")).to_have_count(0)
    response = await page.goto(server.base_url + "/segments")
    assert response is not None and response.status == 403
    await expect(page.get_by_test_id("forbidden")).to_contain_text("not for your role")
