"""The segments page over HTTP: who may open it, the staff navigation, its strings."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.service import Tierline
from tests.conftest import sign_in
from tests.integration.helpers import make_user
from web import pages
from web.pages_segments import SEGMENT_STRINGS

STATIC = Path(pages.__file__).parent / "static"
# t("literal") in a script: every such string must travel to the page translated.
T_CALL = re.compile(r'\bt\(\s*"((?:[^"\\]|\\.)*)"')
# T.tn(n, "one", "many", …): both forms travel too.
TN_CALL = re.compile(r'\btn\([^,]+,\s*"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)"')


def _page_data(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert found, "the page carries no page-data"
    return json.loads(found.group(1))


def _nav_links(html: str) -> list[str]:
    nav = re.search(r'<nav class="staff-nav".*?</nav>', html, re.S)
    return re.findall(r'href="([^"]+)"', nav.group(0)) if nav else []


async def test_anonymous_users_are_sent_to_sign_in(web_client) -> None:  # type: ignore[no-untyped-def]
    resp = await web_client.get("/segments", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/login?next=/segments"


async def test_operators_get_the_forbidden_page(tl: Tierline, web_client) -> None:  # type: ignore[no-untyped-def]
    await make_user(tl, "olga", "operator", "cold")
    await sign_in(web_client, "olga")
    resp = await web_client.get("/segments")
    assert resp.status == 403
    html = await resp.text()
    assert 'data-testid="forbidden"' in html
    assert "segments.js" not in html
    assert _nav_links(html) == []  # operators see no staff navigation


async def test_staff_get_the_page_with_its_strings(tl: Tierline, web_client) -> None:  # type: ignore[no-untyped-def]
    await make_user(tl, "sam", "supervisor", None)
    await make_user(tl, "ada", "admin", None)
    for username, links in (
        ("sam", ["/supervisor", "/segments"]),
        ("ada", ["/supervisor", "/segments", "/admin"]),
    ):
        csrf = await sign_in(web_client, username)
        resp = await web_client.get("/segments")
        assert resp.status == 200, username
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
        html = await resp.text()
        for tab in ("filters", "groups", "campaigns", "economics"):
            assert f'id="tab-{tab}"' in html
        assert "/static/segments.js?v=" in html
        assert _nav_links(html) == links
        assert '<a href="/segments" aria-current="page">' in html
        data = _page_data(html)
        assert data["user"]["username"] == username
        missing = [s for s in SEGMENT_STRINGS if s not in data["strings"]]
        assert missing == []
        # The strings of the console's common script travel too (errors, "Offline").
        assert "Something went wrong" in data["strings"]
        await web_client.delete("/api/session", headers={"X-CSRF-Token": csrf})

    # The nav is on the other staff pages too, pointing at this one.
    await sign_in(web_client, "sam")
    html = await (await web_client.get("/supervisor")).text()
    assert _nav_links(html) == ["/supervisor", "/segments"]
    assert '<a href="/supervisor" aria-current="page">' in html


def test_every_string_the_scripts_show_is_in_the_catalogue() -> None:
    scripts = sorted(STATIC.glob("segments*.js"))
    assert len(scripts) >= 5
    texts = [path.read_text(encoding="utf-8") for path in scripts]
    shown = {m for text in texts for m in T_CALL.findall(text)}
    shown |= {form for text in texts for pair in TN_CALL.findall(text) for form in pair}
    assert "Launching…" in shown  # the patterns find what they should
    assert {"Added {n} client to the group.", "{n} clients match"} <= shown
    known = set(SEGMENT_STRINGS) | set(pages.JS_STRINGS)
    assert sorted(shown - known) == []
    assert len(SEGMENT_STRINGS) == len(set(SEGMENT_STRINGS)), "a string is listed twice"
