"""The heap keeper, against this process's real garbage collector.

Every test leaves the collector as it found it: nothing frozen, no callback of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref
from collections.abc import Callable, Iterator

import pytest
from aiohttp import web
from pydantic import ValidationError

from engine.models import Role
from engine.settings import Settings
from web.heap import HeapKeeper, keep_heap
from web.hub import Hub
from web.socket_state import Conn, SocketUser
from web.ws import HUB


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


async def _run_for(keeper: HeapKeeper, until: Callable[[], bool], seconds: float = 2.0) -> None:
    task = asyncio.get_running_loop().create_task(keeper.run())
    try:
        for _ in range(int(seconds / 0.01)):
            if until():
                return
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_due_sweep_waits_until_no_operator_got_a_message_for_a_while(keepers) -> None:
    """A sweep holds the loop ~100+ ms: not while pops are going out."""
    last = [time.monotonic()]
    keeper = HeapKeeper(
        freeze_above=0,
        sweep_every=0.01,
        check_every=0.01,
        quiet_for=0.15,
        most_deferred=60,
        last_activity=lambda: last[0],
    )
    keepers.append(keeper)

    async def busy() -> None:  # a message to an operator every 20 ms, for 0.3 s
        for _ in range(15):
            last[0] = time.monotonic()
            await asyncio.sleep(0.02)

    pops = asyncio.create_task(busy())
    await _run_for(keeper, pops.done)
    assert keeper.sweeps == 0 and keeper.deferred >= 5
    quiet_since = last[0]
    await _run_for(keeper, lambda: keeper.sweeps > 0)
    assert keeper.sweeps == 1 and keeper.forced == 0
    assert time.monotonic() - quiet_since >= 0.15


async def test_a_sweep_never_finding_quiet_runs_after_most_deferred(keepers) -> None:
    keeper = HeapKeeper(
        freeze_above=0,
        sweep_every=0.01,
        check_every=0.01,
        quiet_for=10,
        most_deferred=0.1,
        last_activity=time.monotonic,  # a message this very moment, always
    )
    keepers.append(keeper)
    await _run_for(keeper, lambda: keeper.sweeps > 0)
    assert keeper.sweeps == 1 and keeper.forced == 1 and keeper.deferred >= 3


async def test_the_look_does_not_collect_while_operators_are_busy(keepers) -> None:
    keeper = HeapKeeper(
        freeze_above=1, sweep_every=0, check_every=0.01, last_activity=time.monotonic
    )
    keepers.append(keeper)
    keeper.install()
    wave = [Node() for _ in range(100)]
    gc.collect(1)
    await _run_for(keeper, lambda: keeper.deferred >= 5)
    assert keeper.checks_collected == 0 and keeper.deferred >= 5
    del wave


async def test_keep_heap_listens_to_the_apps_websocket_hub(keepers) -> None:
    keeper = HeapKeeper(freeze_above=0, sweep_every=0)
    keepers.append(keeper)
    app = web.Application()
    hub = app[HUB] = Hub()
    keep_heap(app, keeper)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert keeper.last_activity is not None
        assert keeper.quiet(time.monotonic())  # nothing sent yet
        hub.add(Conn(hub, SocketUser(7, Role.OPERATOR, "cold"), time.monotonic()))
        assert hub.send_to_user(7, {"type": "screen_pop", "call_id": "c1"}) == 1
        assert keeper.last_activity() == hub.last_sent > 0
        assert not keeper.quiet(time.monotonic())
        hub.send_to_user(8, {"type": "screen_pop", "call_id": "c2"})  # nobody's socket
        assert keeper.quiet(hub.last_sent + keeper.quiet_for)
    finally:
        await runner.cleanup()
