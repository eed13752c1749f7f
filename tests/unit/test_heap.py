"""The heap keeper, against this process's real garbage collector.

Every test leaves the collector as it found it: nothing frozen, no callback of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest
from aiohttp import web
from pydantic import ValidationError

from engine.settings import Settings
from web.heap import HeapKeeper, keep_heap


class Node:
    """An object that can sit in a reference cycle and be watched through a weakref."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def keepers() -> Iterator[list[HeapKeeper]]:
    made: list[HeapKeeper] = []
    yield made
    for keeper in made:
        keeper.uninstall()
    assert gc.get_freeze_count() == 0
    assert not any(getattr(cb, "__self__", None) in made for cb in gc.callbacks)


def test_a_full_collection_leaving_many_objects_freezes_them(keepers) -> None:
    keeper = HeapKeeper(freeze_above=1, sweep_every=0)
    keepers.append(keeper)
    keeper.install()
    assert gc.get_freeze_count() == 0
    gc.collect(1)  # a younger generation's collection: no freeze
    assert gc.get_freeze_count() == 0 and keeper.freezes == 0
    gc.collect()
    assert keeper.freezes == 1
    assert gc.get_freeze_count() > 0
    assert gc.get_objects(generation=2) == []  # the survivors are all frozen


def test_a_full_collection_leaving_few_objects_freezes_nothing(keepers) -> None:
    keeper = HeapKeeper(freeze_above=10**9, sweep_every=0)
    keepers.append(keeper)
    keeper.install()
    gc.collect()
    assert keeper.freezes == 0 and gc.get_freeze_count() == 0


def test_a_cycle_that_dies_frozen_waits_for_the_sweep(keepers) -> None:
    keeper = HeapKeeper(freeze_above=0, sweep_every=0)
    keepers.append(keeper)
    node = Node()
    watch = weakref.ref(node)
    first = keeper.sweep()
    assert first.frozen == gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert watch() is not None  # frozen: collections do not see it
    done = keeper.sweep()
    assert watch() is None
    assert done.freed >= 1
    assert keeper.sweeps == 2


def test_an_object_frozen_is_still_freed_by_reference_counting(keepers) -> None:
    keeper = HeapKeeper(sweep_every=0)
    keepers.append(keeper)
    holder = [Node()]
    holder[0].me = None  # no cycle
    watch = weakref.ref(holder[0])
    keeper.sweep()
    holder.clear()
    assert watch() is None


async def test_keep_heap_sweeps_while_the_app_runs_and_stops_with_it(keepers) -> None:
    keeper = HeapKeeper(freeze_above=10**9, sweep_every=0.02, check_every=0.01)
    keepers.append(keeper)
    app = web.Application()
    keep_heap(app, keeper)
    runner = web.AppRunner(app)
    await runner.setup()  # start-up: the first sweep, and the collector callback
    assert keeper.sweeps == 1 and gc.get_freeze_count() > 0
    assert keeper._after_collection in gc.callbacks
    for _ in range(200):
        if keeper.sweeps >= 3:
            break
        await asyncio.sleep(0.01)
    assert keeper.sweeps >= 3
    await runner.cleanup()
    assert keeper._after_collection not in gc.callbacks
    assert gc.get_freeze_count() == 0
    sweeps = keeper.sweeps
    await asyncio.sleep(0.05)
    assert keeper.sweeps == sweeps  # the sweeping task ended with the app


async def test_zero_turns_each_part_off(keepers, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, heap_freeze_above=0, heap_sweep_seconds=0)
    keeper = HeapKeeper.from_settings(settings)
    keeper.check_every = 0.01
    keepers.append(keeper)
    app = web.Application()
    keep_heap(app, keeper)
    runner = web.AppRunner(app)
    await runner.setup()
    assert keeper._after_collection not in gc.callbacks
    gc.collect()
    assert keeper.freezes == 0
    await asyncio.sleep(0.05)
    assert keeper.sweeps == 1  # the start-up sweep only
    assert keeper.checks_collected == 0
    await runner.cleanup()


def test_negative_settings_are_refused(tmp_path) -> None:
    with pytest.raises(ValidationError, match="heap_sweep_seconds"):
        Settings(data_dir=tmp_path, heap_sweep_seconds=-1)
    with pytest.raises(ValidationError, match="heap_freeze_above"):
        Settings(data_dir=tmp_path, heap_freeze_above=-5)


async def test_a_heap_grown_since_the_last_freeze_is_collected_and_frozen_soon(keepers) -> None:
    """Sockets of a sign-in wave age into the oldest generation: the keeper's look collects
    and freezes them within ``check_every``, instead of a full collection under load."""
    keeper = HeapKeeper(freeze_above=2_000, sweep_every=0, check_every=0.01)
    keepers.append(keeper)
    keeper.sweep()
    keeper.install()
    task = asyncio.get_running_loop().create_task(keeper.run())
    try:
        await asyncio.sleep(0.05)
        looked = keeper.checks_collected
        wave = [Node() for _ in range(5_000)]
        gc.collect(1)  # what surviving young collections does: into the oldest generation
        for _ in range(100):
            if keeper.freezes:
                break
            await asyncio.sleep(0.01)
        assert keeper.freezes >= 1 and keeper.checks_collected > looked
        walked = set(map(id, gc.get_objects(generation=2)))
        assert not any(id(node) in walked for node in wave[:100])  # frozen, out of sight
        assert len(gc.get_objects(generation=2)) < 2_000
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
