"""The ``tierline`` command as an integrator scripts it: a real subprocess, real databases.

Runs ``python -m web.cli`` (what the ``tierline`` entry point calls) with TIERLINE_*
environment variables pointing into the test's temporary directory or database.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import select

from engine.definitions import list_versions
from engine.models import Call, FollowUp, FollowUpStatus, User
from engine.runtime import EventRequest
from engine.storage.database import Database
from engine.users import authenticate
from engine.workflow import default_definition_text
from tests.conftest import PG_ADMIN_URL
from tests.integration.helpers import make_client, make_user

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "telemarketing.yaml"

# A call from a known number to extension 101, as a newcomer would simulate one.
SIMULATE_CALL = ("simulate", "call", "--from", "+79161234567", "--to-extension", "101")


@dataclass
class Result:
    code: int
    out: str
    err: str


async def tierline(*args: str, env: dict[str, str], stdin: str | None = None) -> Result:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIERLINE_")}
    base.update(PYTHONPATH=str(REPO), TIERLINE_LOG_LEVEL="WARNING")
    base.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "web.cli",
        *args,
        cwd=REPO,
        env=base,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), timeout=60
    )
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def env_for(tl, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"TIERLINE_DATA_DIR": str(tmp_path), "TIERLINE_DATABASE_URL": tl.db.url}


def test_cli_module_can_be_run_as_a_script():
    source = (REPO / "web" / "cli.py").read_text()
    assert 'if __name__ == "__main__":' in source


async def test_log_lines_reach_stderr_and_a_bad_level_is_refused(tmp_path):
    env = {"TIERLINE_DATA_DIR": str(tmp_path), "TIERLINE_LOG_LEVEL": "debug"}
    run = await tierline("migrate", env=env)
    assert run.code == 0, run.err
    # Written by the log thread (web/log_output.py), every line in the one format.
    stamped = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO) [\w.]+: ")
    assert stamped.match(run.err), run.err[:300]
    assert sum(1 for line in run.err.splitlines() if stamped.match(line)) >= 3

    bad = await tierline("migrate", env={**env, "TIERLINE_LOG_LEVEL": "chatty"})
    assert bad.code == 2
    assert "bad TIERLINE_LOG_LEVEL 'CHATTY'" in bad.err


# ---- migrate on a fresh store -------------------------------------------------------------


async def _pg_admin(sql: str) -> None:
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await admin.dispose()


@pytest.fixture
def fresh_store(backend, tmp_path, request) -> Iterator[tuple[dict[str, str], str]]:  # type: ignore[no-untyped-def]
    """Environment for a store nobody has touched: a new data dir, or a new PG database."""
    data_dir = tmp_path / "fresh-data"
    if backend == "sqlite":
        yield {"TIERLINE_DATA_DIR": str(data_dir)}, f"sqlite+aiosqlite:///{data_dir}/tierline.db"
        return
    request.getfixturevalue("pg_database")  # skips/fails as the suite does without PostgreSQL
    name = f"tierline_cli_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        yield {"TIERLINE_DATA_DIR": str(data_dir), "TIERLINE_DATABASE_URL": url}, url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_migrate_builds_a_fresh_store_and_is_idempotent(fresh_store, backend, tmp_path):
    env, url = fresh_store
    first = await tierline("migrate", env=env)
    assert first.code == 0, first.err
    assert "is up to date" in first.out
    if backend == "sqlite":
        assert (tmp_path / "fresh-data" / "tierline.db").is_file()
    again = await tierline("migrate", env=env)
    assert again.code == 0, again.err

    db = Database(url)
    try:
        assert await db.pending_migrations() == []
        async with db.session() as s:
            versions = await list_versions(s)
        assert [(v.name, v.version, v.is_current) for v in versions] == [("telemarketing", 1, True)]
    finally:
        await db.dispose()


# ---- users -------------------------------------------------------------------------------


async def test_user_add_reads_the_password_from_stdin(tl, tmp_path):
    env = env_for(tl, tmp_path)
    result = await tierline(
        "user",
        "add",
        "ivan",
        "--role",
        "operator",
        "--tier",
        "cold",
        "--extension",
        "101",
        "--password-stdin",
        env=env,
        stdin="correct horse battery staple\n",
    )
    assert result.code == 0, result.err
    assert "created operator ivan" in result.out
    async with tl.db.session() as s:
        user = await authenticate(s, "ivan", "correct horse battery staple")
        assert user is not None and (user.tier, user.extension) == ("cold", "101")
        assert await authenticate(s, "ivan", "correct horse battery") is None

    dup = await tierline(
        "user",
        "add",
        "ivan",
        "--role",
        "operator",
        "--tier",
        "cold",
        "--password-stdin",
        env=env,
        stdin="another password here\n",
    )
    assert dup.code == 1 and "tierline:" in dup.err
    async with tl.db.session() as s:
        assert len((await s.exec(select(User).where(User.username == "ivan"))).all()) == 1


# ---- workflows -----------------------------------------------------------------------------


async def test_workflow_validate_accepts_the_default_and_names_the_broken_line(tmp_path):
    env = {"TIERLINE_DATA_DIR": str(tmp_path)}
    ok = await tierline("workflow", "validate", str(WORKFLOW), env=env)
    assert ok.code == 0, ok.err
    assert "valid" in ok.out and "telemarketing" in ok.out

    source = WORKFLOW.read_text()
    typo = "{event: hand_to_sales, from: qualified, to: presentaton}"
    broken = source.replace("{event: hand_to_sales, from: qualified, to: presentation}", typo)
    assert broken != source
    line = next(i for i, t in enumerate(broken.splitlines(), 1) if typo in t)
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    bad = await tierline("workflow", "validate", str(path), env=env)
    assert bad.code == 1
    assert f"line {line}:" in bad.err and "presentaton" in bad.err

    missing = await tierline("workflow", "validate", str(tmp_path / "nope.yaml"), env=env)
    assert missing.code == 1 and "cannot read" in missing.err


async def test_workflow_publish_dry_run_then_for_real(tl, tmp_path):
    op = await make_user(tl, "cold1")
    for name in ("A", "B"):
        c = await make_client(tl, name)
        picked = datetime(2026, 11, 24, 15, tzinfo=ZoneInfo("Europe/Moscow"))
        await tl.apply(EventRequest(c.id, "call_back", actor=op, picked=picked))
    await make_client(tl, "C")
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(default_definition_text().replace("call_back_later", "agreed_call_back"))
    env = env_for(tl, tmp_path)

    unmapped = await tierline("workflow", "publish", str(renamed), "--dry-run", env=env)
    assert unmapped.code == 1
    assert "call_back_later (2 clients)" in unmapped.err

    mapping = "call_back_later=agreed_call_back"
    dry = await tierline(
        "workflow", "publish", str(renamed), "--map", mapping, "--dry-run", env=env
    )
    assert dry.code == 0, dry.err
    assert "dry run: 1 client stays in its state" in dry.out
    assert "call_back_later -> agreed_call_back: 2 clients" in dry.out
    async with tl.db.session() as s:
        assert [v.version for v in await list_versions(s)] == [1]

    real = await tierline("workflow", "publish", str(renamed), "--map", mapping, env=env)
    assert real.code == 0, real.err
    assert "published telemarketing version 2" in real.out
    async with tl.db.session() as s:
        assert [v.version for v in await list_versions(s)] == [2, 1]
    assert await tl.check_followups() == []

    bad_map = await tierline("workflow", "publish", str(renamed), "--map", "oops", env=env)
    assert bad_map.code == 1 and "OLD=NEW" in bad_map.err


async def test_workflow_validate_and_publish_refuse_an_unknown_placeholder(tl, tmp_path):
    """The CLI accepts new text by the editor's rules: an unknown {name} in a script is
    refused at its line, and nothing is published."""
    source = default_definition_text()
    first_script = source.index("script: |")
    line_end = source.index("\n", source.index("\n", first_script) + 1)
    bad = source[:line_end] + " Ask about {product}." + source[line_end:]
    line = next(i for i, t in enumerate(bad.splitlines(), 1) if "{product}" in t)
    path = tmp_path / "placeholder.yaml"
    path.write_text(bad)
    env = env_for(tl, tmp_path)
    for command in (("workflow", "validate"), ("workflow", "publish")):
        result = await tierline(*command, str(path), env=env)
        assert result.code == 1, (command, result.out)
        assert f"line {line}:" in result.err and "unknown placeholder {product}" in result.err
    async with tl.db.session() as s:
        assert [v.version for v in await list_versions(s)] == [1]


# ---- the follow-up invariant ---------------------------------------------------------------


async def test_followups_check_passes_then_reports_a_broken_row(tl, tmp_path):
    env = env_for(tl, tmp_path)
    await make_client(tl, "Fine")
    broken = await make_client(tl, "Broken")
    healthy = await tierline("followups", "check", env=env)
    assert healthy.code == 0, healthy.err
    assert "0 clients break the follow-up invariant" in healthy.out

    async with tl.db.transaction() as s:
        (fu,) = (
            await s.exec(
                select(FollowUp).where(
                    FollowUp.client_id == broken.id, FollowUp.status == FollowUpStatus.PENDING
                )
            )
        ).all()
        await s.exec(text("DELETE FROM followups WHERE id = :id").bindparams(id=fu.id))
    report = await tierline("followups", "check", env=env)
    assert report.code == 1
    assert f"client {broken.id} in 'new' has 0 pending" in report.out
    assert "1 client breaks the follow-up invariant" in report.out


async def test_simulate_without_the_servers_key_says_where_it_looked(tmp_path):
    data = tmp_path / "elsewhere"
    result = await tierline(
        *SIMULATE_CALL,
        env={"TIERLINE_DATA_DIR": str(data)},
    )
    assert result.code == 1
    assert "no PBX key at" in result.err and "pbx.key" in result.err
    assert "Traceback" not in result.err
    assert not data.exists()  # no key of its own made up: the server would refuse it


async def test_simulate_with_a_key_the_server_does_not_have_is_refused_clearly(
    web_client, tmp_path
):
    url = str(web_client.make_url("/")).rstrip("/")
    result = await tierline(
        *SIMULATE_CALL,
        "--url",
        url,
        env={"TIERLINE_DATA_DIR": str(tmp_path), "TIERLINE_PBX_SECRET": "not-the-servers"},
    )
    assert result.code == 1
    assert "401" in result.err and "the key used is not the server's" in result.err
    assert "Traceback" not in result.err


async def test_simulate_with_no_server_listening_says_so(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    result = await tierline(
        *SIMULATE_CALL,
        "--url",
        f"http://127.0.0.1:{port}",
        env={"TIERLINE_DATA_DIR": str(tmp_path), "TIERLINE_PBX_SECRET": "any"},
    )
    assert result.code == 1
    assert f"cannot reach http://127.0.0.1:{port}" in result.err
    assert "tierline serve" in result.err and "Traceback" not in result.err


async def test_simulate_a_ring_group_and_a_missed_call(web_client, tl, tmp_path):
    """`--to-extension` twice rings a group: the first answers, the other leg is recorded as
    taken elsewhere; `--no-answer` leaves a call nobody answered."""
    await make_user(tl, "olga", tier="cold", extension="101")
    await make_user(tl, "pavel", tier="cold", extension="102")
    url = str(web_client.make_url("/")).rstrip("/")
    env = {"TIERLINE_DATA_DIR": str(tmp_path), "TIERLINE_PBX_SECRET": "test-pbx-secret"}
    quick = ("--answer-after", "0", "--hangup-after", "0", "--url", url)
    group = await tierline(*SIMULATE_CALL, "--to-extension", "102", *quick, env=env)
    assert group.code == 0, group.err
    assert "to extensions 101 and 102" in group.out
    missed = await tierline(
        "simulate", "call", "--from", "+79161234567", "--to-extension", "102", "--no-answer",
        *quick, env=env,
    )  # fmt: skip
    assert missed.code == 0, missed.err

    async with tl.db.session() as s:
        calls = list(await s.exec(select(Call).order_by(Call.id)))  # type: ignore[arg-type]
    legs = [(c.extension, c.status, c.answered_at is not None) for c in calls]
    assert legs == [
        ("101", "ended", True),
        ("102", "taken_elsewhere", False),
        ("102", "ended", False),
    ]
    assert calls[0].pbx_call_id == calls[1].pbx_call_id != calls[2].pbx_call_id
