"""Contact import for supervisors and admins.

- POST /api/imports (multipart: file, mapping (JSON {field: column}), on_duplicate) → 202
  {"job_id"}; GET /api/imports/{job_id}: progress and the first 100 refused rows.

The upload streams to settings.data_dir/imports (never whole in memory); the import runs as
a task on the server's loop, and the app's cleanup cancels whatever is still running (its
committed batches stay: uploading the same file again resumes it). Operators get 403, and
the refusal is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, web

from engine.errors import InvalidInput, NotFound
from engine.importer import FIELDS, ImportOptions, ImportProgress, import_contacts, job_errors
from engine.models import ImportJob, ImportStatus
from engine.service import Tierline
from web.api.management import audit, staff_only

log = logging.getLogger("tierline.web")
routes = web.RouteTableDef()
MAX_UPLOAD = 4 * 1024**3  # 4 GiB: far above a million rows, below a full disk
MAX_FORM_FIELD = 64 * 1024
WRITE_CHUNK = 1 << 20
ERROR_ROWS = 100
_SAFE_NAME = re.compile(r"[^\w.\- ]+")


@dataclass
class _Live:
    """What only the running import knows: how far into the file it has read."""

    total_bytes: int
    task: asyncio.Task[Any] | None = None
    bytes_read: int = 0
    job_id: int | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)


class Imports:
    """The running imports of this app, cancelled when the app shuts down."""

    def __init__(self) -> None:
        self.by_job: dict[int, _Live] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


IMPORTS = web.AppKey("management_imports", Imports)


def _mapping(text: str) -> dict[str, str]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"mapping is not JSON: {exc}", field="mapping") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidInput('mapping must be {"field": "CSV column"}', field="mapping")
    out = {}
    for key, column in value.items():
        if not column.strip():
            continue  # a field left blank in the form: the header names decide
        if key not in FIELDS and not key.startswith("custom."):
            known = ", ".join(FIELDS)
            raise InvalidInput(
                f"unknown field {key!r} in mapping; fields: {known}", field="mapping"
            )
        out[key] = column.strip()
    return out


async def _read_text(part: BodyPartReader, name: str) -> str:
    data = await part.read(decode=True)
    if len(data) > MAX_FORM_FIELD:
        raise InvalidInput(f"{name} is longer than {MAX_FORM_FIELD} bytes", field=name)
    return data.decode(part.get_charset("utf-8"), errors="replace")


async def _save_upload(part: BodyPartReader, folder: Path) -> tuple[Path, int]:
    """Stream the file part to disk; the writes run in a thread, a megabyte at a time."""
    name = _SAFE_NAME.sub("_", Path(part.filename or "").name).strip(" .") or "upload.csv"
    path = folder / name[:200]
    fh: BinaryIO = await asyncio.to_thread(path.open, "wb")
    size, buffer = 0, bytearray()
    try:
        while chunk := await part.read_chunk(256 * 1024):
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise InvalidInput(f"the file is larger than {MAX_UPLOAD} bytes", field="file")
            buffer += chunk
            if len(buffer) >= WRITE_CHUNK:
                await asyncio.to_thread(fh.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(fh.write, bytes(buffer))
    finally:
        await asyncio.to_thread(fh.close)
    return path, size


async def _run(tl: Tierline, path: Path, options: ImportOptions, live: _Live) -> Any:
    def progress(p: ImportProgress) -> None:
        live.job_id = p.job_id
        live.bytes_read = p.bytes_read
        live.opened.set()

    try:
        return await import_contacts(tl, path, options, progress=progress)
    finally:
        live.opened.set()
        await asyncio.to_thread(shutil.rmtree, path.parent, True)


@routes.post("/api/imports")
async def start_import(request: web.Request) -> web.Response:
    user, tl = await staff_only(request, "import.start")
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("send the CSV as multipart/form-data (field 'file')", field="file")
    folder = tl.settings.data_dir / "imports" / uuid.uuid4().hex
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    fields: dict[str, str] = {}
    path: Path | None = None
    size = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidInput("nested multipart is not accepted", field="file")
            if part.name == "file" and path is None:
                path, size = await _save_upload(part, folder)
            elif part.name in ("mapping", "on_duplicate"):
                fields[part.name] = await _read_text(part, part.name)
            else:
                await part.release()  # unknown parts are skipped, not stored
        if path is None:
            raise InvalidInput("no file was uploaded (field 'file')", field="file")
        options = ImportOptions(
            mapping=_mapping(fields.get("mapping", "")),
            on_duplicate=(fields.get("on_duplicate") or "merge").strip(),
            actor_id=user.id,
        )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise
    imports = request.app[IMPORTS]
    live = _Live(total_bytes=size)
    task = live.task = asyncio.get_running_loop().create_task(_run(tl, path, options, live))
    imports.tasks.add(task)
    task.add_done_callback(imports.tasks.discard)
    task.add_done_callback(_log_failure)
    # The job row exists once the first batch has committed (or the import has ended):
    # wait for that, so a refused file answers 400/409 here instead of a job that failed.
    await live.opened.wait()
    if live.job_id is None:  # ended before its first batch: refused, or an empty file
        report = await asyncio.shield(task)  # raises the refusal (InvalidInput, Conflict)
        live.job_id = report.job_id
    imports.by_job[live.job_id] = live
    job_id = live.job_id
    task.add_done_callback(lambda _t: imports.by_job.pop(job_id, None))
    await audit(
        tl, user, "import.start", f"import:{live.job_id}",
        {"file": path.name, "bytes": size, "on_duplicate": options.on_duplicate},
    )  # fmt: skip
    return web.json_response({"job_id": live.job_id}, status=202)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.info("import stopped: %s", exc)


@routes.get("/api/imports/{job_id:\\d+}")
async def import_status(request: web.Request) -> web.Response:
    _, tl = await staff_only(request, "import.read")
    job_id = int(request.match_info["job_id"])
    # Whether the task runs is read BEFORE the row: the task may commit "done" and leave
    # while the row is read, and a row read as running beside a task seen as gone would
    # tell the page the import had stopped, which ends its polling one step short.
    live = request.app[IMPORTS].by_job.get(job_id)
    task_running = live is not None and live.task is not None and not live.task.done()
    async with tl.db.session() as db:
        job = await db.get(ImportJob, job_id)
        if job is None:
            raise NotFound(f"there is no import {job_id}")
        errors = await job_errors(db, job_id, limit=ERROR_ROWS)
    running = job.status == ImportStatus.RUNNING
    total = job.file_size
    # How far into the file only the running task knows; a stopped job shows its rows.
    bytes_read: int | None = None
    percent: float | None = None
    if job.status == ImportStatus.DONE:
        bytes_read, percent = total, 100.0
    elif running and live is not None:
        bytes_read = live.bytes_read
        percent = round(100 * bytes_read / total, 1) if total else 0.0
    return web.json_response(
        {
            "job_id": job.id,
            "file_name": job.file_name,
            "status": job.status,
            "running": task_running,
            "rows_done": job.committed_rows,
            "bytes_read": bytes_read,
            "total_bytes": total,
            "percent": None if percent is None else min(percent, 100.0),
            "created": job.created,
            "merged": job.merged,
            "errors": job.error_count,
            "message": job.message,
            "error_rows": [
                {"row": e.row, "column": e.column, "message": e.message} for e in errors
            ],
        }
    )


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[IMPORTS].close()


def setup(app: web.Application) -> None:
    app[IMPORTS] = Imports()
    app.add_routes(routes)
    app.cleanup_ctx.append(_lifecycle)
