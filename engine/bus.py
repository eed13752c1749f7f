"""The event bus: screen pops and queue changes to whichever node holds the operator's socket.

One node: :class:`LocalBus`, in process. Several nodes: :class:`RedisBus`, Redis pub/sub,
where every node (the publisher's own too) receives each message once, through Redis.

Messages are JSON objects. Both buses pass them through JSON, so a message that would not
survive Redis (a datetime, a set) fails on a one-node install too, not first in production.
Delivery is at most once: the database holds the truth, the bus only says "look again".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from engine.errors import Unavailable

__all__ = ["Bus", "Handler", "LocalBus", "RedisBus", "make_bus"]

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


def _encode(channel: str, message: dict[str, Any]) -> str:
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"a bus channel is a non-empty string, got {channel!r}")
    if not isinstance(message, dict):
        raise TypeError(f"a bus message is a dict, got {type(message).__name__}")
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
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


_Subscription = tuple[redis.Redis, PubSub]


async def _dispose(subscription: _Subscription) -> None:
    client, pubsub = subscription
    with contextlib.suppress(Exception):
        await pubsub.aclose()
    with contextlib.suppress(Exception):
        await client.aclose()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisBus(_Handlers):
    """Redis pub/sub. ``publish`` sends JSON to ``{prefix}:{channel}``; one reader task per
    node ``psubscribe``s ``{prefix}:*`` and hands each message to the local handlers.

    If Redis drops, the reader reconnects with exponential backoff (logged). Until it is
    subscribed again ``publish`` raises :class:`Unavailable`: a message sent then would be
    lost to every node that is reconnecting, this one included.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "tierline",
        *,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self._pattern = _glob_escape(prefix) + ":*"
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._timeout = timeout
        self._redis: redis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscription: _Subscription | None = None
        self._live = asyncio.Event()  # set while the reader is subscribed

    def _client(self, **options: Any) -> redis.Redis:
        # No client-side retries: the reader has its own backoff, and a publish while Redis
        # is down should fail now (the caller decides), not after the library's retries.
        return redis.Redis.from_url(
            self.url,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            **options,
        )

    @property
    def connected(self) -> bool:
        """Whether this node's reader is subscribed (``publish`` refuses while it is not)."""
        return self._live.is_set()

    async def start(self) -> None:
        """Connect and subscribe; raises :class:`Unavailable` if Redis cannot be reached."""
        if self._reader is not None:
            return
        self._redis = self._client(socket_timeout=self._timeout)
        try:
            await self._subscribe()  # fail loudly at boot on a wrong URL
        except BaseException:
            await self._redis.aclose()
            self._redis = None
            raise
        self._reader = asyncio.create_task(self._read(), name=f"redis-bus:{self.prefix}")

    async def _subscribe(self) -> PubSub:
        # A connection of its own, without a read timeout: it waits for messages for hours.
        client = self._client(socket_timeout=None, health_check_interval=30)
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(self._pattern)
            # psubscribe only sends the command; wait for Redis to confirm, so a message
            # published right after start() is not missed.
            async with asyncio.timeout(self._timeout):
                while True:
                    reply = await pubsub.get_message(timeout=self._timeout)
                    if reply is not None and reply["type"] == "psubscribe":
                        break
        except (RedisError, OSError, TimeoutError) as exc:
            await _dispose((client, pubsub))
            raise Unavailable(f"cannot subscribe to Redis at {self._safe_url}: {exc}") from exc
        except BaseException:
            await _dispose((client, pubsub))
            raise
        # Kept on self, not in the reader's frame: close() may cancel the reader before it
        # ever ran, and must still close this connection.
        self._subscription = (client, pubsub)
        self._live.set()
        return pubsub

    async def _unsubscribe(self) -> None:
        self._live.clear()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await _dispose(subscription)

    async def _read(self) -> None:
        delay = self._reconnect_delay
        while True:
            try:
                if self._subscription is None:
                    pubsub = await self._subscribe()
                    log.warning("redis bus reconnected to %s", self._safe_url)
                else:
                    pubsub = self._subscription[1]
                delay = self._reconnect_delay
                while True:
                    raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if raw is not None:
                        self._deliver(raw)
            except Exception as exc:
                # Anything but cancellation: a reader that died quietly would leave this node
                # deaf while publish still succeeded.
                expected = isinstance(exc, RedisError | OSError | Unavailable)
                await self._unsubscribe()
                log.log(
                    logging.WARNING if expected else logging.ERROR,
                    "redis bus lost %s (%s); retrying in %.2fs",
                    self._safe_url,
                    exc,
                    delay,
                    exc_info=not expected,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect_delay)

    def _deliver(self, raw: dict[str, Any]) -> None:
        if raw.get("type") != "pmessage":
            return
        channel = raw["channel"].decode("utf-8", "replace")[len(self.prefix) + 1 :]
        try:
            message = json.loads(raw["data"])
        except (ValueError, TypeError):
            log.warning("redis bus dropped a message on %r that is not JSON", channel)
            return
        if not isinstance(message, dict):
            log.warning("redis bus dropped a message on %r that is not an object", channel)
            return
        self.dispatch(channel, message)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        payload = _encode(channel, message)
        if self._redis is None:
            raise Unavailable("the Redis bus is not started")
        if not self._live.is_set():
            raise Unavailable(f"the Redis bus is reconnecting to {self._safe_url}")
        try:
            await self._redis.publish(f"{self.prefix}:{channel}", payload)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"cannot publish to Redis at {self._safe_url}: {exc}") from exc

    async def close(self) -> None:
        self._live.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._unsubscribe()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def _safe_url(self) -> str:
        # Never log a password: redis://user:secret@host -> redis://host
        scheme, sep, rest = self.url.partition("://")
        return scheme + sep + rest.rpartition("@")[2]


def make_bus(redis_url: str | None, prefix: str = "tierline") -> Bus:
    """Redis when a URL is configured (several nodes), else the in-process bus."""
    if redis_url:
        return RedisBus(redis_url, prefix)
    return LocalBus()
