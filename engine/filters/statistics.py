"""Planner statistics after bulk writes, so that filters get the right plan at once.

PostgreSQL picks a filter's plan from its statistics of the clients table, which only
ANALYZE (or autovacuum, up to a minute later, if it is on) refreshes. Straight after an
import it believed "tier = 'cold'" matched 71 rows when all 200,000 did, and paged by
sorting every match: 1.7 s for a first page at a million clients that takes 6 ms once
the statistics are right (bench/import_filters.py). SQLite keeps no statistics unless
asked, and its default guesses page these queries well, so it is left be.
"""

from __future__ import annotations

from sqlalchemy import text

from engine.storage.database import Database

# Below this many written rows the estimates barely move (autovacuum waits for 10% of the
# table); ANALYZE samples a fixed 30,000 rows, a fraction of a second at any table size.
MIN_ROWS = 1000


async def refresh_statistics(db: Database, *, changed_rows: int) -> bool:
    """ANALYZE the clients tables on PostgreSQL after ``changed_rows`` were written in bulk."""
    if changed_rows < MIN_ROWS or db.engine.dialect.name != "postgresql":
        return False
    async with db.engine.begin() as conn:
        await conn.execute(text("ANALYZE clients, client_phones"))
    return True
