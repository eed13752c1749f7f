"""End-to-end harness: the real server in a subprocess, driven by a real headless Chromium.

The server is ``python -m web.cli serve`` on a free port with its own data directory; its
users and a few clients are written with the engine API into the same SQLite file before it
starts. Simulated calls reach it through the real, signed webhook (``cti_adapter.simulate``).
Playwright runs on its async API inside pytest-asyncio's loop: no sync API, no nested loops.

Under CI=true a missing Chromium fails the run; elsewhere the browser tests skip, saying why.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cti_adapter.simulate import post_events

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"
PBX_SECRET = "e2e-pbx-secret-0123456789"
SESSION_SECRET = "e2e-session-secret-0123456789abcdef"
VIEWPORT = {"width": 1366, "height": 768}
BOOT_TIMEOUT_S = 60.0
# Every hour of every day is a calling hour: the tests must not depend on the clock.
CALLING_WINDOW = "00:00-23:59"
WORKDAYS = "mon-sun"

# (username, role, tier, extension): one operator per test keeps screen pops apart.
USERS = [
    ("cold1", "operator", "cold", "201"),
    ("cold2", "operator", "cold", "202"),
    ("cold3", "operator", "cold", "203"),
    ("cold4", "operator", "cold", "204"),
    ("cold5", "operator", "cold", "205"),
    ("cold6", "operator", "cold", "206"),  # cold6 and cold7: a ring group
    ("cold7", "operator", "cold", "207"),
    ("cold8", "operator", "cold", "208"),
    ("sales1", "operator", "sales", "301"),
    ("boss", "supervisor", None, None),
]
# (key, name, phone, state): clients that exist before the server starts.
CLIENTS = [
    ("known", "Anna Known", "+7 916 555-01-01", None),
    ("conflict", "Boris Busy", "+7 916 555-01-02", None),
    ("sales", "Sergei Sales", "+7 916 555-01-03", "presentation"),
    ("twin_a", "Tanya Twin", "+7 916 555-01-04", None),
    ("twin_b", "Timur Twin", "+7 916 555-01-04", None),
    ("other_tier_caller", "Olga Other", "+7 916 555-01-05", "presentation"),
]


@dataclass
class Server:
    base_url: str
    pbx_secret: str
    log_path: Path
    clients: dict[str, int] = field(default_factory=dict)

    async def call_event(
        self, kind: str, call_id: str, from_number: str, extension: str
    ) -> dict[str, Any]:
        """Send one signed PBX event, as a PBX would, through the real webhook."""
        event = {
            "event": kind,
            "call_id": call_id,
            "direction": "inbound",
            "from": from_number,
            "to": "7000",
            "extension": extension,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        return await post_events(self.base_url, self.pbx_secret, [event])

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def new_call_id() -> str:
    return f"e2e.{uuid.uuid4().hex[:12]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(data_dir: Path) -> dict[str, str]:
    # Nothing from the developer's own TIERLINE_* settings may leak into the server under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERLINE_")}
    env.update(
        TIERLINE_DATA_DIR=str(data_dir),
        TIERLINE_DATABASE_URL=_database_url(data_dir),
        TIERLINE_PBX_SECRET=PBX_SECRET,
        TIERLINE_SESSION_SECRET=SESSION_SECRET,
        TIERLINE_DEFAULT_REGION="RU",
        TIERLINE_CALLING_WINDOW=CALLING_WINDOW,
        TIERLINE_WORKDAYS=WORKDAYS,
        TIERLINE_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def _database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'tierline.db'}"


async def _seed(data_dir: Path) -> dict[str, int]:
    """Users and clients written with the engine API before the server opens the file."""
    from engine.clients import NewClient
    from engine.definitions import current_version
    from engine.service import Tierline
    from engine.settings import Settings
    from engine.users import NewUser, create_user

    settings = Settings(
        data_dir=data_dir,
        database_url=_database_url(data_dir),
        pbx_secret=PBX_SECRET,
        session_secret=SESSION_SECRET,
        default_region="RU",
        calling_window=CALLING_WINDOW,
        workdays=WORKDAYS,
    )
    tl = Tierline.build(settings)
    await tl.start(timers=False)
    try:
        async with tl.db.transaction() as session:
            tiers = tl.cache.remember(await current_version(session)).tiers
            for username, role, tier, extension in USERS:
                await create_user(
                    session,
                    NewUser(username, PASSWORD, role, tier, extension, username.title()),
                    tiers=tiers,
                    now=tl.clock.now(),
                )
        ids: dict[str, int] = {}
        for key, name, phone, state in CLIENTS:
            client = await tl.add_client(
                NewClient(name=name, phones=[phone], email=f"{key}@example.com"), state=state
            )
            ids[key] = client.id  # type: ignore[assignment]
        return ids
    finally:
        await tl.stop()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the server exited with {proc.returncode} before it was healthy:\n"
                + log_path.read_text(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)  # still booting: not listening yet
            continue
        time.sleep(0.1)  # polling a booting process: a tiny socket wait
    pytest.fail(
        f"the server was not healthy within {BOOT_TIMEOUT_S} s:\n"
        + log_path.read_text(errors="replace")[-4000:]
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("e2e-server")
    clients = asyncio.run(_seed(data_dir))
    port = _free_port()
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=_server_env(data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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


@pytest.fixture(scope="module")
def admin(server: Server) -> str:
    """An admin account, added the way an integrator would: the command line, same database."""
    data_dir = server.log_path.parent
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", "user", "add", "admin1", "--role", "admin",
         "--password-stdin"],
        cwd=REPO, env=_server_env(data_dir), input=PASSWORD.encode(), capture_output=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return "admin1"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"Chromium is not installed at {CHROMIUM} (Debian package 'chromium')"
        if IN_CI:
            pytest.fail(reason + " (CI=true: a missing browser is a failure)")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser profile at 1366×768; console errors are collected on ``page.errors``."""
    context = await browser.new_context(
        viewport=VIEWPORT, locale="en-GB", timezone_id="Europe/Moscow"
    )
    context.set_default_timeout(10_000)
    # Assertions wait as long as actions: CI shares two cores with the server under test.
    # (A 3-row import once stayed "running" past any wait: a race in the status endpoint,
    # fixed there — tests/integration/test_import_api.py — not by waiting longer.)
    from playwright.async_api import expect

    expect.set_options(timeout=10_000)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.errors = errors  # type: ignore[attr-defined]
    try:
        yield tab
    finally:
        await context.close()


async def sign_in(page: Any, server: Server, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login page, as a person would."""
    await page.goto(server.base_url + "/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#sign-in")


async def open_console(page: Any, server: Server, username: str) -> None:
    """Sign in as an operator and wait until the console's live channel is open."""
    await sign_in(page, server, username)
    await page.wait_for_url("**/console")
    await page.wait_for_selector("body[data-ws=open]")


def no_script_errors(page: Any) -> None:
    """The page raised nothing and logged no console error (``page`` collects them)."""
    assert page.errors == [], f"the page raised: {page.errors}"


def screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
