"""A PBX in memory: the web app, the engine and the tests run with no Asterisk at all.

``FakePbx`` is a real :class:`~cti_adapter.port.PbxConnector`, in the spirit of httpx's
``MockTransport``: a test (or ``tierline serve --demo``) rings an extension, answers and hangs
up through helper methods, and the consumer of :meth:`FakePbx.events` sees the same normalised
``CallEvent`` stream a vendor connector produces. ``originate`` records each request and can
be told to fail the two ways a real PBX fails.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.port import OriginateRequest
from engine.errors import InvalidInput, PbxUnavailable


@dataclass(frozen=True, slots=True)
class _Call:
    direction: Direction
    from_number: str
    to_number: str


class FakePbx:
    """An ``asyncio.Queue``-backed PBX connector named ``"fake"``.

    Set ``down = True`` to make ``originate`` raise ``PbxUnavailable``, or ``refuse = "why"``
    to make it raise ``InvalidInput``. ``now`` supplies event timestamps (pass a
    ``FakeClock().now`` for deterministic ones).
    """

    name = "fake"

    def __init__(self, *, now: Callable[[], datetime] | None = None) -> None:
        self._queue: asyncio.Queue[CallEvent | None] = asyncio.Queue()
        self._now = now or (lambda: datetime.now(UTC))
        self._ids = itertools.count(1)
        # Calls the fake has seen, so answer/hang_up repeat the numbers as a PBX would.
        self._calls: dict[str, _Call] = {}
        self._closed = False
        self.originated: list[OriginateRequest] = []
        self.pushed: list[CallEvent] = []
        self.down = False
        self.refuse: str | None = None

    # --- PbxConnector ------------------------------------------------------------------

    async def events(self) -> AsyncIterator[CallEvent]:
        """Every pushed event in order; ends once :meth:`close` is called."""
        while True:
            ev = await self._queue.get()
            if ev is None:
                # Wake any other reader too, then stop.
                self._queue.put_nowait(None)
                return
            yield ev

    async def originate(self, request: OriginateRequest) -> str:
        if self._closed or self.down:
            raise PbxUnavailable("the fake PBX is down", connector=self.name)
        if self.refuse is not None:
            raise InvalidInput(f"the PBX refused the call: {self.refuse}", connector=self.name)
        self.originated.append(request)
        self._calls[request.request_id] = _Call(
            Direction.OUTBOUND, request.caller_id or request.extension, request.number
        )
        self.push(CallEventType.DIALING, request.request_id, request.extension)
        return request.request_id

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    # --- driving the fake --------------------------------------------------------------

    def ring(
        self, from_number: str, extension: str, to: str = "7000", call_id: str | None = None
    ) -> str:
        """An inbound call rings ``extension``; returns the call id."""
        call_id = call_id or f"fake.{next(self._ids)}"
        self._calls[call_id] = _Call(Direction.INBOUND, from_number, to)
        self.push(CallEventType.RINGING, call_id, extension)
        return call_id

    def answer(self, call_id: str, extension: str) -> None:
        self.push(CallEventType.ANSWERED, call_id, extension)

    def hang_up(self, call_id: str, extension: str) -> None:
        # The call is kept: a PBX repeats a hangup now and then, with the same numbers.
        self.push(CallEventType.HANGUP, call_id, extension)

    def push(self, event: CallEventType, call_id: str, extension: str) -> CallEvent:
        """Emit one event of a call the fake knows (or an inbound one with blank numbers)."""
        if self._closed:
            raise RuntimeError("the fake PBX is closed")
        call = self._calls.get(call_id, _Call(Direction.INBOUND, "", ""))
        ev = CallEvent(
            event=event,
            call_id=call_id,
            direction=call.direction,
            from_number=call.from_number,
            to_number=call.to_number,
            extension=extension,
            at=self._now(),
        )
        self.pushed.append(ev)
        self._queue.put_nowait(ev)
        return ev

    def emit(self, ev: CallEvent) -> None:
        """Emit an arbitrary event as given (duplicates, odd orders, foreign extensions)."""
        if self._closed:
            raise RuntimeError("the fake PBX is closed")
        self.pushed.append(ev)
        self._queue.put_nowait(ev)
