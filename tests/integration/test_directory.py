"""The operator directory (``cti_adapter/directory.py``): who is on an extension, cached.

Changes are made behind the directory's back (plain SQL, as a change outside the users API
would be), so what each test sees is the cache's own behaviour: a fresh answer is served from
memory, a stale one is served at once while one background read refreshes it, a miss is
cached too, and ``invalidate`` forgets. The clock is injected: a TTL passes in no time.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from cti_adapter.directory import Operator, OperatorDirectory
from engine.models import User
from engine.service import Tierline
from tests.integration.helpers import make_user

USERS = User.__table__  # type: ignore[attr-defined]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _set(tl: Tierline, username: str, **values: object) -> None:
    async with tl.db.engine.begin() as conn:
        await conn.execute(sa.update(USERS).where(USERS.c.username == username).values(**values))


async def _operators(tl: Tierline, count: int, first: int = 2000) -> None:
    async with tl.db.engine.begin() as conn:
        await conn.execute(
            USERS.insert(),
            [
                {
                    "username": f"op{i}", "display_name": f"Op {i}", "password_hash": "x",
                    "role": "operator", "tier": "cold", "extension": str(first + i),
                    "active": True, "norms": {}, "created_at": tl.clock.now(),
                }
                for i in range(count)
            ],
        )  # fmt: skip


async def _refreshed(directory: OperatorDirectory) -> None:
    refresher = directory._refresher
    assert refresher is not None, "a stale answer starts a background refresh"
    await refresher


async def test_answers_from_memory_until_the_ttl(tl: Tierline) -> None:
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    clock = Clock()
    directory = OperatorDirectory(tl.db, ttl=60, now=clock)

    found = await directory.by_extension("101")
    assert found == Operator(olga.id, "operator", "cold", "101")

    await _set(tl, "olga", tier="sales")  # behind the directory's back
    clock.now += 59
    assert (await directory.by_extension("101")).tier == "cold"  # type: ignore[union-attr]
    assert directory._refresher is None  # fresh: no read at all


async def test_a_stale_answer_is_served_while_one_read_refreshes_it(tl: Tierline) -> None:
    await make_user(tl, "olga", tier="cold", extension="101")
    await make_user(tl, "pavel", tier="cold", extension="102")
    clock = Clock()
    directory = OperatorDirectory(tl.db, ttl=60, now=clock)
    await directory.by_extension("101")
    await directory.by_extension("102")

    await _set(tl, "olga", tier="sales")
    await _set(tl, "pavel", active=False)
    clock.now += 61
    # Stale: the old answers at once, never a wait on the database ...
    assert (await directory.by_extension("101")).tier == "cold"  # type: ignore[union-attr]
    assert (await directory.by_extension("102")) is not None
    refresher = directory._refresher
    # ... and one refresh for both: the second stale ask joined the first's.
    assert refresher is not None and directory._stale == {"101", "102"}
    await _refreshed(directory)

    assert (await directory.by_extension("101")).tier == "sales"  # type: ignore[union-attr]
    assert await directory.by_extension("102") is None  # deactivated: no pops for him
    assert directory._refresher is None


async def test_a_miss_is_cached_and_invalidate_forgets_it(tl: Tierline) -> None:
    clock = Clock()
    directory = OperatorDirectory(tl.db, ttl=60, now=clock)
    assert await directory.by_extension("155") is None  # a trunk, a ring group: nobody

    nina = await make_user(tl, "nina", tier="sales", extension="155")
    assert await directory.by_extension("155") is None  # cached, as a hit would be

    directory.invalidate("155")  # what the users API's announcement does
    assert await directory.by_extension("155") == Operator(nina.id, "operator", "sales", "155")

    await _set(tl, "nina", extension="156")
    directory.invalidate()  # everything
    assert await directory.by_extension("155") is None
    assert (await directory.by_extension("156")).id == nina.id  # type: ignore[union-attr]


async def test_concurrent_first_asks_all_get_the_answer(tl: Tierline) -> None:
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    directory = OperatorDirectory(tl.db, ttl=60, now=Clock())
    found = await asyncio.gather(*(directory.by_extension("101") for _ in range(5)))
    assert {op.id for op in found if op is not None} == {olga.id} and None not in found


async def test_a_big_refresh_is_read_in_short_batches(tl: Tierline) -> None:
    """The refresh shares the pops' reader lane, which runs one call at a time: however many
    extensions are stale, no single read holds it for all of them."""
    await _operators(tl, 250)
    clock = Clock()
    directory = OperatorDirectory(tl.db, ttl=60, now=clock)
    directory.REFRESH_BATCH = 100
    for i in range(250):
        await directory.by_extension(str(2000 + i))
    read, sizes = tl.db.read, []

    async def counted(fn):  # type: ignore[no-untyped-def]
        sizes.append(len(directory._stale))  # what is still waiting when each read starts
        return await read(fn)

    tl.db.read = counted  # type: ignore[method-assign]
    try:
        await _set(tl, "op7", tier="sales")
        clock.now += 61
        for i in range(250):
            await directory.by_extension(str(2000 + i))
        await _refreshed(directory)
    finally:
        tl.db.read = read  # type: ignore[method-assign]

    assert sizes == [150, 50, 0]  # three reads: 100, 100, 50
    assert (await directory.by_extension("2007")).tier == "sales"  # type: ignore[union-attr]
    assert None not in [await directory.by_extension(str(2000 + i)) for i in range(250)]


async def test_one_stale_ask_sweeps_the_whole_cache_once(tl: Tierline) -> None:
    """Asks come one by one (a pop every few ms): the first stale one refreshes every
    extension known, and the next ones, already fresh, start no read of their own."""
    for i in range(5):
        await make_user(tl, f"op{i}", tier="cold", extension=str(301 + i))
    clock = Clock()
    directory = OperatorDirectory(tl.db, ttl=60, now=clock)
    for i in range(5):
        await directory.by_extension(str(301 + i))
        clock.now += 5  # first asked at different times: different expiries
    await _set(tl, "op4", tier="sales")

    clock.now += 61 - 25  # only the first extension is past its TTL
    await directory.by_extension("301")
    assert directory._stale == {"301", "302", "303", "304", "305"}
    await _refreshed(directory)
    for i in range(5):
        await directory.by_extension(str(301 + i))
        assert directory._refresher is None  # one sweep, one shared expiry
    assert (await directory.by_extension("305")).tier == "sales"  # type: ignore[union-attr]
    clock.now += 59
    await directory.by_extension("303")
    assert directory._refresher is None
    clock.now += 1
    await directory.by_extension("303")
    assert directory._refresher is not None  # the next sweep, a TTL after the last
    await _refreshed(directory)


async def test_a_read_overtaken_by_a_change_is_not_cached(tl: Tierline) -> None:
    """The users API commits a change and announces it while a read begun before the commit
    is on its way back: that read's old answer must not outlive the announcement."""
    olga = await make_user(tl, "olga", tier="cold", extension="101")
    clock = Clock()
    directory = OperatorDirectory(tl.db, ttl=60, now=clock)
    read = tl.db.read

    async def overtaken(fn):  # type: ignore[no-untyped-def]
        answer = await read(fn)  # read before the change ...
        await _set(tl, "olga", tier="sales")  # ... which commits and is announced
        directory.invalidate("101")
        return answer

    tl.db.read = overtaken  # type: ignore[method-assign]
    try:
        first = await directory.by_extension("101")
    finally:
        tl.db.read = read  # type: ignore[method-assign]
    assert first == Operator(olga.id, "operator", "cold", "101")  # answered as read, ...
    assert (await directory.by_extension("101")).tier == "sales"  # type: ignore[union-attr]

    clock.now += 61  # and the same for a sweep
    tl.db.read = overtaken  # type: ignore[method-assign]
    try:
        await _set(tl, "olga", tier="cold")
        assert (await directory.by_extension("101")).tier == "sales"  # type: ignore[union-attr]
        await _refreshed(directory)
    finally:
        tl.db.read = read  # type: ignore[method-assign]
    assert (await directory.by_extension("101")).tier == "sales"  # type: ignore[union-attr]


async def test_warm_caches_every_active_operator_in_short_reads(tl: Tierline) -> None:
    """At start-up: each operator's first ring after a restart needs no directory read."""
    await _operators(tl, 250)
    await make_user(tl, "gone", tier="cold", extension="199")
    await _set(tl, "gone", active=False)
    await make_user(tl, "root", role="admin", tier=None)  # no extension
    directory = OperatorDirectory(tl.db, ttl=60, now=Clock())
    directory.REFRESH_BATCH = 100
    read, reads = tl.db.read, []

    async def counted(fn):  # type: ignore[no-untyped-def]
        reads.append(fn)
        return await read(fn)

    tl.db.read = counted  # type: ignore[method-assign]
    try:
        assert await directory.warm() == 250
        assert len(reads) == 4  # 100, 100, 50, and the empty page that ends it
        for i in range(250):
            known, user = directory.cached(str(2000 + i))
            assert known and user is not None and user.extension == str(2000 + i)
            assert await directory.by_extension(str(2000 + i)) == user
        assert len(reads) == 4  # every first ask answered from memory
        assert directory.cached("199") == (False, None)  # inactive: asked, then read
        assert await directory.by_extension("199") is None
        assert len(reads) == 5
    finally:
        tl.db.read = read  # type: ignore[method-assign]


async def test_warm_keeps_what_is_newer_than_its_pages(tl: Tierline) -> None:
    """An extension read meanwhile keeps its answer; a page overtaken by a change (the users
    API's announcement) is left out, so the change is read when the extension is asked."""
    await _operators(tl, 3)
    directory = OperatorDirectory(tl.db, ttl=60, now=Clock())
    directory.REFRESH_BATCH = 2
    first = await directory.by_extension("2001")
    read, pages = tl.db.read, 0

    async def overtaken(fn):  # type: ignore[no-untyped-def]
        nonlocal pages
        answer = await read(fn)
        pages += 1
        if pages == 2:  # the second page (op2) was read before this change
            await _set(tl, "op2", tier="sales")
            directory.invalidate("2002")
        return answer

    tl.db.read = overtaken  # type: ignore[method-assign]
    try:
        assert await directory.warm() == 1  # op0 only: op1 was cached, op2's page overtaken
    finally:
        tl.db.read = read  # type: ignore[method-assign]
    assert directory.cached("2001") == (True, first)
    assert directory.cached("2002") == (False, None)
    assert (await directory.by_extension("2002")).tier == "sales"  # type: ignore[union-attr]
