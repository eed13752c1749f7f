"""WAL checkpoints off the committing connection (engine/storage/checkpoint.py), on real
SQLite files."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection

from engine.storage.database import Database

ROW = 4000  # bytes a row: 500 rows are ~500 WAL pages


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "tierline-db-checkpoint"]


async def _fill(db: Database, rows: int) -> None:
    def write(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE IF NOT EXISTS blob (id INTEGER PRIMARY KEY, v BLOB)"))
        for _ in range(rows):
            conn.execute(text("INSERT INTO blob (v) VALUES (:v)"), {"v": os.urandom(ROW)})

    for _ in range(4):  # several commits, as a working day makes
        await db.write(write)


async def test_commits_do_not_checkpoint_the_thread_does(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite+aiosqlite:///{path}", checkpoint_every=3600)  # the thread idles
    try:
        assert await db.read(lambda c: c.execute(text("PRAGMA wal_autocheckpoint")).scalar()) == 0
        async with db.engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
        assert mode == 0  # the async engine's connections too
        before = path.stat().st_size
        await _fill(db, 500)  # ~8 MB: SQLite's own autocheckpoint would have run twice
        assert path.stat().st_size == before  # nothing copied into the database file
        assert path.with_name("wal.db-wal").stat().st_size > 7_000_000
        assert db.checkpointer is not None
        busy, frames, copied = await asyncio.to_thread(_checkpoint_now, db)
        assert busy == 0 and frames == copied > 1500
        assert path.stat().st_size > before + 7_000_000
    finally:
        await db.dispose()


def _checkpoint_now(db: Database) -> tuple[int, int, int]:
    import sqlite3

    assert db.checkpointer is not None
    conn = sqlite3.connect(db.checkpointer.path)
    try:
        return db.checkpointer.checkpoint(conn)
    finally:
        conn.close()


async def test_the_thread_checkpoints_on_its_period_and_stops_with_the_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite+aiosqlite:///{path}", checkpoint_every=0.02)
    assert _threads() == []  # nothing runs before the database is used
    try:
        before = path.stat().st_size if path.exists() else 0
        await _fill(db, 200)
        assert _threads() == ["tierline-db-checkpoint"]
        for _ in range(300):
            if path.stat().st_size > before + 2_500_000:
                break
            await asyncio.sleep(0.01)
        assert path.stat().st_size > before + 2_500_000  # the pages reached the database file
        assert db.checkpointer is not None and db.checkpointer.runs > 0
        rows = await db.read(lambda c: c.execute(text("SELECT count(*) FROM blob")).scalar())
        assert rows == 800
    finally:
        await db.dispose()
    assert _threads() == []


async def test_a_checkpoint_failing_is_retried_and_loses_nothing(tmp_path: Path, caplog) -> None:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite+aiosqlite:///{path}", checkpoint_every=0.01)
    assert db.checkpointer is not None
    real = db.checkpointer.checkpoint
    failures = 0

    def flaky(conn):  # type: ignore[no-untyped-def]
        nonlocal failures
        if failures < 3:
            failures += 1
            raise __import__("sqlite3").OperationalError("disk I/O error")
        return real(conn)

    db.checkpointer.checkpoint = flaky  # type: ignore[method-assign]
    try:
        await _fill(db, 50)
        for _ in range(300):
            if db.checkpointer.runs:
                break
            await asyncio.sleep(0.01)
        assert failures == 3 and db.checkpointer.runs > 0
        assert "WAL checkpoint" in caplog.text and "will retry" in caplog.text
        rows = await db.read(lambda c: c.execute(text("SELECT count(*) FROM blob")).scalar())
        assert rows == 200
    finally:
        await db.dispose()


async def test_in_memory_databases_keep_sqlites_own_checkpoints() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    try:
        assert db.checkpointer is None
        assert await db.read(lambda c: c.execute(text("PRAGMA wal_autocheckpoint")).scalar()) > 0
    finally:
        await db.dispose()
