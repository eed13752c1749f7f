"""The newcomer's path from the README: ``tierline serve --demo``, then a simulated call."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.calendar import in_window
from engine.demo import WOMEN, seed_demo
from engine.queue import due_queue

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERLINE_")}
    env["TIERLINE_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve", "--demo", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the demo server did not answer /healthz: " + (proc.stdout.read() or ""))
    yield url, env, tmp_path
    proc.terminate()
    proc.wait(timeout=20)


def test_demo_department_and_a_simulated_call(demo_server):  # type: ignore[no-untyped-def]
    url, env, data = demo_server
    password = (data / "demo-password.txt").read_text().strip()
    assert len(password) >= 8
    db = sqlite3.connect(data / "tierline.db")
    clients = db.execute("select count(*) from clients").fetchone()[0]
    tiers = {t for (t,) in db.execute("select distinct tier from users where tier is not null")}
    due = db.execute(
        "select count(*) from followups where status='pending' and due_at <= datetime('now')"
    ).fetchone()[0]
    assert clients >= 200 and tiers == {"cold", "sales", "key_account", "support"} and due > 0
    # Names read as people's: a woman's surname takes "a" (Zoya Kuznetsova, Oleg Kuznetsov).
    names = [n.split() for (n,) in db.execute("select name from clients")]
    mismatched = [f for f, last in names if (f in WOMEN) != last.endswith("a")]
    assert mismatched == []
    # The README's simulated caller is a demo client cold1 (extension 101) may see in full.
    number = "+79161234567"
    owners = db.execute(
        "select c.tier from clients c join client_phones p on p.client_id = c.id where p.e164 = ?",
        (number,),
    ).fetchall()
    assert owners == [("cold",)]

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "web.cli",
            "simulate",
            "call",
            "--from",
            number,
            "--to-extension",
            "101",
            "--url",
            url,
            "--answer-after",
            "0",
            "--hangup-after",
            "0",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "simulated call" in done.stdout
    calls = db.execute(
        "select status, extension from calls where pbx_call_id not like 'demo-missed-%'"
    ).fetchall()
    assert calls == [("ended", "101")]
    db.close()

    # The console's call scripts name our company: the demo has one.
    jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    body = json.dumps({"username": "cold1", "password": password}).encode()
    signin = urllib.request.Request(
        url + "/api/session", data=body, headers={"Content-Type": "application/json"}
    )
    assert jar.open(signin, timeout=10).status == 200
    page = jar.open(url + "/console", timeout=10).read().decode()
    assert '"company_name": "Tierline Demo Ltd"' in page
    # Two calls this morning nobody answered wait for cold1 to call back: a client, a stranger.
    queue = json.loads(jar.open(url + "/api/queue", timeout=10).read())
    assert [m["client"] is None for m in queue["missed"]] == [False, True]
    assert queue["missed"][1]["written"] == "+7 903 555-01-99"


@pytest.mark.parametrize(
    ("now", "earliest"),
    [
        # Tuesday 05:00 Moscow, before the day's window: Monday's missed calls.
        (datetime(2026, 11, 24, 2, 0, tzinfo=UTC), datetime(2026, 11, 24, 2, 0, tzinfo=UTC)),
        # Tuesday 09:30, half an hour into it: the morning's and Monday evening's.
        (datetime(2026, 11, 24, 6, 30, tzinfo=UTC), datetime(2026, 11, 24, 6, 0, tzinfo=UTC)),
    ],
)
async def test_demo_overdue_calls_were_due_inside_the_calling_window(  # type: ignore[no-untyped-def]
    tl, clock, now: datetime, earliest: datetime
) -> None:
    """The demo's overdue calls are up to five hours of calling time late, where the planner
    would have put them: inside the window, back across the night. None "due" at 03:00, and
    at 09:30 not only the last half hour's (the supervisor's overdue list stays busy). The
    window is the client's own: a London client's call is late since London's afternoon."""
    clock.set(now)
    await seed_demo(tl, "demo-password", spread={"new": 200, "presentation": 20})
    async with tl.db.session() as s:  # the supervisor's list: every call due, as it shows them
        items = await due_queue(s, now=clock.now(), default_tz=tl.settings.timezone, limit=500)
    # "Tue 24 Nov 10:00 client time (Europe/London)": the zone the operator reads it in.
    zones = [re.fullmatch(r".* client time \((.+)\)", item.when)[1] for item in items]  # type: ignore[index]
    dues = [item.due_at for item in items]
    assert len(dues) >= 10  # a third of the calls are due already
    assert len(set(zones)) > 1  # foreign clients among them
    wrong = [
        item.when
        for item, zone in zip(items, zones, strict=True)
        if not in_window(item.due_at, zone, tl.policy)
    ]
    assert not wrong
    assert any(due < earliest for due in dues)  # some from the day before
