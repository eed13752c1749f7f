"""A PBX call played against a running Tierline over real HTTP, signed like a real PBX.

For demos, smoke tests and integrators checking their setup; ``tierline simulate call`` is
its command line::

    tierline simulate call --from "+7 916 123-45-67" --to-extension 101
    tierline simulate call --from "+7 916 123-45-67" --to-extension 101 --to-extension 102

Every event goes to ``POST {base_url}/cti/events`` with ``X-Tierline-Signature``; anything
but ``202`` raises :class:`SimulationError` carrying the server's status and body.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from cti_adapter.webhook import SIGNATURE_HEADER, sign

Sleep = Callable[[float], Awaitable[Any]]


class SimulationError(RuntimeError):
    """The server did not accept the simulated events."""

    def __init__(self, status: int, body: str, url: str) -> None:
        super().__init__(f"POST {url} answered {status}, expected 202: {body[:500]}")
        self.status = status
        self.body = body
        self.url = url


def _events_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/cti/events"


async def _post(
    base_url: str, secret: str, payload: object, session: aiohttp.ClientSession | None
) -> dict[str, Any]:
    url = _events_url(base_url)
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)}
    own = session is None
    client = session if session is not None else aiohttp.ClientSession()
    try:
        async with client.post(url, data=body, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 202:
                raise SimulationError(resp.status, text, url)
    finally:
        if own:
            await client.close()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        # The contract promises {"accepted": N}; a simulator is also a contract check.
        raise SimulationError(202, f"not a JSON object: {text}", url)
    return answer


async def post_events(
    base_url: str,
    secret: str,
    events: list[dict[str, Any]],
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """Send ``events`` as one signed JSON array; returns the server's answer (``accepted``)."""
    return await _post(base_url, secret, events, session)


def _event(kind: str, call_id: str, from_number: str, to: str, extension: str) -> dict[str, str]:
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "event": kind,
        "call_id": call_id,
        "direction": "inbound",
        "from": from_number,
        "to": to,
        "extension": extension,
        "at": at,
    }


async def simulate_call(
    base_url: str,
    secret: str,
    from_number: str,
    extension: str | Sequence[str],
    *,
    to: str = "7000",
    answer_after: float | None = 1.0,
    hangup_after: float | None = 5.0,
    session: aiohttp.ClientSession | None = None,
    sleep: Sleep = asyncio.sleep,
) -> str:
    """Ring ``extension`` from ``from_number``; returns the call id.

    Several extensions ring together, as a ring group or a queue does: the first answers,
    and the others stop ringing then (a hangup each, as a PBX reports its legs). Each event
    is its own signed single-object request, as a PBX sends them live. ``answer_after``
    seconds after ringing the call is answered (``None``: never answered); ``hangup_after``
    seconds after that — after ringing if unanswered — it hangs up (``None``: left up, e.g.
    to look at the screen pop).
    """
    extensions = [extension] if isinstance(extension, str) else list(extension)
    if not extensions:
        raise ValueError("no extension to ring")
    call_id = f"sim.{uuid.uuid4().hex[:16]}"
    own = session is None
    client = session if session is not None else aiohttp.ClientSession()

    async def send(kind: str, *on: str) -> None:
        for ext in on:
            await _post(base_url, secret, _event(kind, call_id, from_number, to, ext), client)

    ringing = extensions
    try:
        await send("ringing", *extensions)
        if answer_after is not None:
            await sleep(answer_after)
            await send("answered", extensions[0])
            await send("hangup", *extensions[1:])  # answered elsewhere: they stop ringing
            ringing = extensions[:1]
        if hangup_after is not None:
            await sleep(hangup_after)
            await send("hangup", *ringing)
    finally:
        if own:
            await client.close()
    return call_id
