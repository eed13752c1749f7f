"""Click-to-dial: the checks, the PBX request, and the outbound call in the log.

The PBX rings the operator's extension first, then the client; the request id we pick
becomes the PBX's call id, so the ``dialing``/``answered``/``hangup`` events that follow
update the very row written here.

Rules:
- the operator must be able to see the client (another tier's client: 403, audited) and
  must have an extension;
- the number must be one of the client's numbers;
- a client who asked not to be called (``do_not_call`` flag, or the final ``do_not_call``
  state) is never dialled from here: no override, it is the client's own request;
- outside the client's calling window (the client's time zone) the call needs an
  ``override_reason``, which goes to the audit log and onto the call row.

The row is written before the PBX is asked (so the first event finds the chosen client)
and removed if the PBX refuses or is down: a call that never happened is not logged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import select

from cti_adapter.port import OriginateRequest, PbxConnector
from engine import phones
from engine.access import ensure_client_visible
from engine.calendar import describe, in_window, next_call_time
from engine.errors import InvalidInput, NotFound, PbxUnavailable
from engine.followups.planner import client_timezone
from engine.models import AuditEntry, Call, CallStatus, Client, ClientPhone, User
from engine.service import Tierline

DO_NOT_CALL_STATE = "do_not_call"
MAX_REASON = 500


@dataclass(frozen=True)
class Dialled:
    call_id: str  # the PBX call id
    row_id: int
    number: str  # E.164
    overridden: bool


class Dialer:
    def __init__(self, tl: Tierline, pbx: PbxConnector | None) -> None:
        self.tl = tl
        self.pbx = pbx

    async def dial(
        self, user: User, client_id: int, number: str, override_reason: str | None = None
    ) -> Dialled:
        tl = self.tl
        now = tl.clock.now()
        reason = (override_reason or "").strip()[:MAX_REASON] or None
        if not user.extension:
            raise InvalidInput("you have no extension to ring; ask an admin", field="extension")
        pbx = self.pbx
        if pbx is None:
            raise PbxUnavailable("no PBX is connected to this server")
        e164 = phones.normalize(number, tl.settings.default_region)
        request_id = f"tl-{uuid.uuid4().hex}"
        async with tl.db.transaction() as session:
            client = await session.get(Client, client_id)
            if client is None:
                raise NotFound(f"client {client_id} does not exist")
            await ensure_client_visible(session, user, client, "call.dial", now)
            numbers = [
                p.e164
                for p in await session.exec(
                    select(ClientPhone)
                    .where(ClientPhone.client_id == client_id)
                    .order_by(ClientPhone.id)  # type: ignore[arg-type]
                )
            ]
            if e164 not in numbers:
                raise InvalidInput(
                    f"{e164} is not one of client {client_id}'s numbers",
                    field="number",
                    numbers=numbers,
                )
            if client.do_not_call or client.state == DO_NOT_CALL_STATE:
                raise InvalidInput(
                    f"client {client_id} asked not to be called",
                    field="client_id",
                    reason="do_not_call",
                )
            tz = client_timezone(client, numbers[0], tl.settings.timezone)
            if not in_window(now, tz, tl.policy):
                if reason is None:
                    opens = next_call_time(now, tz, tl.policy)
                    raise InvalidInput(
                        f"outside the client's calling window ({tz}); next: "
                        f"{describe(opens, tz)}. Give override_reason to call anyway",
                        field="override_reason",
                        reason="outside_window",
                        timezone=tz,
                        next_window=opens.isoformat(),
                    )
                session.add(
                    AuditEntry(
                        at=now,
                        actor_id=user.id,
                        action="call.dial.override",
                        target=f"client:{client_id}",
                        allowed=True,
                        detail={
                            "reason": reason,
                            "why": "outside_window",
                            "timezone": tz,
                            "number": e164,
                            "call_id": request_id,
                        },
                    )
                )
            else:
                reason = None  # nothing was overridden
            call = Call(
                pbx_call_id=request_id,
                direction="outbound",
                extension=user.extension,
                operator_id=user.id,
                client_id=client_id,
                number=e164,
                status=CallStatus.RINGING,
                started_at=now,
                override_reason=reason,
            )
            session.add(call)
            await session.flush()
            row_id = call.id
        try:
            await pbx.originate(
                OriginateRequest(extension=user.extension, number=e164, request_id=request_id)
            )
        except Exception:
            async with tl.db.transaction() as session:
                await session.exec(delete(Call).where(Call.id == row_id))  # type: ignore[arg-type]
            raise
        return Dialled(request_id, row_id, e164, reason is not None)  # type: ignore[arg-type]
