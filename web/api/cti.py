"""``POST /cti/events`` (the PBX webhook) and the pump that feeds a connector's events
into the same pipeline.

Order of checks: size (413, before reading more than the limit), signature over the raw
bytes (401), strict parsing (400 naming the field), then the pipeline; 202 only once the
events are committed. Any refusal records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from cti_adapter.directory import OperatorDirectory
from cti_adapter.events import CallEvent
from cti_adapter.pipeline import CtiPipeline, Started
from cti_adapter.port import PbxConnector
from cti_adapter.webhook import MAX_BODY_BYTES, SIGNATURE_HEADER, parse_events, verify_signature
from engine.errors import TierlineError
from engine.users import USERS_CHANNEL
from web.keys import PBX, TIERLINE

log = logging.getLogger("tierline.cti")

routes = web.RouteTableDef()

PIPELINE = web.AppKey("cti_pipeline", CtiPipeline)
# Retries of one connector event while the database is unavailable (seconds to wait).
PUMP_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


class BodyTooLarge(TierlineError):
    status = 413


async def _read_body(request: web.Request) -> bytes:
    too_large = BodyTooLarge(
        f"body too large: at most {MAX_BODY_BYTES} bytes", field="body", limit=MAX_BODY_BYTES
    )
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    # Chunked bodies have no length: read no more than one byte past the limit.
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)


@routes.post("/cti/events")
async def receive_events(request: web.Request) -> web.Response:
    body = await _read_body(request)
    secret = request.app[TIERLINE].settings.pbx_secret
    verify_signature(
        secret.get_secret_value() if secret else "", body, request.headers.get(SIGNATURE_HEADER)
    )
    events = parse_events(body)
    await request.app[PIPELINE].handle(events)
    return web.json_response({"accepted": len(events)}, status=202)


async def pump(connector: PbxConnector, pipeline: CtiPipeline) -> None:
    """Feed a connector's events into the pipeline until the connector ends or we are
    cancelled. A batch is retried while the database is unavailable, then logged and
    dropped: one bad moment must not stop every later pop."""
    try:
        await _pump(connector, pipeline)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the %s connector's event stream failed; no more PBX events", connector.name)


# Events recorded at once: those popped while the previous batch was written. It also caps
# the backlog behind a slow or failing write, and the reader's queue holds four times more.
PUMP_BATCH = 256
# The connector's events, then None: the end of the stream.
_Queue = asyncio.Queue[CallEvent | None]


async def _pump(connector: PbxConnector, pipeline: CtiPipeline) -> None:
    """Three stages: a reader task drains the connector into a bounded queue; the pump itself
    (``_take``) starts each event's pop as soon as it is read; a recorder task writes the
    popped events to the call log, a batch at a time, in the order read.

    Pops never wait for a commit: one slow commit (a WAL checkpoint) used to delay every pop
    behind it. Order is kept by construction: only the recorder writes, and it hands a batch
    to the call log only once the previous one has committed or been dropped, so a call's
    ringing is recorded before its answer and hangup (which would otherwise record a call of
    0 s). At most two batches are in flight: the one being written (or retried) and the
    backlog popped behind it; once PUMP_BATCH events wait there, the taker stops, the queue
    fills and the reader stops reading: back-pressure on the PBX.

    While a batch is retried (PUMP_RETRY_DELAYS) the later events keep popping until the
    backlog is full, and are recorded after it, in order, once it commits or is dropped; a
    later batch never overtakes a failing one. When the connector ends or fails, everything
    read before is still recorded, then the pump returns (or raises the connector's error).
    Cancelled (shutdown), it stops at once: a write already handed to the database still
    commits, while events popped but not yet handed over are lost, like those not yet read.
    """
    queue: _Queue = asyncio.Queue(PUMP_BATCH * 4)
    backlog = _Backlog(PUMP_BATCH)
    try:
        async with asyncio.TaskGroup() as tasks:
            reading = tasks.create_task(_read(connector, queue), name=f"cti-read:{connector.name}")
            tasks.create_task(_record(pipeline, backlog), name=f"cti-record:{connector.name}")
            await _take(pipeline, queue, backlog)
    finally:
        if abandoned := backlog.abandon():
            # Let the cancelled pops unwind (their lookups hold database connections) before
            # the app's cleanup goes on to close the database.
            await asyncio.gather(*abandoned, return_exceptions=True)
    error = reading.result()
    if error is not None:
        raise error


async def _read(connector: PbxConnector, queue: _Queue) -> Exception | None:
    """The connector's events, then the end marker. Its error is returned, not raised: raised
    in the task group it would cancel the recording of the events read before it."""
    error: Exception | None = None
    try:
        async for event in connector.events():
            await queue.put(event)
    except Exception as exc:
        error = exc
    await queue.put(None)  # the taker drains the queue, so this does not block for long
    return error


async def _take(pipeline: CtiPipeline, queue: _Queue, backlog: _Backlog) -> None:
    """Pop what the queue holds, a chunk at a time, and leave it to the recorder. A chunk's
    pops are pushed before the next chunk is taken: one lookup batch at a time, as the events
    that arrived meanwhile make the next, bigger one."""
    while True:
        chunk, ended = await _next_chunk(queue, await backlog.room())
        if chunk:
            started = pipeline.start(chunk)
            backlog.put(started)
            await started.popped()
        if ended:
            backlog.close()
            return


async def _next_chunk(queue: _Queue, limit: int) -> tuple[list[CallEvent], bool]:
    """Up to ``limit`` events: the first to come and whatever else is queued. True once the
    end marker was read."""
    chunk: list[CallEvent] = []
    item = await queue.get()
    while item is not None:
        chunk.append(item)
        if len(chunk) >= limit or queue.empty():
            return chunk, False
        item = queue.get_nowait()
    return chunk, True


async def _record(pipeline: CtiPipeline, backlog: _Backlog) -> None:
    while (batch := await backlog.take()) is not None:
        await _handle(pipeline, batch)


async def _handle(pipeline: CtiPipeline, batch: Started) -> None:
    for delay in (*PUMP_RETRY_DELAYS, None):
        try:
            await pipeline.finish(batch)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            count, keys = len(batch.events), ", ".join(str(ev.dedup_key) for ev in batch.events[:3])
            if delay is None:
                log.error("%d call event(s) dropped after retries (%s): %s", count, keys, exc)
            else:
                log.warning("%d call event(s) failed (%s); retrying", count, exc)
                await asyncio.sleep(delay)


class _Backlog:
    """Events popped and waiting for the call log, at most ``limit`` (given, repeats
    included); the recorder takes them all at once as its next batch."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._waiting: Started | None = None
        self._ended = False
        self._space = asyncio.Event()
        self._space.set()
        self._filled = asyncio.Event()

    def _size(self) -> int:
        return self._waiting.accepted if self._waiting is not None else 0

    async def room(self) -> int:
        """How many more events fit, once at least one does."""
        await self._space.wait()
        return self._limit - self._size()

    def put(self, started: Started) -> None:
        if self._waiting is None:
            # A batch of its own: ``started`` must not grow while the taker awaits its pops.
            self._waiting = Started()
        self._waiting.extend(started)
        self._filled.set()
        if self._size() >= self._limit:
            self._space.clear()

    def close(self) -> None:
        """Nothing more will come: ``take`` returns None once the backlog is empty."""
        self._ended = True
        self._filled.set()

    async def take(self) -> Started | None:
        await self._filled.wait()
        batch, self._waiting = self._waiting, None
        if not self._ended:
            self._filled.clear()
        self._space.set()
        return batch

    def abandon(self) -> list[asyncio.Future[Any]]:
        """Stop the pops of what waits here; returns their tasks and reads, to be awaited."""
        waiting, self._waiting = self._waiting, None
        return waiting.abandon() if waiting is not None else []


async def _directory_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The operators' extensions cached behind the first requests (each operator's first
    ring after a restart then pops without a directory read first); a user's extension or
    state changed (on any node): forget the cached operators."""
    directory = app[PIPELINE].directory

    def on_bus(channel: str, message: dict) -> None:
        if channel == USERS_CHANNEL and message.get("access"):
            directory.invalidate()

    unsubscribe = app[TIERLINE].bus.subscribe(on_bus)
    warming = asyncio.get_running_loop().create_task(_warm(directory), name="directory-warm")
    yield
    unsubscribe()
    warming.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await warming


async def _warm(directory: OperatorDirectory) -> None:
    try:
        log.info("operator directory: %d extensions cached", await directory.warm())
    except Exception as exc:  # only a head start: each extension is read when first asked
        log.warning("operator directory not warmed: %s", exc)


async def _pump_lifecycle(app: web.Application) -> AsyncIterator[None]:
    task: asyncio.Task[None] | None = None
    connector = app.get(PBX)
    if connector is not None:
        task = asyncio.get_running_loop().create_task(
            pump(connector, app[PIPELINE]), name=f"cti-pump:{connector.name}"
        )
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _pipeline_lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    # Cleanups run in reverse: the pump has stopped by now. A write it (or a webhook request
    # the server gave up on) handed to the database still commits before the database closes.
    await app[PIPELINE].drain()


def setup(app: web.Application) -> None:
    app[PIPELINE] = CtiPipeline(app[TIERLINE])
    app.add_routes(routes)
    app.cleanup_ctx.append(_pipeline_lifecycle)
    app.cleanup_ctx.append(_directory_lifecycle)
    app.cleanup_ctx.append(_pump_lifecycle)
