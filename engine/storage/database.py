"""The database: one async engine, sessions, and schema migrations.

The same code runs on SQLite (the default, one process) and on PostgreSQL (several
nodes); only the URL differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import Unavailable
from engine.storage.lane import ThreadLane
from engine.storage.urgency import Urgency

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            _ensure_parent_dir(url)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        # SQLite has one writer at a time; queueing writers here, rather than letting them
        # meet SQLITE_BUSY inside the driver, keeps every write short and in order.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._sync_engine: Engine | None = None
        # SQLite's hot-path reads and writes each run in one thread of their own (lane.py
        # says why); writes apart, so a pop's read never waits behind a commit. The writer
        # starts nothing new while a screen pop is in flight (urgency.py says why).
        self.urgency = Urgency()
        self._reads = ThreadLane("tierline-db-read")
        self._writes = ThreadLane("tierline-db-write", yields_to=self.urgency)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    def session(self) -> AsyncSession:
        return self._sessions()

    def hold_writes(self) -> Callable[..., None]:
        """From a screen pop's read to its push: meanwhile the writer thread starts no new
        transaction (for a few milliseconds at most; urgency.py says why), until the returned
        function is called (with any arguments: a task's done callback can end it)."""
        return self.urgency.hold()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on exit, or rolls back on any exception."""
        if self._write_lock is None:
            async with self._sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._sessions() as session, session.begin():
            yield session

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only ``fn(connection)`` on a synchronous Core connection, in one hop.

        On SQLite every statement through aiosqlite is a round trip between threads (~250 µs,
        measured: a screen pop made 82 of them); here the whole read runs in the reader
        thread on its own connection (WAL lets it read beside the writer). On PostgreSQL asyncpg is
        cheap per statement, so ``fn`` runs on the async connection's sync facade. A Core
        connection, not an ORM session: opening and closing a session cost ~90 µs more, and
        the callers (the screen pop, the call log) are the hot paths that want no entities.
        """
        if not self.is_sqlite:
            return await self._read_async(fn)  # no task of its own: nothing to start early
        return await self.read_soon(fn)

    def read_soon(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        """:meth:`read`, under way before the caller's next ``await``: on SQLite ``fn`` is in
        the reader thread's queue when this returns (a task would first wait its turn on a busy
        loop: 0.5 ms of a slow pop's 6). Cancel the future to skip a read still queued."""
        if not self.is_sqlite:
            return asyncio.ensure_future(self._read_async(fn))
        engine = self._sync()

        def run() -> T:
            with engine.connect() as conn:
                return fn(conn)

        return self._reads.submit(run)

    async def _read_async(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in one transaction, committed on return.

        The write twin of :meth:`read`: on SQLite the whole transaction is one hop to the
        writer thread, taken in turn with every other writer (the same lock as
        :meth:`transaction`).
        """
        if not self.is_sqlite:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)
        engine = self._sync()

        def run() -> T:
            with engine.begin() as conn:
                return fn(conn)

        assert self._write_lock is not None
        async with self._write_lock:
            return await self._writes.run(run)

    def _sync(self) -> Engine:
        if self._sync_engine is None:
            self._sync_engine = create_engine(
                self.url.replace("+aiosqlite", ""), connect_args={"timeout": 30}
            )
            event.listen(self._sync_engine, "connect", _sqlite_pragmas)
        return self._sync_engine

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except OSError as exc:
            raise Unavailable(f"cannot reach the database at {self.safe_url}: {exc}") from exc

    async def pending_migrations(self) -> list[str]:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_pending)

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    async def dispose(self) -> None:
        await self._reads.stop()
        await self._writes.stop()
        await self.engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _pending(connection: Connection) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(connection))
    current = set(MigrationContext.configure(connection).get_current_heads())
    pending = []
    for rev in script.walk_revisions():
        if rev.revision in current:
            break
        pending.append(rev.revision)
    return pending


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (pops, dashboards) run while a writer commits.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _ensure_parent_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:" and not path.startswith(":"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
