"""The admin's Import tab in a real Chromium against the real server: upload, progress, errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import (
    PASSWORD,
    PBX_SECRET,
    REPO,
    Server,
    _free_port,
    _seed,
    _server_env,
    _wait_healthy,
    sign_in,
)

pytestmark = pytest.mark.browser

CSV = (
    b"Full name;Phone;Company\n"
    b"Irina Import;+7 916 777-01-01;Acme\n"
    b"Boris Broken;12;Beta\n"
    b"Petr Import;+7 916 777-01-02;Gamma\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("e2e-import")
    clients = asyncio.run(_seed(data_dir))
    env = _server_env(data_dir)
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", "user", "add", "admin1", "--role", "admin",
         "--password-stdin"],
        cwd=REPO, env=env, input=PASSWORD.encode(), capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    port = _free_port()
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, proc, log_path)
        yield Server(base_url, PBX_SECRET, log_path, clients)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_admin_imports_a_csv_and_sees_progress_and_the_bad_row(
    page: Any, server: Server
) -> None:
    await sign_in(page, server, "admin1")
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
    assert page.errors == [], f"the page raised: {page.errors}"

    # The other tabs still work.
    await page.click("#tab-btn-users")
    await expect(page.get_by_test_id("users")).to_be_visible()
    await expect(page.locator("#tab-import")).to_be_hidden()
