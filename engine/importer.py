"""Contact import from CSV: streamed, batched, resumable, and honest about every bad row.

How it goes:

1. One pass over the bytes (in a thread) computes the SHA-256 and picks the encoding:
   a BOM means ``utf-8-sig``; else UTF-8 if the whole file decodes; else Windows-1251
   (every byte but 0x98 is defined there). A file that is neither is refused, naming the
   byte offset and line.
2. The header is read and the column mapping resolved (explicit ``field=Column`` entries,
   then well-known header names). Missing required columns refuse the file before
   anything is written.
3. Rows are read with the ``csv`` module over a text stream, ``batch_size`` at a time. Each
   batch commits in ONE transaction together with the job's ``last_row``: an interrupted
   import run again on the same file (same SHA-256) continues after the last committed
   batch, and every row ends up imported (or refused) exactly once.

Row numbers are the file's record numbers as a spreadsheet shows them: the header is row 1,
the first contact row 2. New clients enter the workflow's initial state with their first
follow-up, exactly as :meth:`engine.runtime.Runtime.enroll_in` would do it, but in bulk.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import Conflict, InvalidInput
from engine.filters.statistics import refresh_statistics
from engine.importing.files import FileFacts, Reader, next_batch, scan_file
from engine.importing.options import ImportOptions, ImportProgress, ImportReport, Progress
from engine.importing.rows import FIELDS, ColumnMap, resolve_mapping
from engine.importing.writer import BatchWriter
from engine.models import (
    ImportJob,
    ImportRowError,
    ImportStatus,
)

if TYPE_CHECKING:
    from engine.service import Tierline

QUEUE_CHANNEL = "queues"  # engine.service.QUEUE_CHANNEL (not imported: no import cycle)

__all__ = [
    "FIELDS",
    "FileFacts",
    "ImportOptions",
    "ImportProgress",
    "ImportReport",
    "import_contacts",
    "job_errors",
    "scan_file",
]


async def import_contacts(
    tl: Tierline, path: Path, options: ImportOptions, *, progress: Progress | None = None
) -> ImportReport:
    """Import (or resume importing) ``path``; raises InvalidInput for a refused file."""
    if options.on_duplicate not in ("merge", "report"):
        raise InvalidInput("on_duplicate must be 'merge' or 'report'", field="on_duplicate")
    if options.batch_size < 1:
        raise InvalidInput("the batch size must be at least 1", field="batch_size")
    facts = await asyncio.to_thread(scan_file, path)
    reader = await asyncio.to_thread(Reader, path, facts.encoding, options.delimiter)
    try:
        columns = resolve_mapping(reader.header, options.mapping)  # refuses before any write
        job = await _open_job(tl, path, facts, options, columns)
        resumed = job.last_row
        writer = BatchWriter(tl, job, options, path.name, columns.label("phone"))
        region = tl.settings.default_region
        try:
            while True:
                # Reading and cleaning (phone parsing is the costly part) run off the loop.
                batch = await asyncio.to_thread(
                    next_batch, reader, job.last_row, options.batch_size, columns, region
                )
                if batch is None:
                    break
                parsed, problems, last_row, seen = batch
                await writer.commit(parsed, problems, last_row=last_row, seen=seen)
                job = writer.job
                if progress is not None:
                    progress(
                        ImportProgress(
                            job_id=job.id,  # type: ignore[arg-type]
                            rows_done=job.committed_rows,
                            bytes_read=min(reader.bytes_read(), facts.size),
                            total_bytes=facts.size,
                            created=job.created,
                            merged=job.merged,
                            errors=job.error_count,
                        )
                    )
        except BaseException as exc:
            # Committed batches stay; the next run with the same file resumes after them.
            await _finish(tl, job, ImportStatus.INTERRUPTED, f"stopped: {exc!r}"[:2000])
            raise
        await _finish(tl, job, ImportStatus.DONE, "")
        await refresh_statistics(tl.db, changed_rows=job.created + job.merged)
        await writer.announce()
        return ImportReport(
            job_id=job.id,  # type: ignore[arg-type]
            status=job.status,
            encoding=facts.encoding,
            resumed_after_row=resumed,
            rows=job.committed_rows,
            created=job.created,
            merged=job.merged,
            errors=job.error_count,
        )
    finally:
        reader.close()


async def _open_job(
    tl: Tierline, path: Path, facts: FileFacts, options: ImportOptions, columns: ColumnMap
) -> ImportJob:
    async with tl.db.transaction() as session:
        earlier = (
            await session.exec(
                select(ImportJob)
                .where(ImportJob.sha256 == facts.sha256)
                .order_by(col(ImportJob.id).desc())
            )
        ).first()
        if earlier is not None and earlier.status == ImportStatus.DONE:
            raise Conflict(
                f"this file was already imported completely (job {earlier.id}, "
                f"{earlier.created} created, {earlier.merged} merged, "
                f"{earlier.error_count} refused rows)",
                job_id=earlier.id,
            )
        if earlier is not None:
            earlier.status = ImportStatus.RUNNING
            earlier.finished_at = None
            session.add(earlier)
            return earlier
        job = ImportJob(
            file_name=path.name[:500],
            sha256=facts.sha256,
            file_size=facts.size,
            encoding=facts.encoding,
            mapping=columns.describe(),
            on_duplicate=options.on_duplicate,
            status=ImportStatus.RUNNING,
            actor_id=options.actor_id,
            started_at=tl.clock.now(),
        )
        session.add(job)
        await session.flush()
        return job


async def _finish(tl: Tierline, job: ImportJob, status: ImportStatus, message: str) -> None:
    async with tl.db.transaction() as session:
        row = await session.get(ImportJob, job.id)
        if row is None:
            return
        row.status = status
        row.message = message
        row.finished_at = tl.clock.now()
        session.add(row)
    job.status = status


async def job_errors(
    session: AsyncSession, job_id: int, *, limit: int | None = None
) -> list[ImportRowError]:
    query = (
        select(ImportRowError)
        .where(ImportRowError.job_id == job_id)
        .order_by(col(ImportRowError.row), col(ImportRowError.id))
    )
    if limit is not None:
        query = query.limit(limit)
    return list(await session.exec(query))
