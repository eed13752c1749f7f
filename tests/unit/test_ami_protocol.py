"""AMI framing, parsing and encoding, checked against real Asterisk 22 recordings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cti_adapter.asterisk.protocol import (
    TRACKED_EVENTS,
    AmiParser,
    AmiProtocolError,
    decode_frame,
    encode_action,
    encode_message,
    load_recording,
    parse_recording,
    recording_to_wire,
)

_LOCAL = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "pbx" / "asterisk-ami"
RECORDINGS = _LOCAL if (_LOCAL / "inbound_answered.txt").exists() else _SHARED
NAMES = ["inbound_answered", "inbound_noanswer", "click2dial"]


def blocks_of(name: str):
    return load_recording(RECORDINGS / f"{name}.txt")


def test_recording_format_is_parsed_block_by_block() -> None:
    blocks = blocks_of("inbound_answered")
    assert blocks[0].banner == "Asterisk Call Manager/11.0.0"
    assert blocks[0].name == "Banner"
    login = blocks[1]
    assert login.offset == pytest.approx(0.020)
    assert login.fields == {
        "Response": "Success",
        "ActionID": "login-1",
        "Message": "Authentication accepted",
    }
    first_call = next(b for b in blocks if b.name == "Newchannel")
    assert first_call.offset == pytest.approx(2.026)
    assert first_call.fields["AccountCode"] == ""  # "AccountCode: " keeps an empty value
    assert first_call.fields["Linkedid"] == "1795423894.0"
    assert blocks[-1].fields["Device"] == "Queue:support_avail"
    offsets = [b.offset for b in blocks]
    assert offsets == sorted(offsets)


def test_values_keep_their_inner_spacing() -> None:
    loss = next(
        b for b in blocks_of("inbound_answered") if b.fields.get("Variable") == "RTPAUDIOQOSLOSS"
    )
    assert loss.fields["Value"].startswith("  minrxlost=000.000000;")


def test_parse_recording_text_with_two_blocks() -> None:
    text = "--- +0.000 s (banner)\nAsterisk Call Manager/11.0.0\n\n--- +1.500 s\nEvent: X\nA: b\n\n"
    blocks = parse_recording(text)
    assert [(b.offset, b.name) for b in blocks] == [(0.0, "Banner"), (1.5, "X")]
    assert blocks[1].to_wire() == b"Event: X\r\nA: b\r\n\r\n"


@pytest.mark.parametrize("name", NAMES)
def test_parser_drops_unwanted_events_and_keeps_the_rest_in_order(name: str) -> None:
    blocks = blocks_of(name)
    wire = recording_to_wire(blocks)
    parser = AmiParser(expect_banner=True)
    messages = parser.feed(wire)
    expected = [
        b.fields
        for b in blocks[1:]
        if "Event" not in b.fields or b.fields["Event"] in TRACKED_EVENTS
    ]
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert messages == expected
    assert parser.dropped == len(blocks) - 1 - len(expected)
    assert parser.dropped > len(expected)  # most of the traffic is noise
    assert not any(m.get("Event") in {"VarSet", "Newexten", "Cdr"} for m in messages)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1500])
def test_parser_is_incremental_at_any_split(chunk: int) -> None:
    wire = recording_to_wire(blocks_of("click2dial"))
    whole = AmiParser(keep_events=None, expect_banner=True).feed(wire)
    parser = AmiParser(keep_events=None, expect_banner=True)
    pieces: list[dict[str, str]] = []
    for i in range(0, len(wire), chunk):
        pieces.extend(parser.feed(wire[i : i + chunk]))
    assert pieces == whole
    assert len(whole) == len(blocks_of("click2dial")) - 1
    assert whole[0]["Message"] == "Authentication accepted"


def test_parser_holds_a_partial_message_until_its_blank_line() -> None:
    parser = AmiParser()
    assert parser.feed(b"Response: Success\r\nActionID: a1\r\n") == []
    assert parser.feed(b"Message: ok\r\n\r\nEvent: VarSet\r\nVariable: X\r\n\r\nEvent: Hang") == [
        {"Response": "Success", "ActionID": "a1", "Message": "ok"}
    ]
    assert parser.dropped == 1
    assert parser.feed(b"up\r\nUniqueid: 1.1\r\n\r\n") == [{"Event": "Hangup", "Uniqueid": "1.1"}]


def test_parser_refuses_a_peer_that_is_not_asterisk() -> None:
    with pytest.raises(AmiProtocolError):
        AmiParser(expect_banner=True).feed(b"SSH-2.0-OpenSSH_9.6\r\n")


def test_decode_frame_edge_cases() -> None:
    msg = decode_frame(b"Event: X\r\nEmpty:\r\nAppData: Set(a: b)\r\nEmpty2: ")
    assert msg == {"Event": "X", "Empty": "", "AppData": "Set(a: b)", "Empty2": ""}


def test_encode_action_exact_bytes_and_round_trip() -> None:
    wire = encode_action("Originate", "o-1", {"Channel": "PJSIP/101", "Exten": "+79161234567"})
    assert wire == (
        b"Action: Originate\r\nActionID: o-1\r\nChannel: PJSIP/101\r\nExten: +79161234567\r\n\r\n"
    )
    assert AmiParser(keep_events=None).feed(wire) == [
        {"Action": "Originate", "ActionID": "o-1", "Channel": "PJSIP/101", "Exten": "+79161234567"}
    ]


@pytest.mark.parametrize(
    "fields",
    [{"Exten": "+7916\r\nAction: Command"}, {"Exten": "1\n"}, {"Bad\r\nKey": "x"}, {"A:B": "x"}],
)
def test_encoder_refuses_line_injection(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_action("Originate", "o-1", fields)


def test_encode_message_accepts_pairs_with_repeated_keys() -> None:
    assert encode_message([("Variable", "A=1"), ("Variable", "B=2")]) == (
        b"Variable: A=1\r\nVariable: B=2\r\n\r\n"
    )
