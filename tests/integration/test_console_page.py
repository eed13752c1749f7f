"""Call-script placeholders on the server side: the console page carries our company name
from the settings, and the workflow editor refuses a placeholder the console cannot fill."""

from __future__ import annotations

import json
import re

import pytest

from engine.service import Tierline
from engine.settings import Settings
from engine.workflow import default_definition_text
from tests.conftest import sign_in
from tests.integration.helpers import make_user

COMPANY = 'Northwind "Phones" <Ltd>'


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"company_name": COMPANY})


def _page_data(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert found, "the page carries no page-data"
    return json.loads(found.group(1))


async def test_console_page_data_names_our_company(tl: Tierline, web_client) -> None:  # type: ignore[no-untyped-def]
    await make_user(tl, "olga", "operator", "cold")
    await sign_in(web_client, "olga")
    resp = await web_client.get("/console")
    assert resp.status == 200
    html = await resp.text()
    data = _page_data(html)
    assert data["company_name"] == COMPANY
    assert data["user"]["display_name"] == "Olga"
    assert "Not set: {name}" in data["strings"]
    assert "<Ltd>" not in html  # escaped inside the JSON, never markup


async def test_editor_refuses_an_unknown_placeholder_at_its_line(tl: Tierline, web_client) -> None:  # type: ignore[no-untyped-def]
    await make_user(tl, "ada", "admin", None)
    await sign_in(web_client, "ada")
    source = default_definition_text().replace("from {company}.", "from {compnay}.")
    line = next(i for i, text in enumerate(source.splitlines(), 1) if "{compnay}" in text)

    body = await (await web_client.post("/api/workflows/validate", json={"source": source})).json()
    assert body["ok"] is False
    assert [p["line"] for p in body["problems"]] == [line]
    assert "unknown placeholder {compnay}" in body["problems"][0]["message"]

    resp = await web_client.post("/api/workflows/publish", json={"source": source})
    assert resp.status == 400
    versions = await (await web_client.get("/api/workflows/versions")).json()
    assert [v["version"] for v in versions["versions"]] == [1]
