"""The Asterisk connector: one AMI session, kept alive, turned into ``CallEvent``s.

One background task owns the socket: connect, read the banner, ``Login``, resynchronise
with ``CoreShowChannels``, then follow events until the socket drops; then back off
(exponential, jittered) and start again. A refused login is retried only slowly.
Actions (``Originate``, ``Ping``) are matched to their ``Response`` by ``ActionID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping

from cti_adapter.asterisk.config import AmiConfig, backoff_delay
from cti_adapter.asterisk.protocol import AmiParser, AmiProtocolError, Message, encode_action
from cti_adapter.asterisk.translate import CallTracker
from cti_adapter.events import CallEvent
from cti_adapter.port import OriginateRequest
from engine.errors import InvalidInput, PbxUnavailable

log = logging.getLogger("tierline.cti.asterisk")

# An extension goes into "PJSIP/<ext>": "&" or "/" there would ring other devices.
_EXTENSION = re.compile(r"^[\w.+*#-]{1,40}$")
_NUMBER = re.compile(r"^\+?[\w*#.-]{1,40}$")


class AmiLoginRefused(PbxUnavailable):
    """Asterisk answered ``Login`` with an error: wrong username or secret, or not allowed."""


class AmiConnector:
    name = "asterisk"

    def __init__(
        self,
        config: AmiConfig,
        *,
        tracker: CallTracker | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._tracker = tracker or CallTracker(config.device_pattern, config.internal_contexts)
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[CallEvent | None] = asyncio.Queue(config.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ready = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._originates: OrderedDict[str, str] = OrderedDict()  # ActionID -> call id
        self._ids = itertools.count(1)
        self._resync_id: str | None = None
        self._snapshot: list[Message] = []
        self._closed = False
        self.state = "idle"  # connecting | connected | backoff | auth_failed | closed
        self.last_error: str | None = None
        self.logins = 0
        self.resyncs = 0

    # --- PbxConnector -------------------------------------------------------------------

    def start(self) -> None:
        """Start the session task (``events()`` and ``originate()`` do it on first use)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ami")

    def events(self) -> AsyncIterator[CallEvent]:
        self.start()
        return self._iter_events()

    async def _iter_events(self) -> AsyncIterator[CallEvent]:
        while True:
            event = await self._queue.get()
            if event is None:
                self._queue.put_nowait(None)  # let any other iterator end too
                return
            yield event

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def wait_connected(self) -> None:
        """Until logged in (wrap it in ``asyncio.timeout``)."""
        self.start()
        await self._ready.wait()

    async def originate(self, request: OriginateRequest) -> str:
        if not _EXTENSION.match(request.extension):
            raise InvalidInput(f"not a valid extension: {request.extension!r}")
        if not _NUMBER.match(request.number):
            raise InvalidInput(f"not a dialable number: {request.number!r}")
        fields = {
            "Channel": f"{self.config.originate_tech}/{request.extension}",
            "Exten": request.number,
            "Context": self.config.originate_context,
            "Priority": "1",
            "ChannelId": request.request_id,
            "Timeout": str(int(self.config.originate_ring_timeout * 1000)),
            "Async": "true",
        }
        if request.caller_id:
            fields["CallerID"] = request.caller_id
        self.start()
        await self._await_ready()
        action_id = f"originate-{next(self._ids)}"
        self._tracker.expect_originate(
            request.request_id, request.extension, request.number, request.caller_id
        )
        try:
            reply = await self._action(
                "Originate", fields, self.config.originate_timeout, action_id
            )
        except ValueError as exc:  # a line break in a field: refused before sending
            self._tracker.forget_originate(request.request_id)
            raise InvalidInput(str(exc)) from exc
        except PbxUnavailable:
            self._tracker.forget_originate(request.request_id)
            raise
        if reply.get("Response") != "Success":
            self._tracker.forget_originate(request.request_id)
            message = reply.get("Message", "no reason given")
            log.warning("Asterisk refused Originate %s: %s", request.request_id, message)
            raise InvalidInput(f"Asterisk refused the call: {message}", asterisk_message=message)
        self._originates[action_id] = request.request_id
        while len(self._originates) > 1000:
            self._originates.popitem(last=False)
        return request.request_id

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.state = "closed"
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.write(encode_action("Logoff", f"logoff-{next(self._ids)}"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    # --- the session loop ---------------------------------------------------------------

    async def _await_ready(self) -> None:
        if self._ready.is_set():
            return
        if self._closed or self.state == "auth_failed":
            raise PbxUnavailable(f"not connected to Asterisk ({self.last_error or self.state})")
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await self._ready.wait()
        except TimeoutError:
            raise PbxUnavailable("not connected to Asterisk") from None

    async def _run(self) -> None:
        attempt = 0
        target = f"{self.config.host}:{self.config.port}"
        while not self._closed:
            logged_in_before = self.logins
            try:
                await self._session()
                error = "connection closed by Asterisk"
            except AmiLoginRefused as exc:
                self.state, self.last_error = "auth_failed", exc.message
                delay = self.config.auth_retry_delay
                log.error(
                    "Asterisk AMI at %s refused login for user %r: %s; retrying in %.0f s",
                    target, self.config.username, exc.message, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                continue
            except (OSError, TimeoutError, AmiProtocolError, PbxUnavailable) as exc:
                error = str(exc) or type(exc).__name__
            if self.logins > logged_in_before:
                attempt = 0  # it worked for a while: start the backoff over
            delay = backoff_delay(attempt, self.config, self._rng)
            attempt += 1
            self.state, self.last_error = "backoff", error
            log.warning("Asterisk AMI at %s: %s; reconnecting in %.2f s", target, error, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        cfg = self.config
        self.state = "connecting"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(cfg.host, cfg.port), cfg.connect_timeout
        )
        self._writer = writer
        read_task = asyncio.get_running_loop().create_task(self._read(reader))
        ping_task: asyncio.Task[None] | None = None
        try:
            login = {"Username": cfg.username, "Secret": cfg.secret, "Events": cfg.event_mask}
            reply = await self._action("Login", login, cfg.connect_timeout)
            if reply.get("Response") != "Success":
                raise AmiLoginRefused(reply.get("Message") or "login refused")
            self.logins += 1
            self.state, self.last_error = "connected", None
            log.info("logged in to Asterisk AMI at %s:%s", cfg.host, cfg.port)
            await self._start_resync()
            self._ready.set()
            ping_task = asyncio.get_running_loop().create_task(self._keepalive())
            await read_task
        finally:
            self._ready.clear()
            self._writer = None
            for task in (read_task, ping_task):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task  # collected here: its error was already reported above
            self._fail_pending()
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = AmiParser(expect_banner=True)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("connection closed by Asterisk")
                for msg in parser.feed(data):
                    await self._dispatch(msg)
        finally:
            self._fail_pending()

    async def _dispatch(self, msg: Message) -> None:
        event = msg.get("Event")
        if event is None:
            fut = self._pending.pop(msg.get("ActionID", ""), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif msg.get("ActionID") == self._resync_id and msg.get("Response") != "Success":
                log.warning("CoreShowChannels refused: %s", msg.get("Message"))
                self._resync_id = None
            return
        if self._resync_id is not None and msg.get("ActionID") == self._resync_id:
            if event == "CoreShowChannel":
                self._snapshot.append(msg)
                return
            if event == "CoreShowChannelsComplete":
                await self._publish(self._tracker.resync(self._snapshot))
                log.info("resynchronised with %d live channels", len(self._snapshot))
                self.resyncs += 1
                self._resync_id, self._snapshot = None, []
                return
        if event == "OriginateResponse" and msg.get("Response") != "Success":
            call_id = self._originates.pop(msg.get("ActionID", ""), None)
            log.info("Originate %s failed (reason %s)", call_id, msg.get("Reason"))
            if call_id is not None:
                self._tracker.forget_originate(call_id)
        elif event == "Shutdown":
            log.warning("Asterisk is shutting down (%s)", msg.get("Shutdown", ""))
        await self._publish(self._tracker.feed(msg))

    async def _publish(self, events: list[CallEvent]) -> None:
        for event in events:
            log.debug("call event %s", event)
            await self._queue.put(event)

    async def _start_resync(self) -> None:
        self._resync_id, self._snapshot = f"resync-{next(self._ids)}", []
        self._tracker.begin_resync()
        await self._send(encode_action("CoreShowChannels", self._resync_id))

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval)
            try:
                await self._action("Ping", {}, self.config.action_timeout)
            except (PbxUnavailable, OSError) as exc:
                log.warning("no answer to AMI Ping (%s); reconnecting", exc.message
                            if isinstance(exc, PbxUnavailable) else exc)  # fmt: skip
                if self._writer is not None:
                    self._writer.close()
                return

    # --- actions ------------------------------------------------------------------------

    async def _send(self, payload: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise PbxUnavailable("not connected to Asterisk")
        try:
            writer.write(payload)
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            raise PbxUnavailable(f"connection to Asterisk lost: {exc}") from exc

    async def _action(
        self,
        action: str,
        fields: Mapping[str, str],
        wait: float,
        action_id: str | None = None,
    ) -> Message:
        """Send an action and wait for its Response; PbxUnavailable on timeout or drop."""
        action_id = action_id or f"{action.lower()}-{next(self._ids)}"
        payload = encode_action(action, action_id, fields)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = fut
        try:
            await self._send(payload)
            async with asyncio.timeout(wait):
                return await fut
        except TimeoutError:
            raise PbxUnavailable(f"Asterisk did not answer {action} in {wait:g} s") from None
        finally:
            self._pending.pop(action_id, None)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(PbxUnavailable("connection to Asterisk lost"))
