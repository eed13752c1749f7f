"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import engine.models  # noqa: F401


async def test_models_and_migrations_agree(db):
    await db.migrate()

    def diff(connection):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(ctx, SQLModel.metadata)

    async with db.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_migrate_is_idempotent_and_nothing_is_pending(db):
    await db.migrate()
    await db.migrate()
    assert await db.pending_migrations() == []
