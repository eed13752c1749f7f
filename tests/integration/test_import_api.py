"""Contact import over HTTP: multipart upload, background job, progress, refused rows."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from sqlmodel import col, select

from engine.models import AuditEntry, Client, ImportJob, ImportStatus
from engine.service import Tierline
from tests.conftest import sign_in
from tests.integration.helpers import make_user
from web.api.imports import IMPORTS
from web.app import create_app

CSV = (
    b"Full name,Phone,Company\n"
    b"Ivan Petrov,+7 916 123-45-67,Acme\n"
    b"Olga Bad,12,Beta\n"
    b"Anna Good,8 (495) 123-45-67,Gamma\n"
)


def _app(tl: Tierline, fake_pbx):  # type: ignore[no-untyped-def]
    return create_app(tl, pbx=fake_pbx, start_engine=False)


@pytest.fixture
async def client(aiohttp_client, tl, fake_pbx):  # type: ignore[no-untyped-def]
    return await aiohttp_client(_app(tl, fake_pbx))


def form(data: bytes, name: str = "contacts.csv", **fields: str) -> aiohttp.FormData:
    out = aiohttp.FormData()
    for key, value in fields.items():
        out.add_field(key, value)
    out.add_field("file", data, filename=name, content_type="text/csv")
    return out


async def wait_done(client, job_id: int) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(500):
        body = await (await client.get(f"/api/imports/{job_id}")).json()
        if body["status"] != ImportStatus.RUNNING:
            return body
        await asyncio.sleep(0.02)  # the job runs on the server's loop; give it turns
    raise AssertionError(f"import {job_id} did not finish: {body}")


async def test_upload_runs_the_import_and_reports_the_bad_row(tl: Tierline, client) -> None:
    await make_user(tl, "admin", "admin", None)
    await sign_in(client, "admin")
    resp = await client.post(
        "/api/imports",
        data=form(
            CSV, mapping=json.dumps({"name": "Full name", "phone": ""}), on_duplicate="report"
        ),
    )
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["job_id"]
    body = await wait_done(client, job_id)
    assert body["status"] == "done" and body["percent"] == 100.0
    assert body["bytes_read"] == body["total_bytes"] == len(CSV)
    assert (body["rows_done"], body["created"], body["merged"], body["errors"]) == (3, 2, 0, 1)
    assert body["file_name"] == "contacts.csv"
    [bad] = body["error_rows"]
    assert bad["row"] == 3 and bad["column"] == "Phone" and bad["message"]
    async with tl.db.session() as s:
        names = set(await s.exec(select(Client.name)))
        job = await s.get(ImportJob, job_id)
        started = (
            await s.exec(select(AuditEntry).where(AuditEntry.action == "import.start"))
        ).all()
    assert names == {"Ivan Petrov", "Anna Good"}
    assert job is not None and job.on_duplicate == "report" and job.mapping["name"] == "Full name"
    assert len(started) == 1 and started[0].target == f"import:{job_id}"
    # The upload was a temporary file: nothing is left behind in data_dir/imports.
    assert list((tl.settings.data_dir / "imports").iterdir()) == []

    again = await client.post("/api/imports", data=form(CSV))
    assert again.status == 409, await again.text()  # the same file, already imported


async def test_refused_uploads_answer_at_once(tl: Tierline, client) -> None:
    await make_user(tl, "boss", "supervisor", None)
    await sign_in(client, "boss")
    no_phone = await client.post("/api/imports", data=form(b"Name,Company\nIvan,Acme\n"))
    assert no_phone.status == 400 and "phone" in (await no_phone.json())["message"].lower()
    bad_map = await client.post("/api/imports", data=form(CSV, mapping='{"shoe_size": "X"}'))
    assert bad_map.status == 400 and (await bad_map.json())["field"] == "mapping"
    bad_dup = await client.post("/api/imports", data=form(CSV, on_duplicate="ignore"))
    assert bad_dup.status == 400 and (await bad_dup.json())["field"] == "on_duplicate"
    no_file = aiohttp.FormData()
    no_file.add_field("mapping", "{}")
    missing = await client.post("/api/imports", data=no_file)
    assert missing.status == 400 and (await missing.json())["field"] == "file"
    assert (await client.get("/api/imports/999")).status == 404
    assert list((tl.settings.data_dir / "imports").iterdir()) == []


async def test_operators_get_403_and_it_is_audited(tl: Tierline, client) -> None:
    await make_user(tl, "cold1", "operator", "cold", "101")
    await sign_in(client, "cold1")
    assert (await client.post("/api/imports", data=form(CSV))).status == 403
    assert (await client.get("/api/imports/1")).status == 403
    async with tl.db.session() as s:
        refused = (await s.exec(select(AuditEntry).where(col(AuditEntry.allowed).is_(False)))).all()
        jobs = (await s.exec(select(ImportJob))).all()
    assert {r.action for r in refused} == {"import.start", "import.read"}
    assert jobs == []


async def test_shutdown_cancels_a_running_import_cleanly(
    tl: Tierline, client, aiohttp_client, fake_pbx
) -> None:
    await make_user(tl, "admin", "admin", None)
    await sign_in(client, "admin")
    lines = ["Name,Phone"] + [f"Client {i},+7 916 2{i:06d}" for i in range(60_000)]
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) > 1024 * 1024  # above the app's JSON body limit: the upload is streamed
    resp = await client.post("/api/imports", data=form(data))
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["job_id"]
    imports = client.app[IMPORTS]
    assert imports.tasks, "the import should still be running after its first batch"
    await client.close()  # the app's cleanup runs: the import task is cancelled and awaited
    assert not imports.tasks
    async with tl.db.session() as s:
        job = await s.get(ImportJob, job_id)
    assert job is not None and job.status == ImportStatus.INTERRUPTED
    # A new server shows the stopped job: its committed rows, no made-up percentage.
    again = await aiohttp_client(_app(tl, fake_pbx))
    await sign_in(again, "admin")
    status = await (await again.get(f"/api/imports/{job_id}")).json()
    assert status["status"] == "interrupted" and status["percent"] is None
    assert status["rows_done"] == job.committed_rows and not status["running"]
    assert 0 < job.committed_rows < 60_000  # committed batches stay; a re-upload resumes


async def test_a_job_ending_while_its_status_is_read_is_not_reported_stopped(
    tl: Tierline, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page polls while the answer says running; a stale "stopped" ended its polling.

    The status reads the job's row, then its refused rows: here the import finishes in
    between, as it can on a busy server, and the answer must still tell the page to ask
    again (or say done) rather than "running, but no task" (= interrupted)."""
    import web.api.imports as imports_api

    await make_user(tl, "admin", "admin", None)
    await sign_in(client, "admin")
    lines = ["Name,Phone"] + [f"Client {i},+7 916 3{i:06d}" for i in range(5_000)]
    resp = await client.post("/api/imports", data=form(("\n".join(lines) + "\n").encode()))
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["job_id"]
    imports = client.app[IMPORTS]
    [task] = imports.tasks  # still running: only its first batch has committed
    read_errors = imports_api.job_errors

    async def errors_read_after_the_job_ends(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows = await read_errors(*args, **kwargs)
        await asyncio.wait({task})  # its done-callbacks (which forget the job) run first
        return rows

    monkeypatch.setattr(imports_api, "job_errors", errors_read_after_the_job_ends)
    body = await (await client.get(f"/api/imports/{job_id}")).json()
    assert task.done() and job_id not in imports.by_job
    assert body["status"] == "done" or body["running"], body
    monkeypatch.undo()
    assert (await wait_done(client, job_id))["status"] == "done"
