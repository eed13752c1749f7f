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
import codecs
import csv
import hashlib
import io
import itertools
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, literal_column
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine import phones
from engine.definitions import current_version
from engine.errors import Conflict, InvalidInput
from engine.followups.planner import PlanInput, client_timezone, plan
from engine.models import (
    Client,
    ClientPhone,
    FollowUp,
    ImportJob,
    ImportRowError,
    ImportStatus,
    SegmentClass,
    TransitionRecord,
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

CHUNK = 1 << 20


@dataclass(frozen=True)
class ImportOptions:
    mapping: dict[str, str] = field(default_factory=dict)  # field -> CSV column header
    on_duplicate: str = "merge"  # "merge" into the existing client, or "report" the row
    batch_size: int = 1000
    delimiter: str | None = None  # None: guessed from the header (",", ";" or tab)
    source: str = "import"  # written to Client.source
    actor_id: int | None = None


@dataclass(frozen=True)
class ImportProgress:
    job_id: int
    rows_done: int  # data rows committed so far, earlier runs of this job included
    bytes_read: int
    total_bytes: int
    created: int
    merged: int
    errors: int


@dataclass(frozen=True)
class ImportReport:
    job_id: int
    status: str
    encoding: str
    resumed_after_row: int  # 0 for a fresh import
    rows: int
    created: int
    merged: int
    errors: int


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    size: int
    encoding: str


Progress = Callable[[ImportProgress], object]


def scan_file(path: Path) -> FileFacts:
    """Hash the file and choose its encoding, reading it once in 1 MiB chunks."""
    digest = hashlib.sha256()
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    utf8_bad: tuple[int, int, int] | None = None  # (offset, byte, line)
    cp_bad: tuple[int, int, int] | None = None
    offset, lines, first = 0, 0, b""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if not first:
                first = chunk[:3]
            digest.update(chunk)
            if utf8_bad is None:
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError as exc:
                    at = max(exc.start, 0)
                    utf8_bad = (offset + at, chunk[at], lines + chunk.count(b"\n", 0, at) + 1)
            if cp_bad is None and (at := chunk.find(b"\x98")) >= 0:
                cp_bad = (offset + at, 0x98, lines + chunk.count(b"\n", 0, at) + 1)
            lines += chunk.count(b"\n")
            offset += len(chunk)
    if utf8_bad is None:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a multi-byte character
            utf8_bad = (offset - len(exc.object) + exc.start, exc.object[exc.start], lines + 1)
    if utf8_bad is None:
        encoding = "utf-8-sig" if first.startswith(codecs.BOM_UTF8) else "utf-8"
    elif cp_bad is None:
        encoding = "cp1251"
    else:
        raise InvalidInput(
            f"{path.name} is neither UTF-8 nor Windows-1251 text: byte 0x{utf8_bad[1]:02x} at "
            f"offset {utf8_bad[0]} (line {utf8_bad[2]}) is not UTF-8, and byte 0x98 at offset "
            f"{cp_bad[0]} (line {cp_bad[2]}) is not Windows-1251; re-save it as UTF-8",
            field="file",
            offset=utf8_bad[0],
            line=utf8_bad[2],
        )
    return FileFacts(sha256=digest.hexdigest(), size=offset, encoding=encoding)


class _Reader:
    """The CSV as numbered records, read from a text stream (never the whole file)."""

    def __init__(self, path: Path, encoding: str, delimiter: str | None) -> None:
        self._raw = path.open("rb")
        self._text = io.TextIOWrapper(self._raw, encoding=encoding, newline="")
        first = self._text.readline()
        delim = delimiter or _guess_delimiter(first)
        lines = itertools.chain([first], self._text)
        self._csv = csv.reader(lines, delimiter=delim)
        self.header = [h.strip().lstrip("\ufeff") for h in next(self._csv, [])]
        self.row_no = 1  # the header

    def bytes_read(self) -> int:
        return self._raw.tell()

    def records(self, after_row: int, limit: int) -> list[tuple[int, list[str]]]:
        out: list[tuple[int, list[str]]] = []
        try:
            for cells in self._csv:
                self.row_no += 1
                if self.row_no <= after_row or not any(c.strip() for c in cells):
                    continue  # done in an earlier run, or a blank line
                out.append((self.row_no, cells))
                if len(out) >= limit:
                    break
        except csv.Error as exc:
            raise InvalidInput(f"row {self.row_no + 1}: the CSV is malformed: {exc}") from exc
        return out

    def close(self) -> None:
        self._text.close()


def _next_batch(
    reader: _Reader, after_row: int, limit: int, columns: ColumnMap, region: str
) -> tuple[list[ParsedRow], list[RowProblem], int, int] | None:
    records = reader.records(after_row, limit)
    if not records:
        return None
    parsed: list[ParsedRow] = []
    problems: list[RowProblem] = []
    for row_no, cells in records:
        row, bad = parse_row(row_no, cells, columns, region)
        problems.extend(bad)
        if row is not None:
            parsed.append(row)
    return parsed, problems, records[-1][0], len(records)


def _guess_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


async def import_contacts(
    tl: Tierline, path: Path, options: ImportOptions, *, progress: Progress | None = None
) -> ImportReport:
    """Import (or resume importing) ``path``; raises InvalidInput for a refused file."""
    if options.on_duplicate not in ("merge", "report"):
        raise InvalidInput("on_duplicate must be 'merge' or 'report'", field="on_duplicate")
    if options.batch_size < 1:
        raise InvalidInput("the batch size must be at least 1", field="batch_size")
    facts = await asyncio.to_thread(scan_file, path)
    reader = await asyncio.to_thread(_Reader, path, facts.encoding, options.delimiter)
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
                    _next_batch, reader, job.last_row, options.batch_size, columns, region
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


# ---- columns and rows -----------------------------------------------------------------

FIELDS = ("name", "phone", "phone2", "company", "email", "timezone", "segment_class", "source")
REQUIRED = ("name", "phone")
# Header names recognised without a --map entry (compared case-insensitively, trimmed).
# fmt: off
DEFAULT_HEADERS: dict[str, tuple[str, ...]] = {
    "name": ("name", "full name", "fullname", "client", "client name", "contact",
             "contact name", "fio", "фио", "имя", "клиент", "контакт"),
    "phone": ("phone", "phone number", "telephone", "tel", "mobile", "phone1", "phone 1",
              "телефон", "мобильный", "тел"),
    "phone2": ("phone2", "phone 2", "second phone", "other phone", "телефон 2", "телефон2"),
    "company": ("company", "company name", "organisation", "organization", "компания",
                "организация"),
    "email": ("email", "e-mail", "mail", "почта", "эл. почта"),
    "timezone": ("timezone", "time zone", "tz", "часовой пояс"),
    "segment_class": ("segment_class", "segment", "class", "сегмент"),
    "source": ("source", "источник"),
}
# fmt: on
_PHONE_SPLIT = re.compile(r"[;,]")
_CUSTOM_KEY = re.compile(r"^[\w\- ]{1,64}$")


@dataclass(frozen=True)
class ColumnMap:
    fields: dict[str, int]  # field -> column index
    custom: dict[str, int]  # custom key -> column index
    header: list[str]

    def label(self, name: str) -> str:
        idx = self.fields.get(name)
        return self.header[idx] if idx is not None else name

    def describe(self) -> dict[str, str]:
        out = {f: self.header[i] for f, i in self.fields.items()}
        out.update({f"custom.{k}": self.header[i] for k, i in self.custom.items()})
        return out


@dataclass(frozen=True)
class RowProblem:
    row: int
    column: str
    message: str


@dataclass
class ParsedRow:
    row: int
    name: str
    numbers: list[tuple[str, str, str]]  # (e164, raw, label)
    company: str = ""
    email: str | None = None
    timezone: str | None = None
    segment_class: str = SegmentClass.REGULAR
    source: str | None = None
    custom: dict[str, str] = field(default_factory=dict)


def resolve_mapping(header: list[str], explicit: dict[str, str]) -> ColumnMap:
    """Explicit ``field -> column`` entries first, then known header names; refuse gaps."""
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(name.strip().casefold(), i)
    problems: list[str] = []
    fields: dict[str, int] = {}
    custom: dict[str, int] = {}
    for target, column in explicit.items():
        i = index.get(column.strip().casefold())
        if target.startswith("custom."):
            key = target.removeprefix("custom.")
            if not _CUSTOM_KEY.match(key):
                problems.append(f"{target!r}: a custom field name is letters, digits, _ - space")
                continue
        elif target not in FIELDS:
            problems.append(f"{target!r} is not a field (fields: {', '.join(FIELDS)}, custom.*)")
            continue
        if i is None:
            problems.append(f"{target} is mapped to column {column!r}, which the file lacks")
        elif target.startswith("custom."):
            custom[target.removeprefix("custom.")] = i
        else:
            fields[target] = i
    for name, aliases in DEFAULT_HEADERS.items():
        if name in fields or name in explicit:
            continue
        found = next((index[a] for a in aliases if a in index), None)
        if found is not None:
            fields[name] = found
    missing = [f for f in REQUIRED if f not in fields and f not in explicit]
    for f in missing:
        problems.append(
            f"required column {f!r} is missing: name it with --map {f}=COLUMN, or use a "
            f"header such as {', '.join(repr(a) for a in DEFAULT_HEADERS[f][:3])}"
        )
    if problems:
        raise InvalidInput(
            "the file cannot be imported: "
            + "; ".join(problems)
            + f" (columns found: {', '.join(header) or 'none'})",
            field="mapping",
            missing=missing,
            problems=[],
            columns=header,
        )
    return ColumnMap(fields=fields, custom=custom, header=header)


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_row(
    row_no: int, cells: list[str], cols: ColumnMap, region: str
) -> tuple[ParsedRow | None, list[RowProblem]]:
    """Clean one record; every problem in it is reported, and a row with any is not imported."""

    def cell(name: str) -> str:
        i = cols.fields.get(name)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    problems: list[RowProblem] = []

    def bad(name: str, message: str) -> None:
        problems.append(RowProblem(row_no, cols.label(name), message))

    name = cell("name")
    if not name:
        bad("name", "the name is empty")
    elif len(name) > 200:
        bad("name", f"the name is {len(name)} characters long; at most 200")
    numbers: list[tuple[str, str, str]] = []
    for column, label in (("phone", ""), ("phone2", "phone2")):
        for raw in _PHONE_SPLIT.split(cell(column)):
            raw = raw.strip()
            if not raw:
                continue
            try:
                e164 = phones.normalize(raw, region)
            except InvalidInput as exc:
                bad(column, exc.message)
                continue
            if all(e164 != n[0] for n in numbers):
                numbers.append((e164, raw[:64], label))
    if not numbers and not any(p.column == cols.label("phone") for p in problems):
        bad("phone", "there is no phone number")
    email = cell("email") or None
    if email and ("@" not in email or len(email) > 254 or " " in email):
        bad("email", f"{email!r} is not an e-mail address")
    tz = cell("timezone") or None
    if tz and tz not in _zones():
        bad("timezone", f"{tz!r} is not a time zone name (e.g. Europe/Moscow)")
    segment = cell("segment_class").lower() or SegmentClass.REGULAR
    if segment not in {s.value for s in SegmentClass}:
        bad("segment_class", f"{segment!r} is not one of key, important, regular")
    company = cell("company")
    if len(company) > 200:
        bad("company", f"the company name is {len(company)} characters long; at most 200")
    if problems:
        return None, problems
    custom = {}
    for key, i in cols.custom.items():
        value = cells[i].strip() if i < len(cells) else ""
        if value:
            custom[key] = value
    row = ParsedRow(
        row=row_no,
        name=name,
        numbers=numbers,
        company=company,
        email=email,
        timezone=tz,
        segment_class=segment,
        source=cell("source")[:64] or None,
        custom=custom,
    )
    return row, []


# ---- writing a batch ------------------------------------------------------------------


@dataclass
class _Merge:
    client_id: int
    numbers: list[tuple[str, str, str]] = field(default_factory=list)
    rows: list[ParsedRow] = field(default_factory=list)


class BatchWriter:
    """Commits one batch: clients, phones, enrolment, follow-ups, refusals and the job."""

    def __init__(
        self, tl: Tierline, job: ImportJob, options: ImportOptions, file: str, phone_label: str
    ) -> None:
        self.tl = tl
        self.phone_label = phone_label
        self._merged_into_new = 0
        self.job = job
        self.options = options
        self.note = f"imported from {file}"[:2000]
        self._earliest_due: datetime | None = None
        self._tiers: set[str] = set()

    async def commit(
        self, rows: list[ParsedRow], problems: list[RowProblem], *, last_row: int, seen: int
    ) -> None:
        tl, now = self.tl, self.tl.clock.now()
        problems = list(problems)
        async with tl.db.transaction() as session:
            conn = await session.connection()
            wanted = list({n[0] for r in rows for n in r.numbers})
            owners: dict[str, int] = {}
            for e164, client_id in (
                (
                    await conn.execute(
                        select(ClientPhone.e164, ClientPhone.client_id)
                        .where(col(ClientPhone.e164).in_(wanted))
                        .order_by(col(ClientPhone.client_id))
                    )
                ).all()
                if wanted
                else []
            ):
                owners.setdefault(e164, client_id)
            self._merged_into_new = 0
            new, merges = self._sort(rows, owners, problems)
            created = await self._insert_new(session, new, now)
            merged = await self._merge(session, merges, now) + self._merged_into_new
            if problems:
                await conn.execute(
                    insert(ImportRowError),
                    [
                        {
                            "job_id": self.job.id,
                            "row": p.row,
                            "column": p.column[:200],
                            "message": p.message[:1000],
                        }
                        for p in problems
                    ],
                )
            job = await session.get(ImportJob, self.job.id)
            assert job is not None
            job.total_rows += seen
            job.committed_rows += seen
            job.last_row = last_row
            job.created += created
            job.merged += merged
            job.error_count += len(problems)
            session.add(job)
        # Only once the commit returned: a failed batch leaves the job as it was.
        self.job = job

    def _sort(
        self, rows: list[ParsedRow], owners: dict[str, int], problems: list[RowProblem]
    ) -> tuple[list[ParsedRow], dict[int, _Merge]]:
        """New clients, and rows that are someone already in the base or earlier in the file."""
        new: list[ParsedRow] = []
        in_batch: dict[str, ParsedRow] = {}
        merges: dict[int, _Merge] = {}
        report = self.options.on_duplicate == "report"
        for row in rows:
            known = next(((n, owners[n[0]]) for n in row.numbers if n[0] in owners), None)
            earlier = next(((n, in_batch[n[0]]) for n in row.numbers if n[0] in in_batch), None)
            if known is None and earlier is None:
                new.append(row)
                for n in row.numbers:
                    in_batch[n[0]] = row
                continue
            if report:
                number, other = known or earlier  # type: ignore[misc]
                who = (
                    f"client {other}" if known is not None else f"row {other.row} of this file"  # type: ignore[union-attr]
                )
                message = f"duplicate: {number[0]} already belongs to {who}"
                problems.append(RowProblem(row.row, self.phone_label, message))
                continue
            if known is not None:
                merge = merges.setdefault(known[1], _Merge(known[1]))
                merge.rows.append(row)
                for n in row.numbers:
                    if n[0] not in owners and all(n[0] != m[0] for m in merge.numbers):
                        merge.numbers.append(n)
                        owners[n[0]] = known[1]
            else:
                self._merged_into_new += 1
                target = earlier[1]  # type: ignore[index]
                _fill(target, row)
                for n in row.numbers:
                    if n[0] not in in_batch and n[0] not in owners:
                        target.numbers.append(n)
                        in_batch[n[0]] = target
        return new, merges

    async def _insert_new(self, session: AsyncSession, rows: list[ParsedRow], now: datetime) -> int:
        if not rows:
            return 0
        tl = self.tl
        conn = await session.connection()
        version = await current_version(session)
        defn = await tl.cache.get(session, version.id)  # type: ignore[arg-type]
        state = defn.initial
        tier = defn.tier_of(state)
        self._tiers.add(tier)
        ids = await _reserve_ids(conn, len(rows))
        await conn.execute(
            insert(Client),
            [
                {
                    "id": cid,
                    "name": r.name,
                    "company": r.company,
                    "email": r.email,
                    "timezone": r.timezone,
                    "segment_class": r.segment_class,
                    "custom": r.custom,
                    "owner_id": None,
                    "source": r.source or self.options.source,
                    "do_not_call": False,
                    "created_at": now,
                    "updated_at": now,
                    "workflow_version_id": version.id,
                    "state": state,
                    "tier": tier,
                    "attempts": 0,
                    "revision": 0,
                    "last_contact_at": None,
                    "last_outcome": None,
                }
                for cid, r in zip(ids, rows, strict=True)
            ],
        )
        await conn.execute(
            insert(ClientPhone),
            [
                {"client_id": cid, "e164": n[0], "raw": n[1], "label": n[2]}
                for cid, r in zip(ids, rows, strict=True)
                for n in r.numbers
            ],
        )
        await conn.execute(
            insert(TransitionRecord),
            [
                {
                    "client_id": cid,
                    "at": now,
                    "actor_id": self.options.actor_id,
                    "event": "enroll",
                    "from_state": "",
                    "to_state": state,
                    "from_tier": "",
                    "to_tier": tier,
                    "workflow_version_id": version.id,
                    "call_id": None,
                    "kpi": None,
                    "note": self.note,
                }
                for cid in ids
            ],
        )
        # The first follow-up, planned exactly as enroll_in plans it. Its time and wording
        # depend only on the client's zone, so each zone is planned once per batch.
        templates: dict[str, dict[str, object] | None] = {}
        followups = []
        for cid, r in zip(ids, rows, strict=True):
            tz = r.timezone or _number_zone(r.numbers[0][0], tl.settings.timezone)
            if tz not in templates:
                fu = plan(
                    PlanInput(
                        state=defn.states[state],
                        client=_Stub(tz),
                        attempts=0,  # type: ignore[arg-type]
                        now=now,
                        policy=tl.policy,
                        default_tz=tl.settings.timezone,
                        owner_id=None,
                        primary_e164=r.numbers[0][0],
                    )
                )
                templates[tz] = (
                    None
                    if fu is None
                    else {
                        c.name: getattr(fu, c.name)
                        for c in FollowUp.__table__.columns  # type: ignore[attr-defined]
                        if c.name not in ("id", "client_id")
                    }
                )
            template = templates[tz]
            if template is not None:
                followups.append({**template, "client_id": cid})
                due = template["due_at"]
                if self._earliest_due is None or due < self._earliest_due:  # type: ignore[operator]
                    self._earliest_due = due  # type: ignore[assignment]
        if followups:
            await conn.execute(insert(FollowUp), followups)
        return len(ids)

    async def _merge(self, session: AsyncSession, merges: dict[int, _Merge], now: datetime) -> int:
        if not merges:
            return 0
        clients = await session.exec(select(Client).where(col(Client.id).in_(list(merges))))
        for client in clients:
            merge = merges[client.id]  # type: ignore[index]
            for row in merge.rows:
                client.company = client.company or row.company
                client.email = client.email or row.email
                client.timezone = client.timezone or row.timezone
                for key, value in row.custom.items():
                    client.custom.setdefault(key, value)
            client.updated_at = now
            session.add(client)
            for e164, raw, label in merge.numbers:
                session.add(ClientPhone(client_id=client.id, e164=e164, raw=raw, label=label))  # type: ignore[arg-type]
        await session.flush()
        return sum(len(m.rows) for m in merges.values())

    async def announce(self) -> None:
        """Tell the queues (and the wake-up timer) that new follow-ups exist."""
        tl = self.tl
        if self._earliest_due is not None and tl.timer.scheduler.running:
            tl.timer.wake_at(self._earliest_due)
        for tier in self._tiers:
            try:
                await tl.bus.publish(
                    QUEUE_CHANNEL,
                    {"type": "queue_changed", "tier": tier, "owner_id": None, "client_id": None},
                )
            except Exception:  # queues are queries; a lost nudge only delays a refresh
                pass


_ZONES: dict[tuple[str, str], str] = {}


def _number_zone(e164: str, default_tz: str) -> str:
    # phonenumbers maps zones by prefixes of at most 9 digits (TIMEZONE_LONGEST_PREFIX), so
    # numbers sharing their first 9 digits share a zone: 1,000,000 rows, a few thousand parses.
    key = (e164[:10], default_tz)
    zone = _ZONES.get(key)
    if zone is None:
        if len(_ZONES) > 100_000:
            _ZONES.clear()
        zone = _ZONES[key] = client_timezone(_Stub(None), e164, default_tz)
    return zone


async def _reserve_ids(conn: Any, n: int) -> list[int]:
    """Client ids for ``n`` new rows, so they can go in one executemany without RETURNING
    (SQLAlchemy inserts row by row on SQLite when RETURNING must keep the order)."""
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            select(func.nextval(literal_column("'clients_id_seq'"))).select_from(
                func.generate_series(1, n)
            )
        )
        return sorted(rows.scalars().all())
    # SQLite: our write transaction holds the only write lock from its first write to its
    # commit, and a WAL reader whose snapshot went stale cannot write (SQLITE_BUSY), so
    # max(id) read here cannot be taken by anyone else before we insert.
    top = (await conn.execute(select(func.max(Client.id)))).scalar() or 0
    return list(range(top + 1, top + n + 1))


@dataclass(frozen=True)
class _Stub:
    """What the planner reads of a client: its id and its recorded zone."""

    timezone: str | None
    id: int = 0


def _fill(target: ParsedRow, row: ParsedRow) -> None:
    target.company = target.company or row.company
    target.email = target.email or row.email
    target.timezone = target.timezone or row.timezone
    for key, value in row.custom.items():
        target.custom.setdefault(key, value)
