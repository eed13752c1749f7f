"""Shared fixtures: real SQLite and PostgreSQL, a fake clock, the engine facade.

PostgreSQL is at TIERLINE_TEST_POSTGRES (default: the CI server). Under CI=true an
unreachable PostgreSQL or Redis fails the run; elsewhere those tests skip, saying why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from engine.bus import LocalBus
from engine.clock import FakeClock
from engine.service import Tierline
from engine.settings import Settings
from engine.storage.database import Database

PG_ADMIN_URL = os.environ.get(
    "TIERLINE_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TIERLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"

# Monday 23 November 2026, 09:00 Moscow time.
START = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def service_missing(what: str, why: object) -> None:
    """A missing service fails under CI and skips (loudly) on a developer's machine."""
    message = f"{what} is not reachable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service is a failure)")
    pytest.skip(message)


async def _pg_reachable() -> str | None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return str(exc)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, dropped at the end of the run."""
    problem = asyncio.run(_pg_reachable())
    if problem:
        service_missing("PostgreSQL at " + PG_ADMIN_URL, problem)
    name = f"tierline_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


async def _migrate(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await db.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test: migrations run once, not per test."""
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _truncate_all(db: Database) -> None:
    async with db.engine.begin() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
        ).scalars()
        names = ", ".join(f'"{t}"' for t in tables)
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgres":
        return request.getfixturevalue("pg_database")
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "tierline.db"
    shutil.copy(template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    if not database.is_sqlite:
        await _truncate_all(database)
    yield database
    # Whatever the test started has stopped by now (the app's cleanup, the service's stop): a
    # connection still checked out belongs to a task left running, and only the garbage
    # collector would close it ("unclosed connection" warnings, a pool running dry).
    leaked = database.engine.pool.checkedout()
    await database.dispose()
    assert leaked == 0, f"{leaked} database connection(s) still checked out after the test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        pbx_secret="test-pbx-secret",
        session_secret="test-session-secret-0123456789abcdef",
        default_region="RU",
        timezone="Europe/Moscow",
    )


@pytest.fixture
async def tl(settings: Settings, db: Database, clock: FakeClock) -> AsyncIterator[Tierline]:
    service = Tierline.build(settings, clock=clock, bus=LocalBus(), db=db)
    await service.start(timers=False)
    yield service
    await service.timer.stop()
    await service.bus.close()


@pytest.fixture
def fake_pbx():
    from cti_adapter.fake import FakePbx

    return FakePbx()


@pytest.fixture
async def web_client(aiohttp_client, tl: Tierline, fake_pbx):  # type: ignore[no-untyped-def]
    """A real HTTP client against the app on a real socket; the engine is ``tl``."""
    from web.app import create_app

    client = await aiohttp_client(create_app(tl, pbx=fake_pbx, start_engine=False))
    yield client
    # pytest-aiohttp closes its clients after ``tl`` and ``db`` are gone (its fixture was set
    # up first): stop the app here, while the database its tasks use is still open.
    await client.close()


async def sign_in(client, username: str, password: str = "correct horse battery") -> str:  # type: ignore[no-untyped-def]
    """Sign in through the public contract; returns the CSRF token."""
    resp = await client.post("/api/session", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["csrf_token"]
