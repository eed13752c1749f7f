"""The admin's Import tab in a real Chromium against the real server: upload, progress, errors."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import (
    Server,
    no_script_errors,
    sign_in,
)

pytestmark = pytest.mark.browser

CSV = (
    b"Full name;Phone;Company\n"
    b"Irina Import;+7 916 777-01-01;Acme\n"
    b"Boris Broken;12;Beta\n"
    b"Petr Import;+7 916 777-01-02;Gamma\n"
)


async def test_admin_imports_a_csv_and_sees_progress_and_the_bad_row(
    page: Any, server: Server, admin: str
) -> None:
    await sign_in(page, server, admin)
    await page.wait_for_url("**/admin")
    await page.click("#tab-btn-import")
    await expect(page.locator("#tab-import")).to_be_visible()
    await page.set_input_files(
        "#import-file", files=[{"name": "pilot.csv", "mimeType": "text/csv", "buffer": CSV}]
    )
    await page.fill("input[name=map_name]", "Full name")
    await page.select_option("select[name=on_duplicate]", "report")
    await page.click("#import-start")

    box = page.get_by_test_id("import-progress-box")
    await expect(box).to_have_attribute("data-status", "done")
    await expect(page.get_by_test_id("import-progress")).to_have_js_property("value", 100)
    await expect(page.get_by_test_id("import-percent")).to_have_text("100 %")
    summary = page.get_by_test_id("import-summary")
    await expect(summary).to_contain_text("3 rows")
    await expect(summary).to_contain_text("2 created")
    await expect(summary).to_contain_text("1 refused")
    rows = page.locator("tr.import-error-row")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-row", "3")
    await expect(rows.first.locator("td").nth(1)).to_have_text("Phone")
    no_script_errors(page)

    # The other tabs still work.
    await page.click("#tab-btn-users")
    await expect(page.get_by_test_id("users")).to_be_visible()
    await expect(page.locator("#tab-import")).to_be_hidden()
