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

from aiohttp import web

from cti_adapter.events import CallEvent
from cti_adapter.pipeline import CtiPipeline
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
    cancelled. An event is retried while the database is unavailable, then logged and
    dropped: one bad moment must not stop every later pop."""
    try:
        await _pump(connector, pipeline)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the %s connector's event stream failed; no more PBX events", connector.name)


# Events handed to the pipeline at once: those that arrived while the last batch was written.
PUMP_BATCH = 256


async def _pump(connector: PbxConnector, pipeline: CtiPipeline) -> None:
    """One reader drains the connector; the pipeline gets, in order, every event that arrived
    while it wrote the previous batch. One event at a time would cap a busy PBX at one
    commit per event (a call is ringing, answered and hangup); in batches the log keeps up
    and a pop never queues behind another call's commit for long."""
    queue: asyncio.Queue[CallEvent | None] = asyncio.Queue(PUMP_BATCH * 4)

    async def read() -> None:
        try:
            async for event in connector.events():
                await queue.put(event)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await queue.put(None)  # the handler drains the queue, so this does not block
            raise
        await queue.put(None)

    reader = asyncio.get_running_loop().create_task(read(), name=f"cti-read:{connector.name}")
    try:
        while True:
            first = await queue.get()
            if first is None:
                break
            batch = [first]
            ended = False
            while len(batch) < PUMP_BATCH and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    ended = True
                    break
                batch.append(item)
            await _handle(pipeline, batch)
            if ended:
                break
        await reader  # the connector's own error, if it ended with one
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _handle(pipeline: CtiPipeline, batch: list[CallEvent]) -> None:
    for delay in (*PUMP_RETRY_DELAYS, None):
        try:
            await pipeline.handle(batch)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            keys = ", ".join(str(ev.dedup_key) for ev in batch[:3])
            if delay is None:
                log.error("%d call event(s) dropped after retries (%s): %s", len(batch), keys, exc)
            else:
                log.warning("%d call event(s) failed (%s); retrying", len(batch), exc)
                await asyncio.sleep(delay)


async def _directory_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """A user's extension or state changed (on any node): forget the cached operators."""
    directory = app[PIPELINE].directory

    def on_bus(channel: str, message: dict) -> None:
        if channel == USERS_CHANNEL and message.get("access"):
            directory.invalidate()

    unsubscribe = app[TIERLINE].bus.subscribe(on_bus)
    yield
    unsubscribe()


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


def setup(app: web.Application) -> None:
    app[PIPELINE] = CtiPipeline(app[TIERLINE])
    app.add_routes(routes)
    app.cleanup_ctx.append(_directory_lifecycle)
    app.cleanup_ctx.append(_pump_lifecycle)
