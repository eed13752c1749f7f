"""Bench: import a generated CSV, then count and page a filter over the imported base.

    python -m bench.import_filters [--quick] [--rows N] [--backend sqlite|postgres|both]

1,000,000 rows by default (--quick: 50,000). Each backend gets a fresh database (a temp
SQLite file; a throwaway PostgreSQL database on TIERLINE_TEST_POSTGRES, dropped after).
Prints numbers only, one "backend metric value" per line. Peak RSS is the process's
(``ru_maxrss``), so with --backend both the second figure includes the first run.
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

from engine.bus import LocalBus
from engine.filters import Context, count_matching, page_matching
from engine.importer import ImportOptions, import_contacts
from engine.service import Tierline
from engine.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "TIERLINE_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
INDUSTRIES = ["retail", "banking", "logistics", "it", "construction", "food", "media"]
CRITERIA = {
    "all": [
        {"field": "tier", "op": "eq", "value": "cold"},
        {"field": "custom.industry", "op": "in", "value": ["retail", "it"]},
        {"not": {"field": "company", "op": "contains", "value": "7"}},
        {"field": "custom.employees", "op": "gte", "value": 50},
    ]
}


def generate(path: Path, rows: int) -> None:
    rnd = random.Random(42)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("Full name,Phone,Company,E-mail,Industry,Employees\n")
        for i in range(rows):
            fh.write(
                f"Client {i},+7916{i:07d},Company {rnd.randrange(10_000)},c{i}@example.com,"
                f"{rnd.choice(INDUSTRIES)},{rnd.randrange(1, 1000)}\n"
            )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def run_backend(name: str, url: str, csv_path: Path, rows: int, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, database_url=url, default_region="RU")
    tl = Tierline.build(settings, bus=LocalBus())
    await tl.start(timers=False)
    try:
        started = time.perf_counter()
        report = await import_contacts(
            tl,
            csv_path,
            ImportOptions(mapping={"custom.industry": "Industry", "custom.employees": "Employees"}),
        )
        elapsed = time.perf_counter() - started
        assert report.created == rows, report
        print(f"{name} import_rows {rows}")
        print(f"{name} import_seconds {elapsed:.1f}")
        print(f"{name} import_rows_per_s {rows / elapsed:.0f}")
        print(f"{name} peak_rss_mib {peak_rss_mib():.0f}")
        ctx = Context(now=tl.clock.now(), tz=settings.timezone)
        counts, pages, matched = [], [], 0
        for _ in range(3):
            async with tl.db.session() as db:
                t0 = time.perf_counter()
                matched = await count_matching(db, CRITERIA, ctx)
                t1 = time.perf_counter()
                await page_matching(db, CRITERIA, ctx, limit=50)
                t2 = time.perf_counter()
            counts.append(t1 - t0)
            pages.append(t2 - t1)
        print(f"{name} filter_matches {matched}")
        print(f"{name} filter_count_ms {statistics.median(counts) * 1000:.0f}")
        print(f"{name} filter_first_page_ms {statistics.median(pages) * 1000:.1f}")
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
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="tierline-bench-") as tmp:
        tmp_path = Path(tmp)
        csv_path = tmp_path / "contacts.csv"
        generate(csv_path, rows)
        if args.backend in ("sqlite", "both"):
            url = f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}"
            await run_backend("sqlite", url, csv_path, rows, tmp_path)
        if args.backend in ("postgres", "both"):
            db_name = f"tierline_bench_{uuid.uuid4().hex[:8]}"
            await pg_admin(f'CREATE DATABASE "{db_name}"')
            try:
                url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{db_name}"
                await run_backend("postgres", url, csv_path, rows, tmp_path)
            finally:
                await pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
