"""The one normalised call event every PBX connector produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class CallEventType(StrEnum):
    RINGING = "ringing"
    DIALING = "dialing"
    ANSWERED = "answered"
    HANGUP = "hangup"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A call event as the PBX saw it; numbers are raw, the engine normalises them.

    ``call_id`` is stable for the whole call (Asterisk: the Linkedid), ``extension`` is the
    operator device the event concerns, ``at`` is the PBX's own timestamp when it gave one.
    """

    event: CallEventType
    call_id: str
    direction: Direction
    from_number: str
    to_number: str
    extension: str
    at: datetime | None = None
    # Extra vendor facts worth keeping for diagnosis (cause codes, channel names).
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dedup_key(self) -> tuple[str, str, str]:
        return (self.call_id, self.event.value, self.extension)

    @property
    def customer_number(self) -> str:
        return self.from_number if self.direction is Direction.INBOUND else self.to_number
