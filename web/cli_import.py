"""``tierline import contacts FILE.csv``: the terminal side of engine.importer.

Exit status: 0 every row imported (or merged), 3 finished but some rows were refused (they
are listed, and all of them go to --errors-csv), 1 the file was refused (nothing written),
130 interrupted (run the same command again: it resumes after the last committed batch).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine.errors import InvalidInput
from engine.importer import ImportOptions, ImportProgress, ImportReport, job_errors
from engine.importer import import_contacts as run_import
from engine.service import Tierline
from engine.settings import Settings

SHOWN_ERRORS = 20


def add_import_parser(subparsers: Any) -> None:
    """Adds ``import contacts`` to the ``tierline`` command (called from web/cli.py)."""
    imp = subparsers.add_parser("import", help="bring data in").add_subparsers(
        required=True, metavar="WHAT"
    )
    contacts = imp.add_parser(
        "contacts",
        help="import contacts from a CSV file (UTF-8 or Windows-1251)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    contacts.add_argument("file", type=Path)
    contacts.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="which column holds a field: name, phone, phone2, company, email, timezone, "
        "segment_class, source, or custom.KEY (e.g. --map custom.industry=Industry)",
    )
    contacts.add_argument(
        "--on-duplicate",
        choices=["merge", "report"],
        default="merge",
        help="a number already in the base (or earlier in the file): add the row's new "
        "numbers and fields to that client (merge), or refuse the row (report)",
    )
    contacts.add_argument("--batch", type=int, default=1000, help="rows per transaction")
    contacts.add_argument("--delimiter", help="default: guessed from the header")
    contacts.add_argument("--errors-csv", type=Path, help="write every refused row here")
    contacts.add_argument("--quiet", action="store_true", help="no progress bar")
    contacts.set_defaults(run=import_contacts)


def parse_map(entries: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for entry in entries:
        field, sep, column = entry.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise InvalidInput(f"--map {entry!r}: expected FIELD=COLUMN", field="map")
        mapping[field.strip()] = column.strip()
    return mapping


class ProgressBar:
    """One redrawn line on a terminal; a line per 10 % when the output is a file or pipe."""

    def __init__(self, out: TextIO, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.tty = out.isatty()
        self.last_at = time.monotonic()
        self.last_rows: int | None = None
        self.rate = 0.0
        self.last_decile = -1

    def __call__(self, p: ImportProgress) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.last_rows is not None:  # rows/s of this run (a resumed job starts mid-way)
            instant = (p.rows_done - self.last_rows) / max(now - self.last_at, 1e-6)
            self.rate = instant if not self.rate else 0.8 * self.rate + 0.2 * instant
        self.last_at, self.last_rows = now, p.rows_done
        pct = 100.0 * p.bytes_read / p.total_bytes if p.total_bytes else 100.0
        rate = self.rate
        filled = int(pct / 100 * 30)
        text = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {pct:5.1f}%  {p.rows_done:,} rows  "
            f"{rate:,.0f} rows/s  created {p.created:,}  merged {p.merged:,}  "
            f"refused {p.errors:,}"
        )
        if self.tty:
            self.out.write("\r" + text)
            self.out.flush()
        elif int(pct // 10) > self.last_decile:
            self.last_decile = int(pct // 10)
            print(text, file=self.out, flush=True)

    def done(self) -> None:
        if self.tty and not self.quiet:
            self.out.write("\n")
            self.out.flush()


def import_contacts(settings: Settings, args: argparse.Namespace) -> int:
    options = ImportOptions(
        mapping=parse_map(args.map),
        on_duplicate=args.on_duplicate,
        batch_size=args.batch,
        delimiter=args.delimiter,
        source=f"import:{args.file.name}"[:64],
    )
    if not args.file.is_file():
        raise InvalidInput(f"{args.file} is not a file", field="file")
    bar = ProgressBar(sys.stderr, quiet=args.quiet)
    try:
        report, errors = asyncio.run(_run(settings, args.file, options, bar, args.errors_csv))
    except (KeyboardInterrupt, asyncio.CancelledError):
        bar.done()
        print(
            "tierline: interrupted; committed batches are kept. Run the same command again "
            "to resume after them.",
            file=sys.stderr,
        )
        return 130
    bar.done()
    resumed = f" (resumed after row {report.resumed_after_row})" if report.resumed_after_row else ""
    print(
        f"Import job {report.job_id}{resumed}: {report.rows:,} rows, {report.created:,} "
        f"clients created, {report.merged:,} merged, {report.errors:,} refused "
        f"(encoding {report.encoding})."
    )
    for row, column, message in errors[:SHOWN_ERRORS]:
        print(f"  row {row}, column {column}: {message}", file=sys.stderr)
    if report.errors > SHOWN_ERRORS:
        where = (
            f"all of them are in {args.errors_csv}"
            if args.errors_csv
            else ("use --errors-csv FILE to get all of them")
        )
        print(f"  ... and {report.errors - SHOWN_ERRORS:,} more; {where}", file=sys.stderr)
    return 3 if report.errors else 0


async def _run(
    settings: Settings,
    path: Path,
    options: ImportOptions,
    bar: ProgressBar,
    errors_csv: Path | None,
) -> tuple[ImportReport, list[tuple[int, str, str]]]:
    tl = Tierline.build(settings)
    await tl.start(timers=False)
    try:
        report = await run_import(tl, path, options, progress=bar)
        async with tl.db.session() as db:
            rows = await job_errors(db, report.job_id)
        errors = [(e.row, e.column, e.message) for e in rows]
        if errors_csv is not None:
            with errors_csv.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["row", "column", "message"])
                writer.writerows(errors)
        return report, errors
    finally:
        await tl.stop()
