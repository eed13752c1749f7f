"""The operator console in a real Chromium against the real server and its real webhook.

Every wait is on something the operator would see (a selector, a text), never a sleep.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import expect

from tests.e2e.conftest import (
    PASSWORD,
    VIEWPORT,
    Server,
    new_call_id,
    no_script_errors,
    open_console,
    screenshot_path,
    sign_in,
)

pytestmark = pytest.mark.browser

MOSCOW = ZoneInfo("Europe/Moscow")


async def test_sign_in_sends_each_role_to_its_page(page: Any, server: Server) -> None:
    await sign_in(page, server, "cold1", "not the password")
    await expect(page.locator("#login-error")).to_contain_text("Wrong username or password")
    assert page.url.endswith("/login")
    await page.screenshot(path=screenshot_path("login.png"))

    await sign_in(page, server, "cold1")
    await page.wait_for_url("**/console")
    header = page.locator("#who")
    await expect(header.get_by_test_id("user-name")).to_have_text("Cold1")
    await expect(header).to_contain_text("operator")
    await expect(header).to_contain_text("cold")
    csrf = await page.get_attribute('meta[name="csrf-token"]', "content")
    assert csrf and len(csrf) > 20

    await page.click("text=Sign out")
    await page.wait_for_url("**/login")
    await page.goto(server.base_url + "/console")
    await page.wait_for_url(re.compile(r"/login\?next=/console$"))

    await sign_in(page, server, "boss")
    await page.wait_for_url("**/supervisor")
    response = await page.goto(server.base_url + "/console")
    assert response is not None and response.status == 403
    await expect(page.get_by_test_id("forbidden")).to_be_visible()
    no_script_errors(page)


async def test_known_caller_pops_card_and_outcome_schedules_next_call(
    page: Any, server: Server
) -> None:
    await open_console(page, server, "cold1")
    await page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    call_id = new_call_id()

    await server.call_event("ringing", call_id, "8 (916) 555-01-01", "201")
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text("Anna Known")
    await expect(card.get_by_test_id("state")).to_have_text("New lead")
    await expect(card.locator("button.phone")).to_have_attribute("data-number", "+79165550101")
    await expect(card.get_by_test_id("script")).to_contain_text("Do you have a minute?")
    await expect(card.locator(".checklist-item")).to_have_count(2)  # contact, diagnosis
    await expect(page.get_by_test_id("call-state")).to_have_text("Ringing")
    # The PBX's E.164 is shown as the card writes that number, not as "+79165550101".
    await expect(page.locator("#call-banner .banner-number")).to_have_text("+7 916 555-01-01")
    await expect(card.get_by_test_id("outcome")).to_be_hidden()
    await page.screenshot(path=screenshot_path("console-pop.png"))

    await server.call_event("answered", call_id, "8 (916) 555-01-01", "201")
    await expect(page.get_by_test_id("call-state")).to_have_text("On the call")
    await expect(card.get_by_test_id("outcome")).to_be_hidden()

    await expect(card.get_by_test_id("calls").locator("li")).to_have_count(0)
    await server.call_event("hangup", call_id, "8 (916) 555-01-01", "201")
    await expect(page.get_by_test_id("call-state")).to_have_text("Call ended")
    outcome = card.get_by_test_id("outcome")
    await expect(outcome).to_be_visible()
    # The call just ended joins the card's last calls, the outcome box untouched.
    await expect(card.get_by_test_id("calls").locator("li")).to_have_count(1)
    await expect(card.get_by_test_id("calls")).to_contain_text("no outcome")
    await expect(outcome.locator("button.outcome-btn").first).to_be_focused()
    for event in ("no_answer", "call_back", "not_interested"):
        await expect(outcome.locator(f'button[data-event="{event}"]')).to_be_visible()

    tomorrow = (datetime.now(MOSCOW) + timedelta(days=1)).replace(hour=12, minute=0)
    await page.fill("#callback-at", tomorrow.strftime("%Y-%m-%dT%H:%M"))
    await page.fill("#outcome-note", "asked to call <b>tomorrow</b> at noon")
    await page.check("#check-contact")
    await outcome.locator('button[data-event="call_back"]').click()

    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("state")).to_have_text("Call back at the agreed time")
    when = f"{tomorrow.day} "
    next_followup = card.get_by_test_id("next-followup")
    await expect(next_followup).to_contain_text("12:00 client time (Europe/Moscow)")
    await expect(next_followup).to_contain_text(when)
    await expect(card.get_by_test_id("recorded")).to_contain_text("Recorded.")
    # The note is shown as text, never as markup.
    await expect(card.get_by_test_id("history")).to_contain_text("<b>tomorrow</b>")
    assert await page.locator("#pop b").count() == 0
    assert await page.evaluate("window.__sameDocument") is True
    await page.screenshot(path=screenshot_path("console.png"))
    no_script_errors(page)


async def test_unknown_caller_becomes_a_lead_from_the_pop(page: Any, server: Server) -> None:
    await open_console(page, server, "cold2")
    call_id = new_call_id()
    await server.call_event("ringing", call_id, "+7 916 555-09-99", "202")

    form = page.get_by_test_id("new-lead")
    await expect(form).to_be_visible()
    await expect(form.locator("#lead-phone")).to_have_value("+7 916 555-09-99")
    await expect(form.locator("#lead-name")).to_be_focused()
    await form.locator("#lead-name").fill("Nina New")
    await form.locator("#lead-company").fill("Newco")
    await page.screenshot(path=screenshot_path("console-new-lead.png"))
    await form.locator("button[type=submit]").click()

    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text("Nina New")
    await expect(card.get_by_test_id("state")).to_have_text("New lead")
    await expect(card.locator("button.phone")).to_have_attribute("data-number", "+79165550999")
    await expect(card.get_by_test_id("next-followup")).to_contain_text("client time")

    # The call was linked to the new client: hanging up offers the outcomes for this card.
    await server.call_event("hangup", call_id, "+7 916 555-09-99", "202")
    await expect(card.get_by_test_id("outcome")).to_be_visible()
    await card.locator('button[data-event="no_answer"]').click()
    await expect(page.get_by_test_id("card").get_by_test_id("state")).to_have_text("No answer yet")
    no_script_errors(page)


async def test_call_back_time_is_the_clients_own_time(page: Any, server: Server) -> None:
    """A client's "call me back at 15:00" from Novosibirsk is 15:00 there, though the operator's
    browser is in Moscow (four hours behind)."""
    await open_console(page, server, "cold3")
    number = "+7 383 555-01-06"  # a Novosibirsk landline: the client's zone is Asia/Novosibirsk
    call_id = new_call_id()
    await server.call_event("ringing", call_id, number, "203")
    form = page.get_by_test_id("new-lead")
    await form.locator("#lead-name").fill("Nikita Far")
    await form.locator("button[type=submit]").click()
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text("Nikita Far")
    await server.call_event("hangup", call_id, number, "203")
    outcome = card.get_by_test_id("outcome")
    await expect(outcome).to_be_visible()
    novosibirsk = ZoneInfo("Asia/Novosibirsk")
    now_there = datetime.now(novosibirsk)
    zone = outcome.get_by_test_id("client-zone")
    await expect(zone).to_contain_text("Asia/Novosibirsk")
    shown = re.search(r"now (\d\d):(\d\d)", await zone.inner_text())
    assert shown is not None
    apart = abs(int(shown[1]) * 60 + int(shown[2]) - (now_there.hour * 60 + now_there.minute))
    assert min(apart, 24 * 60 - apart) <= 2  # the client's clock, not Moscow's (4 h behind)

    tomorrow = (now_there + timedelta(days=1)).replace(hour=15, minute=0)
    await page.fill("#callback-at", tomorrow.strftime("%Y-%m-%dT%H:%M"))
    await outcome.locator('button[data-event="call_back"]').click()
    next_followup = page.get_by_test_id("card").get_by_test_id("next-followup")
    await expect(next_followup).to_contain_text("15:00 client time (Asia/Novosibirsk)")
    await expect(next_followup).to_contain_text(f"{tomorrow.day} ")

    # A zone the browser does not know: the picker takes the operator's own time, and says so.
    client_id = await page.get_by_test_id("card").get_attribute("data-client-id")

    async def unknown_zone(route: Any) -> None:
        response = await route.fetch()
        data = await response.json()
        await route.fulfill(response=response, json={**data, "timezone": "Mars/Olympus_Mons"})

    await page.route(re.compile(r"/api/clients/\d+$"), unknown_zone)
    await page.goto(f"{server.base_url}/console#client={client_id}")
    outcome = page.get_by_test_id("card").get_by_test_id("outcome")
    await expect(outcome.get_by_test_id("client-zone")).to_contain_text(
        "your own time: this browser does not know Mars/Olympus_Mons"
    )
    await page.fill("#callback-at", tomorrow.strftime("%Y-%m-%dT%H:%M"))  # 15:00 in Moscow
    await outcome.locator('button[data-event="call_back"]').click()
    next_followup = page.get_by_test_id("card").get_by_test_id("next-followup")
    await expect(next_followup).to_contain_text("19:00 client time (Asia/Novosibirsk)")

    # The conversion itself, across daylight-saving changes the browser knows of.
    convert = "([local, tz]) => Tierline.zonedToIso(local, tz)"
    for local, tz, utc in (
        ("2026-12-04T15:00", "Asia/Novosibirsk", "2026-12-04T08:00:00.000Z"),
        ("2026-01-15T12:00", "Europe/Berlin", "2026-01-15T11:00:00.000Z"),
        ("2026-07-01T12:00", "Europe/Berlin", "2026-07-01T10:00:00.000Z"),
        ("2026-03-29T03:30", "Europe/Berlin", "2026-03-29T01:30:00.000Z"),  # the day it jumps
        ("2026-03-28T23:30", "Europe/Berlin", "2026-03-28T22:30:00.000Z"),  # the night before
        ("2026-11-01T12:00", "America/New_York", "2026-11-01T17:00:00.000Z"),
    ):
        assert await page.evaluate(convert, [local, tz]) == utc, (local, tz)
    no_script_errors(page)


async def test_several_matches_offer_a_chooser(page: Any, server: Server) -> None:
    await open_console(page, server, "cold3")
    call_id = new_call_id()
    await server.call_event("ringing", call_id, "+7 916 555-01-04", "203")

    chooser = page.get_by_test_id("chooser")
    await expect(chooser).to_contain_text("Tanya Twin")
    await expect(chooser).to_contain_text("Timur Twin")
    await chooser.locator(f'button[data-client-id="{server.clients["twin_b"]}"]').click()
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text("Timur Twin")
    await expect(page.get_by_test_id("call-state")).to_have_text("Ringing")
    no_script_errors(page)


async def test_another_tiers_client_stays_closed(page: Any, server: Server) -> None:
    await open_console(page, server, "cold4")
    sales_id = server.clients["sales"]

    # Opening it the way the page does (the #client= link, then its own fetch) is refused.
    await page.goto(f"{server.base_url}/console#client={sales_id}")
    await expect(page.get_by_test_id("forbidden")).to_contain_text("403")
    await expect(page.locator("#flash")).to_contain_text("403")
    await expect(page.locator("#pop")).not_to_contain_text("Sergei Sales")
    status = await page.evaluate(
        """async (id) => {
            try { await Tierline.api("GET", "/api/clients/" + id); return 200; }
            catch (err) { return err.status; }
        }""",
        sales_id,
    )
    assert status == 403

    # A call from that client pops as "another tier's client", without the card's details.
    await page.wait_for_selector("body[data-ws=open]")
    await server.call_event("ringing", new_call_id(), "+7 916 555-01-05", "204")
    restricted = page.get_by_test_id("restricted")
    await expect(restricted).to_contain_text("another tier's client")
    await expect(page.locator("#pop")).not_to_contain_text("Olga Other")
    no_script_errors(page)


async def test_someone_elses_change_reloads_the_card(page: Any, server: Server) -> None:
    await open_console(page, server, "cold5")
    client_id = server.clients["conflict"]
    await page.goto(f"{server.base_url}/console#client={client_id}")
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("state")).to_have_text("New lead")
    await expect(card.get_by_test_id("outcome")).to_be_visible()

    # A colleague records an outcome for the same client from their own session.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        resp = await other.post(
            server.base_url + "/api/session", json={"username": "cold2", "password": PASSWORD}
        )
        assert resp.status == 200, await resp.text()
        resp = await other.post(
            f"{server.base_url}/api/clients/{client_id}/events", json={"event": "no_answer"}
        )
        assert resp.status == 200, await resp.text()

    await card.locator('button[data-event="not_interested"]').click()
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("conflict")).to_contain_text("Someone else changed")
    await expect(card.get_by_test_id("state")).to_have_text("No answer yet")
    await expect(page.locator("#flash")).to_contain_text("Someone else changed")
    no_script_errors(page)


async def test_a_ring_group_closes_the_pop_of_whoever_did_not_answer(
    page: Any, browser: Any, server: Server
) -> None:
    """cold6 and cold7 ring together; cold6 answers. cold7's pop closes (nothing for cold7 to
    wrap up), unless cold7 had typed into it; a call nobody answered stays, as a missed call."""
    context = await browser.new_context(
        viewport=VIEWPORT, locale="en-GB", timezone_id="Europe/Moscow"
    )
    other = await context.new_page()
    other.errors = []
    other.on("pageerror", lambda exc: other.errors.append(str(exc)))
    try:
        await open_console(page, server, "cold6")
        await open_console(other, server, "cold7")
        anna = "+7 916 555-01-01"

        call_id = new_call_id()
        for ext in ("206", "207"):
            await server.call_event("ringing", call_id, anna, ext)
        for tab in (page, other):
            card = tab.get_by_test_id("card")
            await expect(card.get_by_test_id("client-name")).to_have_text("Anna Known")
        await server.call_event("answered", call_id, anna, "206")
        await server.call_event("hangup", call_id, anna, "207")
        await expect(other.get_by_test_id("answered-elsewhere")).to_have_text(
            "A colleague answered this call."
        )
        await expect(other.get_by_test_id("card")).to_have_count(0)
        await expect(other.locator("#call-banner")).to_be_hidden()
        await expect(page.get_by_test_id("call-state")).to_have_text("On the call")
        await server.call_event("hangup", call_id, anna, "206")
        await expect(page.get_by_test_id("call-state")).to_have_text("Call ended")
        await expect(page.get_by_test_id("card").get_by_test_id("outcome")).to_be_visible()

        # Typed into: the card stays, no longer tied to the call; the operator is told.
        call_id = new_call_id()
        for ext in ("206", "207"):
            await server.call_event("ringing", call_id, anna, ext)
        card = other.get_by_test_id("card")
        await expect(card.get_by_test_id("client-name")).to_have_text("Anna Known")
        await card.get_by_label("Add note").fill("asks about prices")
        await server.call_event("answered", call_id, anna, "206")
        await server.call_event("hangup", call_id, anna, "207")
        await expect(other.locator("#flash")).to_contain_text("A colleague answered this call.")
        await expect(other.locator("#call-banner")).to_be_hidden()
        await expect(card.get_by_label("Add note")).to_have_value("asks about prices")
        await server.call_event("hangup", call_id, anna, "206")

        # Nobody answered: the card stays for a call back, the banner says it was missed.
        call_id = new_call_id()
        await server.call_event("ringing", call_id, anna, "207")
        await server.call_event("hangup", call_id, anna, "207")
        await expect(other.get_by_test_id("call-state")).to_have_text("Missed call")
        await expect(other.get_by_test_id("card").get_by_test_id("calls")).to_contain_text(
            "inbound · missed"
        )
        await expect(other.get_by_test_id("card").get_by_test_id("outcome")).to_be_visible()
        await other.screenshot(path=screenshot_path("console-missed-call.png"))
        no_script_errors(page)
        no_script_errors(other)
    finally:
        await context.close()


async def test_unknown_callers_numbers_read_as_people_write_them(page: Any, server: Server) -> None:
    """The banner, the new lead's phone and the tabs of live calls write an unknown caller's
    number for people, not as the PBX's E.164."""
    await open_console(page, server, "cold8")
    first, second = new_call_id(), new_call_id()
    await server.call_event("ringing", first, "+79165550998", "208")
    banner = page.get_by_test_id("call-banner")
    await expect(banner.locator(".banner-number")).to_have_text("+7 916 555-09-98")
    await expect(page.get_by_test_id("new-lead").locator("#lead-phone")).to_have_value(
        "+7 916 555-09-98"
    )
    await server.call_event("ringing", second, "+442079460958", "208")
    await expect(banner.locator(".banner-number")).to_have_text("+44 20 7946 0958")
    tabs = page.locator("#live-calls .live-call")
    await expect(tabs).to_have_count(2)
    await expect(tabs.nth(0)).to_have_text("+7 916 555-09-98 · Ringing")
    await expect(tabs.nth(1)).to_have_text("+44 20 7946 0958 · Ringing")
    for call_id, number in ((first, "+79165550998"), (second, "+442079460958")):
        await server.call_event("answered", call_id, number, "208")
        await server.call_event("hangup", call_id, number, "208")
    await expect(tabs.nth(0)).to_have_text(re.compile("^[+]7 916 555-09-98 · Call ended"))
    no_script_errors(page)


async def test_back_online_the_console_shows_what_became_of_its_calls(
    page: Any, server: Server
) -> None:
    """The network drops while two calls ring; one is answered by a colleague, the other
    hangs up unanswered. Back online, the console is right without a reload."""
    await open_console(page, server, "cold7")
    anna = "+7 916 555-01-01"
    taken, missed = new_call_id(), new_call_id()
    await server.call_event("ringing", taken, anna, "206")
    await server.call_event("ringing", taken, anna, "207")
    await expect(page.get_by_test_id("call-state")).to_have_text("Ringing")
    await server.call_event("ringing", missed, anna, "207")
    await expect(page.locator("#live-calls .live-call")).to_have_count(2)

    await page.context.set_offline(True)
    await page.evaluate("TierlineConsole.socket().close()")  # as a dropped network does
    await page.wait_for_selector("body[data-ws=closed]")
    await server.call_event("answered", taken, anna, "206")
    await server.call_event("hangup", taken, anna, "207")
    await server.call_event("hangup", missed, anna, "207")
    await server.call_event("hangup", taken, anna, "206")
    await page.context.set_offline(False)
    await page.wait_for_selector("body[data-ws=open]")

    # The call shown was missed; the colleague's is gone from the strip of live calls.
    await expect(page.get_by_test_id("call-state")).to_have_text("Missed call")
    await expect(page.locator("#live-calls .live-call")).to_have_count(0)
    no_script_errors(page)


async def test_console_reconnects_by_itself(page: Any, server: Server) -> None:
    await open_console(page, server, "cold1")
    banner = page.locator("#offline-banner")
    await expect(banner).to_be_hidden()
    await page.evaluate("TierlineConsole.socket().close()")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("reconnecting")
    await page.wait_for_selector("body[data-ws=open]")
    await expect(banner).to_be_hidden()

    # The new socket is live: a pop arrives on it.
    await server.call_event("ringing", new_call_id(), "+7 916 555-01-01", "201")
    await expect(page.get_by_test_id("card").get_by_test_id("client-name")).to_have_text(
        "Anna Known"
    )

    # A reload mid-call loses nothing: the server's hello brings the ringing call back.
    await page.reload()
    await page.wait_for_selector("body[data-ws=open]")
    await expect(page.get_by_test_id("card").get_by_test_id("client-name")).to_have_text(
        "Anna Known"
    )
    await expect(page.get_by_test_id("call-state")).to_have_text("Ringing")
    no_script_errors(page)


async def test_queue_lists_due_calls_and_call_next_dials(page: Any, server: Server) -> None:
    await open_console(page, server, "cold3")
    queue = page.get_by_test_id("queue")
    tanya = queue.locator(f'li[data-client-id="{server.clients["twin_a"]}"]')
    await expect(tanya).to_be_visible()
    await expect(queue).not_to_contain_text("Sergei Sales")  # another tier's pool
    first_name = await queue.locator("li .q-name").first.text_content()

    await page.keyboard.press("n")  # "Call next" from the keyboard
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text(first_name or "")
    banner = page.get_by_test_id("call-banner")
    await expect(banner).to_contain_text("Outgoing call")
    await expect(banner).to_contain_text("Dialling")
    # The number dialled reads as the card writes it, not as the API's E.164.
    written = (await card.locator("button.phone").first.text_content() or "").lstrip("☎ ")
    assert written and not written.startswith("+7916"), written
    await expect(banner.locator(".banner-number")).to_have_text(written)

    # The client does not pick up: "No answer", not an incoming call's "Missed call".
    call_id = await banner.get_attribute("data-call-id")
    assert call_id
    await server.call_event("hangup", call_id, written, "203")
    await expect(page.get_by_test_id("call-state")).to_have_text("No answer")
    await expect(card.get_by_test_id("outcome")).to_be_visible()
    no_script_errors(page)


async def test_call_script_names_the_operator_and_the_client(page: Any, server: Server) -> None:
    await open_console(page, server, "cold2")
    name = "Zoe <i>Scripted</i>"
    created = await page.evaluate(
        """(name) => Tierline.api("POST", "/api/clients",
            {name: name, phones: ["+7 916 555-07-07"]})""",
        name,
    )
    assert created["state"] == "new"

    await server.call_event("ringing", new_call_id(), "+7 916 555-07-07", "202")
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text(name)
    script = card.get_by_test_id("script").locator(".script-text")
    # This server sets no TIERLINE_COMPANY_NAME: {company} is a visible gap, not braces.
    await expect(script).to_contain_text(
        f"Hello, this is Cold2 from …. Is this {name}? Do you have a minute?"
    )
    assert "{" not in (await script.text_content() or "")
    missing = script.locator(".script-missing")
    await expect(missing).to_have_count(1)
    await expect(missing).to_have_attribute("title", "Not set: company")
    assert await page.locator("#pop .script-text i").count() == 0  # the name stays text

    # A configured company fills in; a placeholder nobody knows stays as written.
    filled = await page.evaluate(
        """(text) => {
            const box = Tierline.el("div", null, TierlineConsole.fillScript(text,
                {operator: "Ann", company: "Northwind", client: ""}));
            return [box.textContent, box.querySelectorAll(".script-missing").length];
        }""",
        "{operator} of {company} calls {client} about {product}.",
    )
    assert filled == ["Ann of Northwind calls … about {product}.", 1]
    no_script_errors(page)


async def test_an_open_card_turns_overdue_when_the_call_is_late(page: Any, server: Server) -> None:
    # The browser's clock is Playwright's: real time until the test jumps it forward.
    await page.clock.install()
    await open_console(page, server, "cold4")
    created = await page.evaluate(
        """() => Tierline.api("POST", "/api/clients",
            {name: "Lena Late", phones: ["+7 916 555-08-08"]})"""
    )
    overdue_at = datetime.fromisoformat(created["next_followup"]["overdue_at"])

    await server.call_event("ringing", new_call_id(), "+7 916 555-08-08", "204")
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text("Lena Late")
    next_followup = card.get_by_test_id("next-followup")
    await expect(next_followup).to_contain_text("client time")
    badge = next_followup.locator(".fu-overdue")
    await expect(badge).to_be_hidden()
    await expect(next_followup).not_to_have_class(re.compile("is-overdue"))

    # The card stays open past the moment the queue would call the follow-up overdue.
    late_by = overdue_at - datetime.now(UTC) + timedelta(minutes=1)
    await page.clock.fast_forward(int(late_by.total_seconds() * 1000))
    await expect(badge).to_be_visible()
    await expect(badge).to_have_text("overdue")
    await expect(next_followup).to_have_class(re.compile("is-overdue"))
    # The card shown afresh (the client opened again) is marked at once, not at the next
    # tick of the 15-second timer.
    await page.evaluate("document.getElementById('pop').textContent = ''; location.hash = ''")
    await expect(card).to_have_count(0)
    await page.evaluate(f"location.hash = '#client={created['id']}'")
    await expect(card.get_by_test_id("client-name")).to_have_text("Lena Late")
    await expect(card.get_by_test_id("next-followup").locator(".fu-overdue")).to_be_visible()
    no_script_errors(page)


async def test_missed_calls_wait_in_the_queue_for_a_call_back(page: Any, server: Server) -> None:
    await open_console(page, server, "cold5")
    missed = page.get_by_test_id("missed")

    # An unknown caller nobody answered: listed for a call back, until dismissed.
    stranger = "+7 916 555-06-06"
    call_id = new_call_id()
    await server.call_event("ringing", call_id, stranger, "205")
    await expect(page.get_by_test_id("new-lead")).to_be_visible()
    await server.call_event("hangup", call_id, stranger, "205")
    await expect(page.get_by_test_id("call-state")).to_have_text("Missed call")
    unknown = missed.locator('li[data-number="+79165550606"]')
    await expect(unknown).to_contain_text("Unknown caller")
    await expect(unknown.locator(".q-number")).to_have_text("+7 916 555-06-06")
    # Said as people say it ("yesterday" only if the test ran across midnight).
    await expect(unknown.locator(".q-when")).to_have_text(
        re.compile(r"^missed (today|yesterday) \d\d:\d\d$")
    )
    await expect(unknown.locator(".q-call")).to_have_text("New lead")

    # A client who called twice, nobody answering: one line, "2 missed calls".
    boris = "+7 916 555-01-02"
    for _ in range(2):
        call_id = new_call_id()
        await server.call_event("ringing", call_id, boris, "205")
        await server.call_event("hangup", call_id, boris, "205")
    known = missed.locator('li[data-number="+79165550102"]')
    await expect(known).to_contain_text("Boris Busy")
    await expect(known.locator(".q-when")).to_have_text(
        re.compile(r"^2 missed calls, the last (today|yesterday) \d\d:\d\d$")
    )
    await page.screenshot(path=screenshot_path("console-missed-calls.png"))

    # Still there after a reload: the list is the server's, not the page's.
    await page.reload()
    await page.wait_for_selector("body[data-ws=open]")
    await expect(known).to_be_visible()

    await unknown.get_by_role("button", name="No call back needed").click()
    await expect(unknown).to_have_count(0)

    # "Call back" opens the card and dials the number that called; the line goes.
    await known.get_by_role("button", name="Call back Boris Busy").click()
    card = page.get_by_test_id("card")
    await expect(card.get_by_test_id("client-name")).to_have_text("Boris Busy")
    banner = page.get_by_test_id("call-banner")
    await expect(banner).to_contain_text("Outgoing call")
    await expect(known).to_have_count(0)
    no_script_errors(page)
