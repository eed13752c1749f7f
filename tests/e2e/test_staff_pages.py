"""The supervisor dashboard and the admin pages in a real Chromium against the real server.

The operators' side is played through the public API and the signed PBX webhook, exactly as
a console and a PBX would; every wait is on something the supervisor or admin would see.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from engine.workflow import default_definition_text
from tests.e2e.conftest import (
    PASSWORD,
    USERS,
    Server,
    new_call_id,
    no_script_errors,
    screenshot_path,
    sign_in,
)

pytestmark = pytest.mark.browser

OPERATORS = tuple(name for name, role, *_ in USERS if role == "operator")
# Far above anything a test can reach, so the operator is behind at any hour of the day
# (the e2e calling window is the whole day; only in its first second is nothing expected).
HUGE_NORM = 1_000_000
LIVE_WAIT = 15_000  # the dashboard polls live status every 5 s
SVG_DATA_URL = re.compile(r"^data:image/svg\+xml;charset=utf-8,%3Csvg")


@asynccontextmanager
async def api_as(server: Server, username: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A signed-in API session (cookie jar) for one user, as an integrator's client."""
    async with aiohttp.ClientSession(
        base_url=server.base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:
        resp = await http.post("/api/session", json={"username": username, "password": PASSWORD})
        assert resp.status == 200, await resp.text()
        yield http


def _row(page: Any, username: str) -> Any:
    return page.locator("tr.op-row").filter(has=page.get_by_text(username.title(), exact=True))


async def _refresh_figures(page: Any) -> None:
    # As a supervisor would: pick another slice, then back to "now".
    options = await page.locator("#slice option").evaluate_all("(os) => os.map(o => o.value)")
    await page.select_option("#slice", options[0])
    await page.select_option("#slice", "now")


async def test_supervisor_sees_figures_move_and_who_is_behind(page: Any, server: Server) -> None:
    await sign_in(page, server, "boss")
    await page.wait_for_url("**/supervisor")
    rows = page.locator("tr.op-row")
    await expect(rows).to_have_count(len(OPERATORS))
    for username in OPERATORS:
        row = _row(page, username)
        for figure in ("calls", "long_calls", "presentations", "invoices", "payments"):
            await expect(row.get_by_test_id(f"fig-{figure}")).to_have_text("0")
        await expect(row.get_by_test_id("op-status")).to_contain_text("Idle")
    # The configured slices (11:00, 14:00, 17:00 by default) and "now" are offered.
    options = await page.locator("#slice option").evaluate_all("(os) => os.map(o => o.value)")
    assert options[-1] == "now" and len(options) >= 4, options

    # Norms edited in place; a bad value is refused with the server's message.
    sales = _row(page, "sales1")
    await sales.get_by_test_id("edit-norms").click()
    form = page.get_by_test_id("norms-form")
    await form.get_by_test_id("norm-invoices").fill(str(HUGE_NORM))
    await form.get_by_test_id("norm-calls").fill("5")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#flash")).to_contain_text("Norms saved.")
    await expect(form).to_have_count(0)
    invoices = sales.locator('td[data-figure="invoices"]')
    await expect(invoices).to_have_attribute("data-behind", "true")
    await expect(invoices).to_contain_text("behind")
    await expect(sales.get_by_test_id("behind-flag")).to_be_visible()
    await expect(_row(page, "cold1").get_by_test_id("behind-flag")).to_have_count(0)

    # The norms persist: a reload shows them in the editor again.
    await page.reload()
    sales = _row(page, "sales1")
    await sales.get_by_test_id("edit-norms").click()
    form = page.get_by_test_id("norms-form")
    await expect(form.get_by_test_id("norm-invoices")).to_have_value(str(HUGE_NORM))
    await expect(form.get_by_test_id("norm-calls")).to_have_value("5")
    await form.get_by_text("Cancel").click()

    # The sales operator takes a call (the supervisor sees it live), then sends an invoice.
    call_id = new_call_id()
    phone = "+7 916 555-01-03"
    await server.call_event("ringing", call_id, phone, "301")
    await expect(sales.get_by_test_id("op-status")).to_contain_text("Ringing", timeout=LIVE_WAIT)
    await server.call_event("answered", call_id, phone, "301")
    await expect(sales.get_by_test_id("op-status")).to_contain_text("On a call", timeout=LIVE_WAIT)
    await server.call_event("hangup", call_id, phone, "301")
    await expect(sales.get_by_test_id("op-status")).to_contain_text("Wrap-up", timeout=LIVE_WAIT)
    async with api_as(server, "sales1") as http:
        resp = await http.post(
            f"/api/clients/{server.clients['sales']}/events",
            json={"event": "send_invoice", "call_id": call_id},
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["applied"]["kpi"] == "invoice"

    await _refresh_figures(page)
    await expect(sales.get_by_test_id("fig-invoices")).to_have_text("1")
    await expect(sales.get_by_test_id("fig-calls")).to_have_text("1")
    await expect(sales.locator('td[data-figure="invoices"]')).to_have_attribute(
        "data-behind", "true"
    )  # one invoice is still far behind a norm of a million
    await expect(sales.get_by_test_id("op-status")).to_contain_text("Idle")  # outcome recorded
    await expect(_row(page, "cold1").get_by_test_id("fig-invoices")).to_have_text("0")
    await page.screenshot(path=screenshot_path("supervisor.png"))

    # The names behind the attention list: for staff only.
    ids = f"{server.clients['sales']},{server.clients['known']}"
    async with api_as(server, "boss") as http:
        names = await (await http.get(f"/api/supervisor/client-names?ids={ids}")).json()
        assert names["names"][str(server.clients["sales"])] == "Sergei Sales"
    async with api_as(server, "cold1") as http:
        assert (await http.get(f"/api/supervisor/client-names?ids={ids}")).status == 403
    no_script_errors(page)


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} is not in the definition")


async def test_admin_edits_the_workflow_and_maps_clients_of_a_renamed_state(
    page: Any, server: Server, admin: str
) -> None:
    # A client in call_back_later, with the follow-up the operator agreed.
    client_id = server.clients["known"]
    agreed = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    async with api_as(server, "cold1") as http:
        resp = await http.post(
            f"/api/clients/{client_id}/events",
            json={"event": "call_back", "follow_up_at": agreed.isoformat()},
        )
        assert resp.status == 200, await resp.text()
        before = (await resp.json())["client"]
    assert before["state"] == "call_back_later"
    assert before["next_followup"] is not None

    await sign_in(page, server, admin)
    await page.wait_for_url("**/admin")
    source = page.get_by_test_id("wf-source")
    await expect(page.get_by_test_id("wf-status")).to_contain_text("Unchanged since version 1")
    original = await source.input_value()
    assert original == default_definition_text()

    # An error: a transition to a state that does not exist, shown at its line.
    bad_line = _line_of(original, "{event: hand_to_sales, from: qualified, to: presentation}")
    broken = original.replace(
        "{event: hand_to_sales, from: qualified, to: presentation}",
        "{event: hand_to_sales, from: qualified, to: presentashun}",
    )
    await source.fill(broken)
    problem = page.get_by_test_id("problems").locator(f'li.problem[data-line="{bad_line}"]')
    await expect(problem).to_contain_text("presentashun")
    await expect(problem).to_contain_text(f"Line {bad_line}")
    await expect(page.locator(f'#gutter .has-problem[data-line="{bad_line}"]')).to_be_visible()
    await expect(page.get_by_test_id("wf-status")).to_contain_text("Problems")
    await problem.locator("button").click()
    await expect(page.locator("#editor")).to_have_attribute("data-marked-line", str(bad_line))
    await expect(page.locator("#line-mark")).to_be_visible()
    cursor_line = await source.evaluate(
        "(a) => a.value.slice(0, a.selectionStart).split('\\n').length"
    )
    assert cursor_line == bad_line
    assert await source.evaluate("(a) => document.activeElement === a")

    # Fixed, and call_back_later renamed everywhere: the editor asks where its client goes.
    renamed = original.replace("call_back_later", "callback_scheduled")
    await source.fill(renamed)
    await expect(page.get_by_test_id("problems")).to_contain_text("No problems.")
    mapping = page.get_by_test_id("mapping")
    await expect(mapping).to_be_visible()
    await expect(mapping).to_contain_text("Move 1 client from call_back_later to")
    await expect(page.get_by_test_id("diff")).to_contain_text("+  callback_scheduled:")
    diagram = page.get_by_test_id("diagram")
    await expect(diagram).to_have_attribute("src", SVG_DATA_URL)
    assert await diagram.evaluate("(img) => img.complete && img.naturalWidth > 0")

    await page.get_by_test_id("publish").click()  # not yet: the mapping is incomplete
    await expect(page.get_by_test_id("publish-result")).to_contain_text(
        "Choose a state for every removed state."
    )
    await page.get_by_test_id("map-call_back_later").select_option("callback_scheduled")
    await page.get_by_test_id("dry-run").click()
    result = page.get_by_test_id("publish-result")
    await expect(result).to_contain_text("Dry run: 1 client: call_back_later -> callback_scheduled")
    await expect(page.get_by_test_id("move-count-call_back_later")).to_contain_text("1 client")
    await page.screenshot(path=screenshot_path("admin.png"))

    await page.fill("#publish-note", "call_back_later is now callback_scheduled")
    await page.get_by_test_id("publish").click()
    await expect(result).to_contain_text("Published version 2.")
    versions = page.get_by_test_id("versions")
    await expect(versions.locator('tr[data-version="2"]')).to_contain_text("current")
    await expect(versions.locator('tr[data-version="2"]')).to_contain_text("callback_scheduled")
    await expect(page.get_by_test_id("wf-status")).to_contain_text("Unchanged since version 2")
    await expect(mapping).to_be_hidden()

    # The client moved with its follow-up: same due time, the new state's rule.
    async with api_as(server, admin) as http:
        resp = await http.get(f"/api/clients/{client_id}")
        assert resp.status == 200, await resp.text()
        after = await resp.json()
        assert after["state"] == "callback_scheduled"
        assert after["next_followup"] is not None
        assert after["next_followup"]["due_at"] == before["next_followup"]["due_at"]
        assert after["next_followup"]["kind"] == "call_back"
        svg = await http.get("/api/workflows/diagram.svg?version=2")
        assert svg.status == 200 and svg.content_type == "image/svg+xml"
        assert svg.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert 'data-state="callback_scheduled"' in await svg.text()
        assert (await http.get("/api/workflows/diagram.svg?version=9")).status == 404

    # History: version 1 can be viewed, read only, with its own diagram.
    await page.get_by_test_id("view-version-1").click()
    await expect(page.locator("#wf-viewing")).to_contain_text("Viewing version 1")
    assert "call_back_later:" in await source.input_value()
    assert await source.evaluate("(a) => a.readOnly")
    await expect(diagram).to_have_attribute("src", "/api/workflows/diagram.svg?version=1")
    await page.locator("#wf-back").click()
    await expect(source).to_have_value(renamed)
    no_script_errors(page)


async def test_admin_manages_users_and_settings(page: Any, server: Server, admin: str) -> None:
    await sign_in(page, server, admin)
    await page.wait_for_url("**/admin")
    await page.click("#tab-btn-users")
    users = page.get_by_test_id("users")
    await expect(users.locator('tr[data-username="sales1"]')).to_be_visible()

    form = page.get_by_test_id("user-form")
    await form.locator("input[name=username]").fill("cold9")
    await form.locator("input[name=display_name]").fill("Cold <Nine>")
    await form.locator("input[name=password]").fill(PASSWORD)
    await form.locator("select[name=role]").select_option("operator")
    await form.locator("select[name=tier]").select_option("cold")
    await form.locator("input[name=extension]").fill("209")
    await form.locator("button[type=submit]").click()
    row = users.locator('tr[data-username="cold9"]')
    await expect(row).to_contain_text("Cold <Nine>")  # shown as text, not markup
    await expect(row.locator("input.ext-input")).to_have_value("209")
    await expect(row.get_by_test_id("active")).to_contain_text("active")

    # A taken extension is refused with the server's message.
    await form.locator("input[name=username]").fill("cold10")
    await form.locator("input[name=password]").fill(PASSWORD)
    await form.locator("select[name=tier]").select_option("cold")
    await form.locator("input[name=extension]").fill("209")
    await form.locator("button[type=submit]").click()
    await expect(page.get_by_test_id("user-form-error")).to_contain_text("already taken")

    async with api_as(server, "cold9") as http:  # the new operator can sign in
        me = await (await http.get("/api/me")).json()
        assert me["user"]["tier"] == "cold" and me["user"]["extension"] == "209"

    await row.get_by_test_id("toggle-active").click()
    await expect(row.get_by_test_id("active")).to_contain_text("inactive")
    async with aiohttp.ClientSession(base_url=server.base_url) as http:
        resp = await http.post("/api/session", json={"username": "cold9", "password": PASSWORD})
        assert resp.status == 401

    # Settings: the PBX secret is saved, and only ever shown back masked.
    await page.click("#tab-btn-settings")
    settings = page.get_by_test_id("settings-form")
    await expect(settings.locator("input[name=slice_times]")).to_have_value("11:00, 14:00, 17:00")
    await settings.locator("input[name=ami_secret]").fill("s3cret-never-shown")
    await settings.locator("input[name=slice_times]").fill("10:00, 13:00, 16:00, 19:00")
    await settings.locator("button[type=submit]").click()
    await expect(page.locator("#flash")).to_contain_text("Settings saved.")
    await page.reload()
    await expect(settings.locator("input[name=slice_times]")).to_have_value(
        "10:00, 13:00, 16:00, 19:00"
    )
    await expect(settings.locator("input[name=ami_secret]")).to_have_value("********")
    assert "s3cret-never-shown" not in await page.content()
    no_script_errors(page)


async def test_dashboard_times_are_24_hour_in_a_12_hour_locale(
    browser: Any, server: Server
) -> None:
    """As on every other screen, and as the server writes "15:00 client time": an en-US
    browser would otherwise say "05:04 AM" in one corner and "17:04" in the next."""
    context = await browser.new_context(locale="en-US", timezone_id="America/New_York")
    try:
        page = await context.new_page()
        await sign_in(page, server, "boss")
        await page.wait_for_url("**/supervisor")
        await expect(page.locator("#figures-updated")).to_have_text(
            re.compile(r"^Updated \d\d:\d\d$")
        )
    finally:
        await context.close()


async def test_supervisor_sees_missed_calls_until_they_are_returned(
    page: Any, server: Server
) -> None:
    await sign_in(page, server, "boss")
    await page.wait_for_url("**/supervisor")
    stranger = "+7 916 555-04-04"
    # Rang the reception's phone (299: nobody signs in on it, so no operator's status changes
    # for the other tests) twice, nobody answered.
    for _ in range(2):
        call_id = new_call_id()
        await server.call_event("ringing", call_id, stranger, "299")
        await server.call_event("hangup", call_id, stranger, "299")
    line = page.get_by_test_id("missed").locator('li[data-number="+79165550404"]')
    await expect(line).to_contain_text("+7 916 555-04-04", timeout=LIVE_WAIT)
    await expect(line).to_contain_text("Unknown caller")
    await expect(line.locator(".att-due")).to_have_text(
        re.compile(r"^2 missed calls since (today|yesterday) \d\d:\d\d$")
    )

    # The caller's next call is answered: returned, off the list.
    call_id = new_call_id()
    await server.call_event("ringing", call_id, stranger, "299")
    await server.call_event("answered", call_id, stranger, "299")
    await server.call_event("hangup", call_id, stranger, "299")
    await expect(line).to_have_count(0, timeout=LIVE_WAIT)
    no_script_errors(page)
