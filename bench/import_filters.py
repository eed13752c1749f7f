"""Bench: import a generated CSV, then count and page filters over the imported base.

    python -m bench.import_filters [--quick] [--rows N] [--backend sqlite|postgres|both]
                                   [--explain] [--keep]

1,000,000 rows by default (--quick: 50,000). Each backend gets a fresh database (a temp
SQLite file; a throwaway PostgreSQL database on TIERLINE_TEST_POSTGRES, dropped after
unless --keep). Peak RSS is the process's (``ru_maxrss``), so with --backend both the
second figure includes the first run.

Two measurements per backend, each the median of 3 runs of count + first page (50 rows):

1. issue #5's filter right after the import, as a supervisor would run it at once
   ("backend metric value" lines);
2. after ``filter_cases.spread`` has moved the base along the workflow, and after the
   statistics are refreshed (what autovacuum does within a minute of such a change), each
   filter of ``filter_cases.CASES`` (a markdown table). --explain prints their plans.
   PostgreSQL also prints the sizes of the clients table and of each of its indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.filter_cases import CASES, CSV_HEADER, CSV_MAPPING, ISSUE5, csv_row, explain, spread
from engine.bus import LocalBus
from engine.filters import Context, count_matching, page_matching
from engine.importer import ImportOptions, import_contacts
from engine.service import Tierline
from engine.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "TIERLINE_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def generate(path: Path, rows: int) -> None:
    rnd = random.Random(42)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(CSV_HEADER)
        for i in range(rows):
            fh.write(csv_row(i, rows, rnd))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def timed(tl: Tierline, criteria: object, ctx: Context) -> tuple[int, float, float]:
    """Matches, median count seconds, median first-page seconds."""
    counts, pages, matched = [], [], 0
    for _ in range(3):
        async with tl.db.session() as db:
            t0 = time.perf_counter()
            matched = await count_matching(db, criteria, ctx)
            t1 = time.perf_counter()
            await page_matching(db, criteria, ctx, limit=50)
            t2 = time.perf_counter()
        counts.append(t1 - t0)
        pages.append(t2 - t1)
    return matched, statistics.median(counts), statistics.median(pages)


async def refresh_statistics(tl: Tierline) -> None:
    async with tl.db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE clients"))
        else:
            await conn.execute(text("ANALYZE"))
            await conn.commit()


async def print_sizes(tl: Tierline, name: str) -> None:
    if tl.db.is_sqlite:
        return  # SQLite has no per-index sizes without the optional dbstat table
    sql = (
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'clients'::regclass "
        "UNION ALL SELECT 'clients (table)', pg_relation_size('clients') ORDER BY 1"
    )
    async with tl.db.engine.connect() as conn:
        for relname, size in await conn.execute(text(sql)):
            print(f"{name} size_mib {relname} {size / 2**20:.1f}")


async def run_backend(
    name: str, url: str, csv_path: Path, rows: int, args: argparse.Namespace
) -> None:
    settings = Settings(data_dir=csv_path.parent, database_url=url, default_region="RU")
    tl = Tierline.build(settings, bus=LocalBus())
    await tl.start(timers=False)
    try:
        started = time.perf_counter()
        report = await import_contacts(tl, csv_path, ImportOptions(mapping=CSV_MAPPING))
        elapsed = time.perf_counter() - started
        assert report.created == rows, report
        print(f"{name} import_rows {rows}")
        print(f"{name} import_seconds {elapsed:.1f}")
        print(f"{name} import_rows_per_s {rows / elapsed:.0f}")
        print(f"{name} peak_rss_mib {peak_rss_mib():.0f}")
        ctx = Context(now=tl.clock.now(), tz=settings.timezone)
        matched, count_s, page_s = await timed(tl, ISSUE5, ctx)
        print(f"{name} filter_matches {matched}")
        print(f"{name} filter_count_ms {count_s * 1000:.0f}")
        print(f"{name} filter_first_page_ms {page_s * 1000:.1f}")

        started = time.perf_counter()
        await spread(tl, ctx.now)
        await refresh_statistics(tl)
        print(f"{name} spread_and_analyze_seconds {time.perf_counter() - started:.1f}")
        await print_sizes(tl, name)
        print(f"\n| {name} filter | matches | count ms | first page ms |\n|---|---:|---:|---:|")
        for label, criteria in CASES.items():
            matched, count_s, page_s = await timed(tl, criteria, ctx)
            print(f"| {label} | {matched:,} | {count_s * 1000:.0f} | {page_s * 1000:.1f} |")
        print()
        if args.explain:
            for label, criteria in CASES.items():
                async with tl.db.session() as db:
                    print(f"-- {name} {label}", *await explain(db, criteria, ctx), sep="\n")
    finally:
        await tl.stop()


async def pg_admin(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50,000 rows")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--explain", action="store_true", help="print each filter's plans")
    parser.add_argument("--keep", action="store_true", help="keep the databases; print where")
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    keep = Path(tempfile.mkdtemp(prefix="tierline-bench-")) if args.keep else None
    with tempfile.TemporaryDirectory(prefix="tierline-bench-") as tmp:
        tmp_path = keep or Path(tmp)
        csv_path = tmp_path / "contacts.csv"
        generate(csv_path, rows)
        if args.backend in ("sqlite", "both"):
            url = f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}"
            await run_backend("sqlite", url, csv_path, rows, args)
            if keep:
                print(f"sqlite kept {url}")
        if args.backend in ("postgres", "both"):
            db_name = f"tierline_bench_{uuid.uuid4().hex[:8]}"
            await pg_admin(f'CREATE DATABASE "{db_name}"')
            url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{db_name}"
            try:
                await run_backend("postgres", url, csv_path, rows, args)
            finally:
                if keep:
                    print(f"postgres kept {url}")
                else:
                    await pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
