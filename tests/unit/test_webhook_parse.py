"""The POST /cti/events contract: what a PBX may send, and exactly how a bad body is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cti_adapter.events import CallEvent, CallEventType, Direction
from cti_adapter.webhook import (
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    SignatureError,
    event_to_json,
    parse_events,
    sign,
    verify_signature,
)
from engine.errors import InvalidInput, TierlineError

SECRET = "pbx-s3cret"

CONTRACT_EXAMPLE = {
    "event": "ringing",
    "call_id": "1763884800.42",
    "direction": "inbound",
    "from": "+7 916 123-45-67",
    "to": "7000",
    "extension": "101",
    "at": "2026-11-23T08:00:00.123Z",
}


def ev(**changes: object) -> dict[str, object]:
    out: dict[str, object] = dict(CONTRACT_EXAMPLE)
    for key, value in changes.items():
        out[key.rstrip("_")] = value  # from_= → "from"
    return out


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def refused(raw: bytes, **kw: int) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_events(raw, **kw)
    assert info.value.status == 400
    return info.value


# --- valid bodies ------------------------------------------------------------------------


def test_the_contract_example_as_one_object() -> None:
    [event] = parse_events(body(CONTRACT_EXAMPLE))
    assert event == CallEvent(
        event=CallEventType.RINGING,
        call_id="1763884800.42",
        direction=Direction.INBOUND,
        from_number="+7 916 123-45-67",
        to_number="7000",
        extension="101",
        at=datetime(2026, 11, 23, 8, 0, 0, 123000, tzinfo=UTC),
    )


def test_an_array_keeps_order_and_defaults_direction_from_the_event() -> None:
    events = parse_events(
        body(
            [
                {
                    "event": "dialing",
                    "call_id": "c1",
                    "from": "101",
                    "to": "+79161234567",
                    "extension": "101",
                },
                {
                    "event": "answered",
                    "call_id": "c1",
                    "from": "101",
                    "to": "+79161234567",
                    "extension": "101",
                    "direction": "outbound",
                },
                {
                    "event": "hangup",
                    "call_id": "c2",
                    "from": "",
                    "to": "7000",
                    "extension": "102",
                    "at": None,
                },
            ]
        )
    )
    assert [e.event for e in events] == [
        CallEventType.DIALING,
        CallEventType.ANSWERED,
        CallEventType.HANGUP,
    ]
    assert [e.direction for e in events] == [
        Direction.OUTBOUND,
        Direction.OUTBOUND,
        Direction.INBOUND,
    ]
    assert events[0].customer_number == "+79161234567"
    assert events[2].from_number == ""  # a withheld caller id is still an event
    assert all(e.at is None for e in events)


def test_unknown_fields_are_ignored() -> None:
    [event] = parse_events(body(ev(vendor_cause="16", channel="PJSIP/101-0001")))
    assert event.call_id == "1763884800.42"


def test_at_with_an_offset_becomes_aware_utc() -> None:
    [event] = parse_events(body(ev(at="2026-11-23T11:00:00+03:00")))
    assert event.at == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert event.at.utcoffset() == timedelta(0)


def test_at_without_an_offset_is_taken_as_utc() -> None:
    [event] = parse_events(body(ev(at="2026-11-23T08:00:00")))
    assert event.at == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert event.at.tzinfo is not None


def test_a_utf8_bom_is_tolerated() -> None:
    assert len(parse_events(b"\xef\xbb\xbf" + body(CONTRACT_EXAMPLE))) == 1


def test_event_to_json_round_trips_in_the_contract_shape() -> None:
    [event] = parse_events(body(CONTRACT_EXAMPLE))
    assert event_to_json(event) == CONTRACT_EXAMPLE | {"at": "2026-11-23T08:00:00.123000Z"}
    assert parse_events(body(event_to_json(event))) == [event]


def test_event_to_json_leaves_out_an_unset_at_and_converts_to_utc() -> None:
    [event] = parse_events(body(ev(at=None)))
    assert "at" not in event_to_json(event)
    msk = timezone(timedelta(hours=3))
    moved = CallEvent(
        CallEventType.HANGUP,
        "c",
        Direction.INBOUND,
        "1",
        "2",
        "101",
        at=datetime(2026, 11, 23, 11, 0, tzinfo=msk),
    )
    assert event_to_json(moved)["at"] == "2026-11-23T08:00:00Z"


# --- body-level problems -----------------------------------------------------------------


def test_invalid_json_names_the_position() -> None:
    err = refused(b'{"event": "ringing",\n "call_id": }')
    assert err.details == {"field": "body", "line": 2, "column": 13, "position": 33}
    assert err.message == "invalid JSON: Expecting value at line 2 column 13 (position 33)"


def test_body_that_is_not_utf8() -> None:
    err = refused(b'{"from": "\xff"}')
    assert err.details == {"field": "body", "position": 10}
    assert "not UTF-8" in err.message


def test_nan_is_not_json() -> None:
    err = refused(b'[{"at": NaN}]')
    assert err.details == {"field": "body"}
    assert err.message == "invalid JSON: NaN is not valid JSON"


def test_deep_nesting_is_refused_not_crashing() -> None:
    err = refused(b"[" * 100_000 + b"]" * 100_000)
    assert err.message == "invalid JSON: nested too deeply"


def test_body_neither_object_nor_array() -> None:
    err = refused(b'"ringing"')
    assert err.details == {"field": "body"}
    assert err.message == "body must be a JSON object or an array of objects, got str"


def test_empty_array() -> None:
    err = refused(b"[]")
    assert err.details == {"field": "body"}
    assert err.message == "body is an empty array: send at least one event"


def test_too_many_events() -> None:
    err = refused(body([CONTRACT_EXAMPLE] * 4), max_events=3)
    assert err.details == {"field": "body", "count": 4, "limit": 3}
    assert err.message == "too many events: 4 in one body, at most 3"


def test_body_too_large() -> None:
    err = refused(b" " * (MAX_BODY_BYTES + 1))
    assert err.details["field"] == "body"
    assert err.details["limit"] == MAX_BODY_BYTES == 256 * 1024


def test_array_item_that_is_not_an_object() -> None:
    err = refused(body([CONTRACT_EXAMPLE, "ringing"]))
    assert err.details == {"field": "body", "index": 1}
    assert err.message == "event 1: each event must be a JSON object, got str"


def test_a_field_given_twice() -> None:
    err = refused(b'{"event": "ringing", "event": "hangup"}')
    assert err.details == {"field": "event"}
    assert err.message == "field 'event' is given twice in one event"


# --- field-level problems ----------------------------------------------------------------


def test_missing_field_in_a_single_object() -> None:
    data = ev()
    del data["call_id"]
    err = refused(body(data))
    assert err.details == {"field": "call_id"}
    assert err.message == "missing field 'call_id'"


def test_missing_field_in_an_array_names_the_index() -> None:
    bad = ev()
    del bad["extension"]
    err = refused(body([ev(), ev(), ev(), bad, ev()]))
    assert err.details == {"field": "extension", "index": 3}
    assert err.message == "event 3: missing field 'extension'"


def test_one_bad_event_rejects_the_whole_body() -> None:
    with pytest.raises(InvalidInput):
        parse_events(body([ev(call_id="ok-1"), ev(event="rang"), ev(call_id="ok-3")]))


def test_wrong_type_number() -> None:
    err = refused(body(ev(extension=101)))
    assert err.details == {"field": "extension"}
    assert err.message == "field 'extension' must be a string, got number"


def test_wrong_type_null_for_a_required_field() -> None:
    err = refused(body([ev(), ev(from_=None)]))
    assert err.details == {"field": "from", "index": 1}
    assert err.message == "event 1: field 'from' must be a string, got null"


def test_wrong_type_for_an_optional_field() -> None:
    err = refused(body(ev(at=1763884800)))
    assert err.details == {"field": "at"}
    assert err.message == "field 'at' must be a string, got number"


def test_unknown_event_lists_the_allowed_ones() -> None:
    err = refused(body(ev(event="RINGING")))
    assert err.details == {"field": "event"}
    assert err.message == ("unknown event 'RINGING'; allowed: ringing, dialing, answered, hangup")


def test_unknown_direction() -> None:
    err = refused(body(ev(direction="incoming")))
    assert err.details == {"field": "direction"}
    assert err.message == "unknown direction 'incoming'; allowed: inbound, outbound"


def test_dialing_cannot_be_inbound() -> None:
    err = refused(body(ev(event="dialing", direction="inbound")))
    assert err.details == {"field": "direction"}
    assert err.message == "a 'dialing' event is always outbound, got 'inbound'"


@pytest.mark.parametrize("at", ["yesterday", "2026-11-23", "2026-13-01T00:00:00Z", ""])
def test_bad_at(at: str) -> None:
    err = refused(body(ev(at=at)))
    assert err.details == {"field": "at"}
    assert err.message == (
        f"field 'at' is not an ISO 8601 timestamp: {at!r} (expected e.g. 2026-11-23T08:00:00.123Z)"
    )


@pytest.mark.parametrize("field", ["call_id", "from", "to", "extension"])
def test_overlong_strings(field: str) -> None:
    assert len(parse_events(body(ev(**{field: "9" * 64})))) == 1
    err = refused(body([ev(**{field: "9" * 65})]))
    assert err.details == {"field": field, "index": 0}
    assert err.message == f"event 0: field {field!r} is too long: 65 characters, at most 64"


@pytest.mark.parametrize("field", ["call_id", "extension"])
def test_empty_ids(field: str) -> None:
    err = refused(body(ev(**{field: "  "})))
    assert err.details == {"field": field}
    assert err.message == f"field {field!r} must not be empty"


def test_control_characters() -> None:
    err = refused(body(ev(call_id="abc\n<script>")))
    assert err.details == {"field": "call_id"}
    assert err.message == "field 'call_id' contains a control character"


def test_errors_serialise_for_the_http_answer() -> None:
    err = refused(body([ev(), ev(direction="sideways")]))
    assert err.to_json() == {
        "error": "InvalidInput",
        "message": "event 1: unknown direction 'sideways'; allowed: inbound, outbound",
        "field": "direction",
        "index": 1,
    }


# --- signatures --------------------------------------------------------------------------

RAW = body(CONTRACT_EXAMPLE)


def test_sign_is_hmac_sha256_of_the_raw_body() -> None:
    expected = hmac.new(SECRET.encode(), RAW, hashlib.sha256).hexdigest()
    assert sign(SECRET, RAW) == f"sha256={expected}"


def test_signature_ok() -> None:
    verify_signature(SECRET, RAW, sign(SECRET, RAW))
    verify_signature(SECRET, RAW, sign(SECRET, RAW).upper().replace("SHA256=", "sha256="))


def test_signature_error_is_a_401_tierline_error() -> None:
    assert issubclass(SignatureError, TierlineError)
    assert not issubclass(SignatureError, InvalidInput)
    assert SignatureError.status == 401


def _sig_refused(header: str | None, secret: str = SECRET) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify_signature(secret, RAW, header)
    assert info.value.status == 401
    assert info.value.details == {"header": SIGNATURE_HEADER}
    return info.value


def test_signature_missing() -> None:
    assert _sig_refused(None).message == "missing X-Tierline-Signature header"
    assert _sig_refused("  ").message == "missing X-Tierline-Signature header"


def test_signature_malformed() -> None:
    no_prefix = sign(SECRET, RAW).removeprefix("sha256=")
    assert _sig_refused(no_prefix).message == (
        "malformed X-Tierline-Signature: expected 'sha256=<hex>'"
    )
    for bad in ("sha256=", "sha256=xyz", "sha256=" + "g" * 64, sign(SECRET, RAW) + "00"):
        assert _sig_refused(bad).message == (
            "malformed X-Tierline-Signature: expected 64 hex digits after 'sha256='"
        )


def test_signature_wrong() -> None:
    err = _sig_refused(sign("another-secret", RAW))
    assert err.message == (
        "wrong X-Tierline-Signature: the body is not signed with this server's PBX secret"
    )
    tampered = RAW.replace(b"101", b"102")
    with pytest.raises(SignatureError):
        verify_signature(SECRET, tampered, sign(SECRET, RAW))


def test_signature_sha1_prefixed_is_refused() -> None:
    sha1 = hmac.new(SECRET.encode(), RAW, hashlib.sha1).hexdigest()
    err = _sig_refused(f"sha1={sha1}")
    assert err.message == (
        "unsupported signature algorithm 'sha1' in X-Tierline-Signature; expected 'sha256=<hex>'"
    )


def test_a_server_without_a_secret_refuses_everything() -> None:
    err = _sig_refused(sign(SECRET, RAW), secret="")
    assert "not configured" in err.message
    with pytest.raises(ValueError):
        sign("", RAW)
