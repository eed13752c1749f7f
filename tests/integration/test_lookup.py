"""Who a number belongs to (``cti_adapter.pops.lookup_sync``), and what the pop path hands the
call log so the number is parsed once per call at most.

A number the PBX already sends in E.164 is looked up as it is: a stored number is canonical,
so finding it proves the spelling. Every test compares with what the parse gives, so the
shortcut can never answer differently from the long way.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import sqlalchemy as sa

import cti_adapter.call_rows as call_rows_module
import cti_adapter.pops as pops_module
from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.pipeline import CtiPipeline
from cti_adapter.pops import Lookup, lookup_sync, unaddressed
from engine import phones
from engine.card import match_cards_sync
from engine.models import Call
from engine.service import Tierline
from tests.integration.helpers import make_client, make_user


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every number the pop path or the call log asked to be normalised (cache or not)."""
    asked: list[str] = []

    def counted(raw: str, region: str) -> str | None:
        asked.append(raw)
        return phones.try_normalize(raw, region)

    monkeypatch.setattr(pops_module, "try_normalize", counted)
    monkeypatch.setattr(call_rows_module, "try_normalize", counted)
    return asked


async def _lookup(tl: Tierline, raw: str, **kwargs: object) -> Lookup:
    return await tl.db.read(lambda conn: lookup_sync(conn, raw, "RU", **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spelling", ["+79161234567", "8 916 123-45-67", "+7 (916) 123-45-67", "79161234567"]
)
async def test_every_spelling_finds_the_same_client(tl: Tierline, spelling: str) -> None:
    ivan = await make_client(tl, "Ivan Petrov", "8 (916) 123 45 67")

    found = await _lookup(tl, spelling)

    assert (found.number, found.e164) == ("+79161234567", "+79161234567")
    assert [c.id for c in found.clients] == [ivan.id]


async def test_a_stored_e164_number_is_found_without_a_parse(
    tl: Tierline, parses: list[str]
) -> None:
    ivan = await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
    parses.clear()

    found = await _lookup(tl, "+79161234567")

    assert [c.id for c in found.clients] == [ivan.id]
    assert parses == []
    # Any other spelling still goes the long way.
    await _lookup(tl, "8 916 123-45-67")
    assert parses == ["8 916 123-45-67"]


@pytest.mark.parametrize(
    ("raw", "number", "e164", "searches"),
    [
        ("+79161112233", "+79161112233", "+79161112233", 1),  # valid, nobody's
        ("+70001234567", "+70001234567", None, 1),  # E.164-shaped, not a valid number
        ("+7916123456789012", "+7916123456789012", None, 0),  # too long to be E.164
        ("8 916 111-22-33", "+79161112233", "+79161112233", 1),  # the long way
    ],
)
async def test_an_unknown_number_is_answered_as_the_parse_would(
    tl: Tierline,
    raw: str,
    number: str,
    e164: str | None,
    searches: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
    searched: list[str] = []

    def counted(conn, e164: str, *, limit: int):  # type: ignore[no-untyped-def]
        searched.append(e164)
        return match_cards_sync(conn, e164, limit=limit)

    monkeypatch.setattr(pops_module, "match_cards_sync", counted)
    found = await _lookup(tl, raw)

    assert found == Lookup(number, e164, [])
    assert phones.try_normalize(raw, "RU") == e164
    # An unknown caller costs one search at most, as before the E.164 shortcut.
    assert len(searched) == searches


async def test_a_linked_call_shows_its_client_whatever_the_number(tl: Tierline) -> None:
    await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
    anna = await make_client(tl, "Anna Orlova", "+7 916 765-43-21")

    found = await _lookup(tl, "+79161234567", linked_client_id=anna.id)

    assert (found.number, [c.id for c in found.clients]) == ("+79161234567", [anna.id])


@pytest.mark.parametrize(
    ("spelling", "parsed"), [("+79161234567", []), ("8 916 123-45-67", ["8 916 123-45-67"])]
)
async def test_the_call_log_takes_the_pops_findings(
    tl: Tierline, parses: list[str], spelling: str, parsed: list[str]
) -> None:
    await make_user(tl, "olga", tier="cold", extension="101")
    ivan = await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
    pipeline = CtiPipeline(tl)
    parses.clear()

    outcome = await pipeline.handle(
        [
            CallEvent(
                event=CallEventType.RINGING,
                call_id="c1",
                direction=Direction.INBOUND,
                from_number=spelling,
                to_number="7000",
                extension="101",
                at=tl.clock.now(),
            )
        ]
    )

    assert (outcome.recorded, outcome.pops) == (1, 1)
    # Parsed by the pop path at most once; the log path asked for nothing.
    assert parses == parsed
    calls = Call.__table__  # type: ignore[attr-defined]
    async with tl.db.engine.connect() as conn:
        row = (await conn.execute(sa.select(calls.c.number, calls.c.client_id))).one()
    assert (row.number, row.client_id) == ("+79161234567", ivan.id)


async def test_a_pop_is_urgent_from_its_read_to_its_push(tl: Tierline) -> None:
    """While a pop is read and pushed the writer thread starts nothing new (urgency.py); after
    it, pushed or failed, writes go on."""
    await make_user(tl, "olga", tier="cold", extension="101")
    await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
    pipeline = CtiPipeline(tl)
    seen: list[tuple[str, int]] = []
    tl.bus.subscribe(lambda ch, msg: seen.append((ch, tl.db.urgency.in_flight)))
    during_read: list[int] = []

    def ringing(call_id: str) -> CallEvent:
        return CallEvent(
            event=CallEventType.RINGING, call_id=call_id, direction=Direction.INBOUND,
            from_number="+79161234567", to_number="7000", extension="101", at=tl.clock.now(),
        )  # fmt: skip

    await pipeline.directory.by_extension("101")  # read once, then cached
    real_read = tl.db.read_soon

    def read(fn):  # type: ignore[no-untyped-def]
        during_read.append(tl.db.urgency.in_flight)
        return real_read(fn)

    tl.db.read_soon = read  # type: ignore[method-assign]
    assert await pipeline.pop(ringing("c1")) == 1
    assert during_read == [1] and seen == [("pops", 1)]
    assert tl.db.urgency.in_flight == 0

    def broken(fn):  # type: ignore[no-untyped-def]
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(OSError("disk gone"))
        return failed

    tl.db.read_soon = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await pipeline.pop(ringing("c2"))
    assert tl.db.urgency.in_flight == 0


async def test_a_ringing_event_has_its_read_queued_before_the_pop_task_runs(tl: Tierline) -> None:
    """On a busy loop a new task waits its turn; the pop's read must not wait with it. And a
    pop cancelled before its first step (shutdown) lets the writer go on and skips its read."""
    await make_user(tl, "olga", tier="cold", extension="101")
    await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
    pipeline = CtiPipeline(tl)
    pushed: list[str] = []
    tl.bus.subscribe(lambda ch, msg: pushed.append(unaddressed(msg)["call_id"]))
    queued: list[asyncio.Future] = []
    real_read = tl.db.read_soon

    def read(fn):  # type: ignore[no-untyped-def]
        future = real_read(fn)
        if getattr(fn, "func", None) == pipeline.pop_path._build:  # a pop's, not the directory's
            queued.append(future)
        return future

    tl.db.read_soon = read  # type: ignore[method-assign]
    ringing = CallEvent(
        event=CallEventType.RINGING, call_id="c1", direction=Direction.INBOUND,
        from_number="+79161234567", to_number="7000", extension="101", at=tl.clock.now(),
    )  # fmt: skip

    # The extension not yet known: the directory is read first, in the task.
    started = pipeline.start([ringing])
    assert queued == [] and tl.db.urgency.in_flight == 0
    await started.popped()
    assert len(queued) == 1 and pushed == ["c1"] and tl.db.urgency.in_flight == 0

    # Known now: start() itself queues the read and holds the writer back.
    started = pipeline.start([dataclasses.replace(ringing, call_id="c2")])
    assert len(queued) == 2 and tl.db.urgency.in_flight == 1
    await started.popped()
    assert pushed == ["c1", "c2"] and tl.db.urgency.in_flight == 0
    assert started.matched[("c2", "ringing", "101")].result()[0] is not None

    started = pipeline.start([dataclasses.replace(ringing, call_id="c3")])
    assert tl.db.urgency.in_flight == 1
    abandoned = started.abandon()
    await asyncio.gather(*abandoned, return_exceptions=True)
    assert queued[-1].cancelled() and tl.db.urgency.in_flight == 0
    assert pushed == ["c1", "c2"]
