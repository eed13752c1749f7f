"""The ``POST /cti/events`` contract: HMAC signatures and strict parsing of the body.

Integrators write against this contract (see DESIGN.md), so the rules are exact:

- The body is one JSON object or a non-empty JSON array of them (at most ``max_events``),
  UTF-8, at most :data:`MAX_BODY_BYTES`.
- Fields: ``event`` (ringing | dialing | answered | hangup), ``call_id``, ``direction``
  (optional: ``dialing`` defaults to outbound, every other event to inbound; ``dialing`` may not
  be inbound), ``from``, ``to``, ``extension``, ``at`` (optional ISO 8601). Unknown fields are
  ignored so vendors can add their own; a field given twice in one event is refused.
- ``call_id`` and ``extension`` are non-empty; ``from`` and ``to`` may be empty (a withheld
  caller id). Every string is at most 64 characters, without control characters.
- ``at`` must include a time. With ``Z`` or an offset it is converted to UTC; **without an
  offset it is taken as UTC** — ISO 8601 allows local time, refusing it would drop a PBX's
  events over an optional field, and call durations do not depend on the offset.
- All or nothing: one bad event rejects the whole body with ``InvalidInput`` whose ``field``
  names the bad field (``"body"`` for body-level problems) and, in an array, ``index``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cti_adapter.events import CallEvent, CallEventType, Direction
from engine.errors import InvalidInput, TierlineError

SIGNATURE_HEADER = "X-Tierline-Signature"
MAX_BODY_BYTES = 256 * 1024
MAX_FIELD_CHARS = 64

_PREFIX = "sha256="
_HEX = frozenset("0123456789abcdef")
_REQUIRED = ("event", "call_id", "from", "to", "extension")
_NON_EMPTY = frozenset({"call_id", "extension"})
_EVENTS = [e.value for e in CallEventType]
_DIRECTIONS = [d.value for d in Direction]


class SignatureError(TierlineError):
    """The body is not signed with the PBX secret: the request is refused (HTTP 401)."""

    status = 401


# --- signatures --------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The ``X-Tierline-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    if not secret:
        raise ValueError("an empty secret signs nothing: anyone could forge it")
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> None:
    """Raise :class:`SignatureError` unless ``header`` is the signature of the raw ``body``."""
    if not secret:
        # Fail closed: a server without a secret must not accept unsigned events.
        raise SignatureError(
            "the PBX webhook secret is not configured on this server; events are refused",
            header=SIGNATURE_HEADER,
        )
    if header is None or not header.strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", header=SIGNATURE_HEADER)
    value = header.strip()
    algo, sep, digest = value.partition("=")
    if not sep:
        raise SignatureError(
            f"malformed {SIGNATURE_HEADER}: expected 'sha256=<hex>'", header=SIGNATURE_HEADER
        )
    if algo.lower() != "sha256":
        raise SignatureError(
            f"unsupported signature algorithm {algo[:16]!r} in {SIGNATURE_HEADER}; "
            "expected 'sha256=<hex>'",
            header=SIGNATURE_HEADER,
        )
    digest = digest.lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise SignatureError(
            f"malformed {SIGNATURE_HEADER}: expected 64 hex digits after 'sha256='",
            header=SIGNATURE_HEADER,
        )
    expected = hmac.digest(secret.encode(), body, hashlib.sha256).hex()  # one C call
    if not hmac.compare_digest(expected.encode(), digest.encode()):
        raise SignatureError(
            f"wrong {SIGNATURE_HEADER}: the body is not signed with this server's PBX secret",
            header=SIGNATURE_HEADER,
        )


# --- parsing -----------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys; for a signed payload the ambiguity is refused.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every body: json.loads with hooks builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _load(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInput(
            f"body too large: {len(body)} bytes, at most {MAX_BODY_BYTES}",
            field="body",
            size=len(body),
            limit=MAX_BODY_BYTES,
        )
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"body is not UTF-8: invalid byte at position {exc.start}",
            field="body",
            position=exc.start,
        ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (position {exc.pos})",
            field="body",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        ) from None
    except _DuplicateKey as exc:
        raise InvalidInput(
            f"field {exc.key!r} is given twice in one event", field=exc.key[:MAX_FIELD_CHARS]
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise InvalidInput(f"invalid JSON: {exc}", field="body") from None
    except RecursionError:
        raise InvalidInput("invalid JSON: nested too deeply", field="body") from None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {dict: "object", list: "array"}
    return names.get(type(value), type(value).__name__)


def parse_events(body: bytes, *, max_events: int = 1000) -> list[CallEvent]:
    """Parse and validate a whole webhook body; any bad event rejects it all."""
    data = _load(body)
    if isinstance(data, dict):
        return [_parse_one(data, None)]
    if not isinstance(data, list):
        raise InvalidInput(
            f"body must be a JSON object or an array of objects, got {_type_name(data)}",
            field="body",
        )
    if not data:
        raise InvalidInput("body is an empty array: send at least one event", field="body")
    if len(data) > max_events:
        raise InvalidInput(
            f"too many events: {len(data)} in one body, at most {max_events}",
            field="body",
            count=len(data),
            limit=max_events,
        )
    return [_parse_one(item, i) for i, item in enumerate(data)]


def _parse_one(raw: object, index: int | None) -> CallEvent:
    where = "" if index is None else f"event {index}: "
    loc: dict[str, object] = {} if index is None else {"index": index}

    def fail(field: str, message: str) -> InvalidInput:
        return InvalidInput(where + message, field=field, **loc)

    if not isinstance(raw, dict):
        raise fail("body", f"each event must be a JSON object, got {_type_name(raw)}")
    for name in _REQUIRED:
        if name not in raw:
            raise fail(name, f"missing field {name!r}")
    strings: dict[str, str] = {}
    for name in (*_REQUIRED, "direction", "at"):
        value = raw.get(name)
        if value is None and name in ("direction", "at"):
            continue  # optional: absent and null mean the same
        if not isinstance(value, str):
            raise fail(name, f"field {name!r} must be a string, got {_type_name(value)}")
        if len(value) > MAX_FIELD_CHARS:
            raise fail(
                name,
                f"field {name!r} is too long: {len(value)} characters, at most {MAX_FIELD_CHARS}",
            )
        if _CONTROL.search(value):
            raise fail(name, f"field {name!r} contains a control character")
        if name in _NON_EMPTY and not value.strip():
            raise fail(name, f"field {name!r} must not be empty")
        strings[name] = value

    if strings["event"] not in _EVENTS:
        raise fail(
            "event",
            f"unknown event {strings['event']!r}; allowed: {', '.join(_EVENTS)}",
        )
    event = CallEventType(strings["event"])
    default = Direction.OUTBOUND if event is CallEventType.DIALING else Direction.INBOUND
    direction = default
    if "direction" in strings:
        if strings["direction"] not in _DIRECTIONS:
            raise fail(
                "direction",
                f"unknown direction {strings['direction']!r}; allowed: {', '.join(_DIRECTIONS)}",
            )
        direction = Direction(strings["direction"])
        if event is CallEventType.DIALING and direction is Direction.INBOUND:
            raise fail("direction", "a 'dialing' event is always outbound, got 'inbound'")

    return CallEvent(
        event=event,
        call_id=strings["call_id"],
        direction=direction,
        from_number=strings["from"],
        to_number=strings["to"],
        extension=strings["extension"],
        at=_parse_at(strings["at"], fail) if "at" in strings else None,
    )


def _parse_at(value: str, fail: Callable[[str, str], InvalidInput]) -> datetime:
    problem = f"field 'at' is not an ISO 8601 timestamp: {value!r}"
    # A bare date parses as midnight in Python; a call event needs the time of day.
    if not any(sep in value for sep in "Tt "):
        raise fail("at", problem + " (expected e.g. 2026-11-23T08:00:00.123Z)")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise fail("at", problem + " (expected e.g. 2026-11-23T08:00:00.123Z)") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def event_to_json(ev: CallEvent) -> dict[str, str]:
    """The contract's JSON shape of one event; ``at`` is UTC with ``Z`` and left out if unset."""
    out = {
        "event": ev.event.value,
        "call_id": ev.call_id,
        "direction": ev.direction.value,
        "from": ev.from_number,
        "to": ev.to_number,
        "extension": ev.extension,
    }
    if ev.at is not None:
        at = ev.at if ev.at.tzinfo is not None else ev.at.replace(tzinfo=UTC)
        out["at"] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out
