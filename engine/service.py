"""The engine as the web and CTI layers see it: one object, started and stopped with the app."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import time

from engine import phones, runtime_settings
from engine.bus import Bus, make_bus
from engine.calendar import CallingPolicy
from engine.clients import NewClient, create_client
from engine.clock import Clock, SystemClock
from engine.definitions import DEFAULT_NAME, DefinitionCache, current_version, publish
from engine.errors import NotFound
from engine.followups.check import Violation, check_invariant
from engine.followups.dispatcher import Dispatcher
from engine.followups.escalation import sweep_escalations
from engine.followups.timer import WakeupTimer
from engine.models import Client, User
from engine.runtime import Applied, EventRequest, Runtime
from engine.settings import Settings
from engine.storage.database import Database
from engine.workflow import default_definition_text

log = logging.getLogger("tierline.engine")

QUEUE_CHANNEL = "queues"
SETTINGS_CHANNEL = "settings"


@dataclass
class Tierline:
    settings: Settings
    db: Database
    clock: Clock
    bus: Bus
    cache: DefinitionCache
    policy: CallingPolicy
    runtime: Runtime
    dispatcher: Dispatcher
    timer: WakeupTimer
    slice_times: list[time] = field(default_factory=list)
    _tasks: set[asyncio.Task] = field(default_factory=set)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        bus: Bus | None = None,
        db: Database | None = None,
    ) -> Tierline:
        clock = clock or SystemClock()
        db = db or Database(settings.effective_database_url)
        bus = bus or make_bus(settings.redis_url)
        cache = DefinitionCache()
        policy = settings.calling_policy()
        runtime = Runtime(db, cache, clock, policy, settings.timezone)
        dispatcher = Dispatcher(db, runtime, bus, clock, batch=settings.followup_batch)

        async def escalate() -> int:
            return await sweep_escalations(db, bus, clock)

        timer = WakeupTimer(
            clock,
            dispatcher.run_due,
            dispatcher.next_due_at,
            periodic={"escalations": (settings.escalation_sweep_seconds, escalate)},
        )
        return cls(settings, db, clock, bus, cache, policy, runtime, dispatcher, timer)

    async def start(self, *, timers: bool = True) -> None:
        await self.db.migrate()
        await self.ensure_default_workflow()
        await self.reload_runtime_settings()
        await self.bus.start()
        self.bus.subscribe(self._on_message)
        if timers:
            await self.timer.start()

    async def stop(self) -> None:
        await self.timer.stop()  # waits (bounded) for a dispatch under way: the DB closes next
        if self._tasks:  # settings reloads still reading the database
            await asyncio.wait(set(self._tasks), timeout=5)
        await self.bus.close()
        await self.db.dispose()

    async def ensure_default_workflow(self) -> None:
        async with self.db.transaction() as session:
            try:
                await current_version(session, DEFAULT_NAME)
            except NotFound:
                await publish(
                    session,
                    self.cache,
                    default_definition_text(),
                    now=self.clock.now(),
                    note="default definition",
                )
                log.info("published the default workflow definition")

    async def reload_runtime_settings(self) -> None:
        """Calling rules edited by an admin override the start-up configuration."""
        async with self.db.session() as session:
            stored = await runtime_settings.load(session, runtime_settings.CALLING)
        calling = runtime_settings.calling_from(self.settings, stored)
        self.policy = calling.policy()
        self.runtime.policy = self.policy
        self.slice_times = calling.slices()

    def _on_message(self, channel: str, message: dict) -> None:
        if channel == SETTINGS_CHANNEL:
            # Another node (or this one) changed the calling rules: re-read them.
            task = asyncio.get_running_loop().create_task(self.reload_runtime_settings())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def announce_settings_changed(self) -> None:
        await self.bus.publish(SETTINGS_CHANNEL, {"type": "settings_changed"})

    async def apply(self, req: EventRequest) -> Applied:
        applied = await self.runtime.apply(req)
        await self._after_change(applied.to_tier, applied.owner_id, applied.client_id)
        if applied.followup is not None:
            self.timer.wake_at(applied.followup.due_at)
        return applied

    async def add_client(
        self, new: NewClient, *, actor: User | None = None, state: str | None = None
    ) -> Client:
        async with self.db.transaction() as session:
            client = await create_client(
                session,
                self.runtime,
                new,
                region=self.settings.default_region,
                now=self.clock.now(),
                actor=actor,
                state=state,
            )
        await self._after_change(client.tier, client.owner_id, client.id)  # type: ignore[arg-type]
        return client

    async def check_followups(self) -> list[Violation]:
        async with self.db.session() as session:
            return await check_invariant(session, self.cache)

    def normalize(self, raw: str) -> str:
        return phones.normalize(raw, self.settings.default_region)

    async def _after_change(self, tier: str, owner_id: int | None, client_id: int) -> None:
        try:
            await self.bus.publish(
                QUEUE_CHANNEL,
                {
                    "type": "queue_changed",
                    "tier": tier,
                    "owner_id": owner_id,
                    "client_id": client_id,
                },
            )
        except Exception as exc:  # queues are queries; a lost nudge only delays a refresh
            log.warning("queue_changed not announced: %s", exc)
