"""AMI events → normalised ``CallEvent``s. Pure and synchronous: no I/O, no clock.

Model: every channel of one call carries the same ``Linkedid`` (the call id). The call's
first channel (``Uniqueid == Linkedid``, the *origin*) tells the direction:
- inbound: the origin is the caller's trunk channel; every other channel that matches the
  device pattern and rings is an operator's leg (a ring group/queue gives several);
- outbound: the origin was created by ``Originate`` (or by an operator's desk phone, seen by
  its internal context); the origin is the operator, the channel it dials is the customer.

Same-millisecond events arrive in either order, so every decision is idempotent and keyed
by state, and each ``(call_id, event, extension)`` is emitted at most once.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cti_adapter.asterisk.config import DEFAULT_DEVICE_PATTERN
from cti_adapter.events import CallEvent, CallEventType, Direction

_UNKNOWN = {"", "<unknown>", "s"}
_CAUSE_ANSWERED_ELSEWHERE = "26"
_RINGING, _ANSWERED, _DONE = "ringing", "answered", "done"


def _clean(value: str | None) -> str:
    return "" if value is None or value in _UNKNOWN else value


def _at(msg: Mapping[str, str]) -> datetime | None:
    ts = msg.get("Timestamp")
    if not ts:
        return None
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except ValueError:
        return None


@dataclass(slots=True)
class _Call:
    call_id: str
    direction: Direction | None = None
    caller: str = ""  # inbound: the caller's number
    dialled: str = ""  # inbound: the number the caller dialled (DID)
    operator: str = ""  # outbound: the operator's extension
    operator_channel: str = ""
    operator_active: bool = False  # outbound: the operator's phone rang, answered or dialled
    from_number: str = ""  # outbound
    number: str = ""  # outbound: the customer's number
    channels: dict[str, str] = field(default_factory=dict)  # live Uniqueid -> channel name
    gone: set[str] = field(default_factory=set)
    legs: dict[str, str] = field(default_factory=dict)  # extension -> leg state
    emitted: set[tuple[CallEventType, str]] = field(default_factory=set)


class CallTracker:
    def __init__(
        self,
        device_pattern: str = DEFAULT_DEVICE_PATTERN,
        internal_contexts: Iterable[str] = ("from-internal",),
        *,
        remember_finished: int = 4096,
    ) -> None:
        self._device = re.compile(device_pattern)
        self._internal = frozenset(internal_contexts)
        self._calls: dict[str, _Call] = {}
        # Ended calls, so a straggler from the same millisecond cannot resurrect one.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_finished
        self._fresh: set[str] | None = None
        self._handlers = {
            "Newchannel": self._on_channel,
            "Newstate": self._on_newstate,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "Hangup": self._on_hangup,
            "OriginateResponse": self._on_originate_response,
        }

    # --- public API ---------------------------------------------------------------------

    def extension_of(self, channel: str) -> str | None:
        match = self._device.match(channel)
        return match["ext"] if match else None

    def live_calls(self) -> list[str]:
        return list(self._calls)

    def expect_originate(
        self, call_id: str, extension: str, number: str, caller_id: str | None = None
    ) -> None:
        """Our own Originate: the number is known before Asterisk echoes it back."""
        call = self._call(call_id)
        call.direction = Direction.OUTBOUND
        call.operator = extension
        call.number = number
        call.from_number = caller_id or ""

    def forget_originate(self, call_id: str) -> None:
        """Asterisk refused the Originate: nothing will happen for this id."""
        call = self._calls.get(call_id)
        if call is not None and not call.channels and not call.emitted:
            del self._calls[call_id]

    def begin_resync(self) -> None:
        """Call when sending CoreShowChannels: channels first seen from now on are newer
        than the snapshot and must not be taken for gone when it arrives."""
        self._fresh = set()

    def feed(self, msg: Mapping[str, str]) -> list[CallEvent]:
        handler = self._handlers.get(msg.get("Event", ""))
        if handler is None:
            return []
        out: list[CallEvent] = []
        handler(msg, out)
        return out

    def resync(self, channels: Iterable[Mapping[str, str]]) -> list[CallEvent]:
        """Reconcile with a ``CoreShowChannels`` snapshot (its ``CoreShowChannel`` events).

        Calls still live get ``ringing``/``answered``/``dialing`` for their current state
        (deduplicated against what was already emitted); calls or legs we were tracking
        that are gone get ``hangup`` with ``reason: resync``.
        """
        by_call: dict[str, list[Mapping[str, str]]] = {}
        for chan in channels:
            if chan.get("Linkedid") and chan.get("Uniqueid"):
                by_call.setdefault(chan["Linkedid"], []).append(chan)
        fresh, self._fresh = self._fresh or set(), None
        out: list[CallEvent] = []
        for call_id in list(self._calls):
            call = self._calls[call_id]
            live = {c["Uniqueid"] for c in by_call.get(call_id, ())}
            for uid in [u for u in call.channels if u not in live and u not in fresh]:
                self._channel_gone(call, uid, {}, out, "resync")
        for call_id, chans in by_call.items():
            if call_id in self._finished:
                continue
            # Origin first: it decides the direction and holds the caller's number.
            for chan in sorted(chans, key=lambda c: c["Uniqueid"] != call_id):
                self._on_channel(chan, out)
                self._on_newstate(chan, out)
        return out

    # --- event handlers -----------------------------------------------------------------

    def _call(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call(call_id)
        return call

    def _seen(self, msg: Mapping[str, str], prefix: str = "") -> tuple[_Call, str, str] | None:
        """Register the channel an event is about; None if the call or channel is over."""
        call_id = msg.get(prefix + "Linkedid", "")
        uid = msg.get(prefix + "Uniqueid", "")
        if not call_id or not uid or call_id in self._finished:
            return None
        call = self._call(call_id)
        if uid in call.gone:
            return None
        name = msg.get(prefix + "Channel", "")
        if self._fresh is not None and uid not in call.channels:
            self._fresh.add(uid)
        call.channels[uid] = name
        if uid == call_id and call.direction is None:
            self._classify(call, msg, prefix)
        return call, uid, name

    def _classify(self, call: _Call, msg: Mapping[str, str], prefix: str) -> None:
        if msg.get(prefix + "Context", "") in self._internal:
            call.direction = Direction.OUTBOUND
            call.operator = (
                call.operator or self.extension_of(msg.get(prefix + "Channel", "")) or ""
            )
            call.from_number = call.from_number or _clean(msg.get(prefix + "CallerIDNum"))
            call.number = call.number or _clean(msg.get(prefix + "Exten"))
        else:
            call.direction = Direction.INBOUND
            call.caller = _clean(msg.get(prefix + "CallerIDNum"))
            call.dialled = _clean(msg.get(prefix + "Exten"))

    def _on_channel(self, msg: Mapping[str, str], out: list[CallEvent]) -> None:
        self._seen(msg)

    def _on_newstate(self, msg: Mapping[str, str], out: list[CallEvent]) -> None:
        state = msg.get("ChannelStateDesc")
        if state == "Ringing":
            self._ringing(msg, "", out)
        elif state == "Up":
            self._up(msg, "", out)
        else:
            self._seen(msg)

    def _on_dial_begin(self, msg: Mapping[str, str], out: list[CallEvent]) -> None:
        dest = self._seen(msg, "Dest")
        if dest is None:
            return
        call, dest_uid, _ = dest
        if "Channel" not in msg and dest_uid == call.call_id:
            # A dial with no calling channel is Asterisk ringing an Originate's first leg.
            call.direction = Direction.OUTBOUND
            self._operator_active(call, msg, "Dest", out)
            return
        src = self._seen(msg)
        if src is None or call.direction is not Direction.OUTBOUND:
            return
        if src[1] == call.call_id and self.extension_of(msg.get("DestChannel", "")) != (
            call.operator
        ):
            user = msg.get("DialString", "").partition("@")[0].rpartition("/")[2]
            call.number = call.number or _clean(user)
            self._operator_active(call, msg, "", out)

    def _on_dial_end(self, msg: Mapping[str, str], out: list[CallEvent]) -> None:
        if msg.get("DialStatus") == "ANSWER" and "Channel" in msg:
            self._up(msg, "Dest", out)

    def _on_originate_response(self, msg: Mapping[str, str], out: list[CallEvent]) -> None:
        call = self._calls.get(msg.get("Uniqueid", ""))
        if call is None:
            return
        call.number = call.number or _clean(msg.get("Exten"))
        if msg.get("Response") == "Success":
            self._try_dialing(call, msg, out)
        elif not call.channels:
            self._finish(call, msg, out)

    def _on_hangup(self, msg: Mapping[str, str], out: list[CallEvent]) -> None:
        call_id, uid = msg.get("Linkedid", ""), msg.get("Uniqueid", "")
        if not call_id or not uid or call_id in self._finished:
            return
        call = self._calls.get(call_id)
        if call is None:
            # Hung up before anything else of the call reached us (same millisecond):
            # remember the channel as gone so its late events cannot ring a phone.
            self._call(call_id).gone.add(uid)
            return
        if uid not in call.gone:
            self._channel_gone(call, uid, msg, out)

    # --- state changes ------------------------------------------------------------------

    def _ringing(self, msg: Mapping[str, str], prefix: str, out: list[CallEvent]) -> None:
        seen = self._seen(msg, prefix)
        if seen is None:
            return
        call, uid, name = seen
        ext = self.extension_of(name)
        if call.direction is Direction.OUTBOUND:
            if uid == call.call_id or (ext and ext == call.operator):
                self._operator_active(call, msg, prefix, out)
            else:  # the customer's phone
                call.number = call.number or _clean(msg.get(prefix + "CallerIDNum"))
                self._try_dialing(call, msg, out)
        elif ext and uid != call.call_id and ext not in call.legs:
            call.legs[ext] = _RINGING
            self._emit(call, CallEventType.RINGING, ext, msg, {"channel": name}, out, prefix)

    def _up(self, msg: Mapping[str, str], prefix: str, out: list[CallEvent]) -> None:
        seen = self._seen(msg, prefix)
        if seen is None:
            return
        call, uid, name = seen
        ext = self.extension_of(name)
        if call.direction is Direction.OUTBOUND:
            if uid == call.call_id or (ext and ext == call.operator):
                self._operator_active(call, msg, prefix, out)
                return
            call.number = call.number or _clean(msg.get(prefix + "CallerIDNum"))
            self._try_dialing(call, msg, out)
            if call.legs.get(call.operator) == _RINGING:
                call.legs[call.operator] = _ANSWERED
                extra = {"channel": call.operator_channel}
                self._emit(call, CallEventType.ANSWERED, call.operator, msg, extra, out)
            return
        if not ext or uid == call.call_id or call.legs.get(ext) in (_ANSWERED, _DONE):
            return
        if ext not in call.legs:  # auto-answer: no Ringing state, the card must pop anyway
            self._emit(call, CallEventType.RINGING, ext, msg, {"channel": name}, out, prefix)
        call.legs[ext] = _ANSWERED
        self._emit(call, CallEventType.ANSWERED, ext, msg, {"channel": name}, out, prefix)
        for other, state in list(call.legs.items()):
            if state == _RINGING:
                call.legs[other] = _DONE
                extra = {"reason": "answered_elsewhere"}
                self._emit(call, CallEventType.HANGUP, other, msg, extra, out, prefix)

    def _operator_active(
        self, call: _Call, msg: Mapping[str, str], prefix: str, out: list[CallEvent]
    ) -> None:
        name = msg.get(prefix + "Channel", "")
        call.operator = call.operator or self.extension_of(name) or ""
        call.operator_channel = call.operator_channel or name
        call.from_number = call.from_number or _clean(msg.get(prefix + "CallerIDNum"))
        call.operator_active = True
        self._try_dialing(call, msg, out)

    def _try_dialing(self, call: _Call, msg: Mapping[str, str], out: list[CallEvent]) -> None:
        if not (call.operator_active and call.operator and call.number):
            return
        if call.operator not in call.legs:
            call.legs[call.operator] = _RINGING
            extra = {"channel": call.operator_channel} if call.operator_channel else {}
            self._emit(call, CallEventType.DIALING, call.operator, msg, extra, out)

    def _channel_gone(
        self,
        call: _Call,
        uid: str,
        msg: Mapping[str, str],
        out: list[CallEvent],
        reason: str | None = None,
    ) -> None:
        name = call.channels.pop(uid, msg.get("Channel", ""))
        call.gone.add(uid)
        ext = self.extension_of(name)
        leg: str | None
        if call.direction is Direction.OUTBOUND:
            is_operator = uid == call.call_id or (ext is not None and ext == call.operator)
            leg = call.operator if is_operator else None
        else:
            leg = ext if uid != call.call_id else None
        if leg:
            self._leg_over(call, leg, msg, out, reason)
        if not call.channels:
            self._finish(call, msg, out)

    def _leg_over(
        self,
        call: _Call,
        ext: str,
        msg: Mapping[str, str],
        out: list[CallEvent],
        reason: str | None = None,
    ) -> None:
        state = call.legs.get(ext)
        call.legs[ext] = _DONE
        if state not in (_RINGING, _ANSWERED):
            return
        cause = msg.get("Cause")
        if cause == _CAUSE_ANSWERED_ELSEWHERE:
            extra = {"reason": "answered_elsewhere"}
        elif reason is not None or cause is None:
            extra = {"reason": reason or "call_ended"}
        else:
            extra = {"cause": cause, "cause_txt": msg.get("Cause-txt", "")}
        self._emit(call, CallEventType.HANGUP, ext, msg, extra, out)

    def _finish(self, call: _Call, msg: Mapping[str, str] | None, out: list[CallEvent]) -> None:
        for ext, state in list(call.legs.items()):
            if state in (_RINGING, _ANSWERED):
                self._leg_over(call, ext, msg or {}, out)
        self._calls.pop(call.call_id, None)
        self._finished[call.call_id] = None
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    def _emit(
        self,
        call: _Call,
        kind: CallEventType,
        ext: str,
        msg: Mapping[str, str],
        extra: dict[str, str],
        out: list[CallEvent],
        prefix: str = "",
    ) -> None:
        key = (kind, ext)
        if key in call.emitted:
            return
        call.emitted.add(key)
        if call.direction is Direction.OUTBOUND:
            frm, to, direction = call.from_number or call.operator, call.number, Direction.OUTBOUND
        else:
            frm = call.caller or _clean(msg.get(prefix + "ConnectedLineNum"))
            to = call.dialled or _clean(msg.get(prefix + "Exten"))
            direction = Direction.INBOUND
        out.append(CallEvent(kind, call.call_id, direction, frm, to, ext, _at(msg), extra))
