"""The Redis bus: every node (the publisher's own too) receives each message once, through
Redis pub/sub. Its own module so that a one-node install never imports the Redis client
(~6 MB of the serving process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from engine.bus import _encode, _Handlers
from engine.errors import Unavailable

log = logging.getLogger("engine.bus")


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
