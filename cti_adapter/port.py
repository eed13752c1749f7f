"""The PBX port: every vendor connector is one module behind this interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cti_adapter.events import CallEvent


@dataclass(frozen=True, slots=True)
class OriginateRequest:
    """Ring the operator's extension first, then dial the customer's number."""

    extension: str
    number: str  # E.164
    request_id: str  # becomes the PBX call id (AMI ChannelId) so events tie back to it
    caller_id: str | None = None


@runtime_checkable
class PbxConnector(Protocol):
    name: str

    def events(self) -> AsyncIterator[CallEvent]:
        """Normalised events, for as long as the connector runs; reconnects are internal."""

    async def originate(self, request: OriginateRequest) -> str:
        """Ask the PBX to place the call; returns the call id. Raises ``PbxUnavailable``
        when the PBX cannot be reached and ``InvalidInput`` when it refuses the request."""

    async def close(self) -> None: ...
