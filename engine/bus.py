"""The event bus: screen pops and queue changes to whichever node holds the operator's socket.

One node: :class:`LocalBus`, in process. Several nodes: ``engine.bus_redis.RedisBus``, Redis
pub/sub, where every node (the publisher's own too) receives each message once, through Redis.

Messages are JSON objects. Both buses pass them through JSON, so a message that would not
survive Redis (a datetime, a set) fails on a one-node install too, not first in production.
Delivery is at most once: the database holds the truth, the bus only says "look again".
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Bus", "Handler", "LocalBus", "make_bus", "to_json"]

log = logging.getLogger(__name__)

# Called synchronously on the event loop: must not block (put_nowait into a queue, say).
Handler = Callable[[str, dict[str, Any]], None]


class Bus(Protocol):
    async def start(self) -> None: ...

    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Call ``handler(channel, message)`` for every message; returns the unsubscribe."""
        ...

    async def close(self) -> None: ...


def to_json(message: dict[str, Any]) -> str:
    """A message as the bus and the sockets carry it: compact, UTF-8 left as it is."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _encode(channel: str, message: dict[str, Any]) -> str:
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"a bus channel is a non-empty string, got {channel!r}")
    if not isinstance(message, dict):
        raise TypeError(f"a bus message is a dict, got {type(message).__name__}")
    try:
        return to_json(message)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"bus message on {channel!r} is not JSON-serialisable: {exc}") from None


class _Handlers:
    """The local subscribers, shared by both buses."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler] = {}
        self._ids = itertools.count()

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        key = next(self._ids)
        self._handlers[key] = handler

        def unsubscribe() -> None:
            self._handlers.pop(key, None)

        return unsubscribe

    def dispatch(self, channel: str, message: dict[str, Any]) -> None:
        # A snapshot: a handler may unsubscribe itself (or another) while we iterate.
        for handler in tuple(self._handlers.values()):
            try:
                handler(channel, message)
            except Exception:
                # One broken consumer (a closed socket's queue) must not starve the others.
                log.exception("bus handler %r failed on channel %r", handler, channel)


class LocalBus(_Handlers):
    """In-process: ``publish`` calls every handler before it returns."""

    async def start(self) -> None:
        return None

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.dispatch(channel, json.loads(_encode(channel, message)))

    async def close(self) -> None:
        return None


def make_bus(redis_url: str | None, prefix: str = "tierline") -> Bus:
    """Redis when a URL is configured (several nodes), else the in-process bus."""
    if redis_url:
        from engine.bus_redis import RedisBus  # only where Redis is configured

        return RedisBus(redis_url, prefix)
    return LocalBus()
