"""Extension -> the operator on it: the pop path's first question, answered from a cache.

The directory is asked on every ringing and dialing event (the pop path and the call log
both need the operator); users change rarely, so the answer is cached per extension and
refreshed behind the pops. No aiohttp here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.models import User
from engine.storage.database import Database

log = logging.getLogger("tierline.cti")


class OperatorDirectory:
    """Extension -> the active user on it, cached per extension for ``ttl`` seconds.

    Every ringing event asks this; users change rarely. An extension asked for the first
    time is read at once (in the worker thread, Database.read); after that the answer is
    served from the cache, and once older than ``ttl`` it is served while a background
    sweep refreshes every extension the cache holds, so a pop never waits for the directory
    twice, and the whole cache shares one expiry: one sweep a TTL, not one read per stale
    extension as its call comes (at 100 pops/s across 1,000 operators that was a thousand
    reads a minute in the pops' reader lane, against ten now). Misses are cached
    too: a trunk or a ring-group extension with nobody on it costs no query per event.
    :meth:`invalidate` forgets entries: the users API announces every change of a user's
    extension, tier or state on the bus (``USERS_CHANNEL``), and each node's pipeline calls
    it, so the TTL is only the safety net for a change made behind the API. Measured: reloading
    a whole 10,000-user department every few seconds stalled the event loop for a second
    (a CPU-bound worker thread starves the loop of the GIL); one row at a time does not.
    """

    # Extensions per refresh read. The reads share the pops' lane, which runs its calls in
    # turn: a read of 500 took 3.7 ms (bench/pop_latency.py's 1,000 operators), a wait for
    # every pop queued behind it; 100 take under 1 ms.
    REFRESH_BATCH = 100

    def __init__(
        self, db: Database, *, ttl: float = 60.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.ttl = ttl
        self._now = now
        self._entries: dict[str, tuple[float, Operator | None]] = {}
        self._stale: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None
        # Bumped by every invalidate: a read that began before one may hold the old answer,
        # and must not put it back in the cache.
        self._invalidations = 0

    async def by_extension(self, extension: str) -> Operator | None:
        known, user = self.cached(extension)
        return user if known else await self._load(extension)

    def cached(self, extension: str) -> tuple[bool, Operator | None]:
        """(True, the operator or None) when the extension is in the cache, stale or not;
        (False, None) when only a read can tell. Lets a pop's read start without a pause."""
        hit = self._entries.get(extension)
        if hit is None:
            return False, None
        if hit[0] <= self._now() and self._refresher is None:
            # Stale: served as is, while one background sweep refreshes every extension
            # known (REFRESH_BATCH a read), each with the sweep's expiry.
            self._stale.update(self._entries)
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())
        return True, hit[1]

    async def _load(self, extension: str) -> Operator | None:
        began = self._invalidations
        found = await self.db.read(lambda s: _active_users(s, [extension]))
        user = found.get(extension)
        if began == self._invalidations:
            self._entries[extension] = (self._now() + self.ttl, user)
        return user

    async def _refresh(self) -> None:
        expires = self._now() + self.ttl
        try:
            while self._stale:
                wanted = list(self._stale)[: self.REFRESH_BATCH]
                self._stale.difference_update(wanted)
                began = self._invalidations
                found = await self.db.read(partial(_active_users, extensions=wanted))
                if began != self._invalidations:
                    continue  # left stale: the next ask sweeps again, after the change
                for extension in wanted:
                    self._entries[extension] = (expires, found.get(extension))
        except Exception as exc:
            log.warning("operator directory not refreshed: %s", exc)
            self._stale.clear()
        finally:
            self._refresher = None

    async def warm(self) -> int:
        """Cache every active operator's extension, REFRESH_BATCH a read (at start-up: the
        first ring of each operator after a restart then pops without a directory read
        first). Fills only what is not cached yet; a page overtaken by an invalidation is
        left out, to be read when asked. Returns the extensions cached."""
        after, cached = 0, 0
        while True:
            began = self._invalidations
            page = await self.db.read(
                partial(_operators_after, after=after, limit=self.REFRESH_BATCH)
            )
            if not page:
                return cached
            after = page[-1].id
            if began != self._invalidations:
                continue
            expires = self._now() + self.ttl
            for user in page:
                if user.extension not in self._entries:
                    self._entries[user.extension] = (expires, user)
                    cached += 1

    def invalidate(self, extension: str | None = None) -> None:
        self._invalidations += 1
        if extension is None:
            self._entries.clear()
        else:
            self._entries.pop(extension, None)


_USERS = User.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Operator:
    """What the pop path needs of the user on an extension, as a plain record: building
    SQLModel entities in a refresh of 500 extensions held the GIL for ~25 ms, a stall every
    TTL in the middle of the pops."""

    id: int
    role: str
    tier: str | None
    extension: str


_OPERATOR = sa.select(_USERS.c.id, _USERS.c.role, _USERS.c.tier, _USERS.c.extension).where(
    _USERS.c.active.is_(True)
)


def _active_users(conn: Connection, extensions: list[str]) -> dict[str, Operator]:
    rows = conn.execute(_OPERATOR.where(_USERS.c.extension.in_(extensions)).order_by(_USERS.c.id))
    found: dict[str, Operator] = {}
    for row in rows:
        found.setdefault(row.extension, Operator(row.id, row.role, row.tier, row.extension))
    return found


def _operators_after(conn: Connection, after: int, limit: int) -> list[Operator]:
    """The next ``limit`` active users with an extension, by id."""
    rows = conn.execute(
        _OPERATOR.where(_USERS.c.id > after, _USERS.c.extension.is_not(None))
        .order_by(_USERS.c.id)
        .limit(limit)
    )
    return [Operator(row.id, row.role, row.tier, row.extension) for row in rows]
