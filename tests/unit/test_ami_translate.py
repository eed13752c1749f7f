"""Real Asterisk 22 recordings → parser → CallTracker → exactly the normalised events."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cti_adapter.asterisk.fake_server import FakeAmiServer
from cti_adapter.asterisk.protocol import AmiParser, RecordedBlock, load_recording
from cti_adapter.asterisk.translate import CallTracker
from cti_adapter.events import CallEvent, CallEventType, Direction

_LOCAL = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "pbx" / "asterisk-ami"
RECORDINGS = _LOCAL if (_LOCAL / "inbound_answered.txt").exists() else _SHARED

RINGING, DIALING = CallEventType.RINGING, CallEventType.DIALING
ANSWERED, HANGUP = CallEventType.ANSWERED, CallEventType.HANGUP
IN, OUT = Direction.INBOUND, Direction.OUTBOUND


def blocks_of(name: str) -> list[RecordedBlock]:
    return load_recording(RECORDINGS / f"{name}.txt")


def run(blocks: list[RecordedBlock], tracker: CallTracker | None = None) -> list[CallEvent]:
    """Through the real parser (drops VarSet & co) and the tracker, block by block."""
    tracker = tracker or CallTracker()
    parser = AmiParser()
    out: list[CallEvent] = []
    for block in blocks:
        if block.banner is None:
            for msg in parser.feed(block.to_wire()):
                out.extend(tracker.feed(msg))
    return out


def ts(epoch: str) -> datetime:
    return datetime.fromtimestamp(float(epoch), UTC)


def brief(events: list[CallEvent]) -> list[tuple[str, str, str, str, str, str]]:
    return [
        (e.event.value, e.call_id, e.direction.value, e.from_number, e.to_number, e.extension)
        for e in events
    ]


def test_inbound_answered() -> None:
    call, chan = "1795423894.0", {"channel": "PJSIP/101-00000001"}
    assert run(blocks_of("inbound_answered")) == [
        CallEvent(RINGING, call, IN, "+79161234567", "7000", "101", ts("1795423894.171271"), chan),
        CallEvent(ANSWERED, call, IN, "+79161234567", "7000", "101", ts("1795423897.178759"), chan),
        CallEvent(
            HANGUP, call, IN, "+79161234567", "7000", "101", ts("1795423902.191286"),
            {"cause": "16", "cause_txt": "Normal Clearing"},
        ),
    ]  # fmt: skip


def test_inbound_noanswer_rings_then_hangs_up() -> None:
    events = run(blocks_of("inbound_noanswer"))
    assert brief(events) == [
        ("ringing", "1795423914.2", "inbound", "+79161234567", "7000", "101"),
        ("hangup", "1795423914.2", "inbound", "+79161234567", "7000", "101"),
    ]
    assert events[1].extra == {"cause": "0", "cause_txt": "Unknown"}
    assert events[1].at == ts("1795423934.833115")


def test_click2dial_is_outbound_dialing_answered_hangup() -> None:
    events = run(blocks_of("click2dial"))
    call = "c2d-cb0be536e674"
    assert brief(events) == [
        ("dialing", call, "outbound", "101", "+79161234567", "101"),
        ("answered", call, "outbound", "101", "+79161234567", "101"),
        ("hangup", call, "outbound", "101", "+79161234567", "101"),
    ]
    # Answered is the customer picking up (their channel Up), not the operator.
    assert events[1].at == ts("1795423950.998202")
    # The trunk channel rang too, but it is the customer's, never an operator "carrier".
    assert all(e.extension == "101" for e in events)


def test_our_own_originate_is_reported_as_soon_as_the_operator_rings() -> None:
    tracker = CallTracker()
    tracker.expect_originate("c2d-cb0be536e674", "101", "+79161234567")
    events = run(blocks_of("click2dial"), tracker)
    assert [e.event for e in events] == [DIALING, ANSWERED, HANGUP]
    # Asterisk starts ringing the operator's phone: a DialBegin with no calling channel.
    ring_starts = next(
        b.fields["Timestamp"]
        for b in blocks_of("click2dial")
        if b.name == "DialBegin" and "Channel" not in b.fields
    )
    assert events[0].at == ts(ring_starts)
    assert events[0].to_number == "+79161234567"


def test_refused_originate_is_forgotten() -> None:
    tracker = CallTracker()
    tracker.expect_originate("x-1", "101", "+79161234567")
    assert tracker.live_calls() == ["x-1"]
    tracker.forget_originate("x-1")
    assert tracker.live_calls() == []


# --- ring groups --------------------------------------------------------------------------

_LEG_TOKENS = {"101": "102", "1795423894.1": "1795423894.9", "00000001": "00000009"}
_LEG_RE = re.compile(r"(?<![\w.])(101|1795423894\.1|00000001)(?!\w)")


def _as_102(block: RecordedBlock, **override: str) -> RecordedBlock:
    fields = {
        k: v if k == "Timestamp" else _LEG_RE.sub(lambda m: _LEG_TOKENS[m[0]], v)
        for k, v in block.fields.items()
    }
    fields.update(override)
    return RecordedBlock(block.offset, fields)


def ring_group() -> list[RecordedBlock]:
    """inbound_answered with the operator leg duplicated for 102, which loses the race."""
    blocks = blocks_of("inbound_answered")
    leg = "1795423894.1"
    answer = next(
        b for b in blocks if b.name == "Newstate" and b.fields["ChannelStateDesc"] == "Up"
    )
    hangup_101 = next(b for b in blocks if b.name == "Hangup" and b.fields["Uniqueid"] == leg)
    out: list[RecordedBlock] = []
    for block in blocks:
        out.append(block)
        mentions_leg = leg in (block.fields.get("Uniqueid"), block.fields.get("DestUniqueid"))
        if mentions_leg and block.offset < answer.offset:
            out.append(_as_102(block))
        if block is answer:  # Dial cancels the other legs in the same millisecond
            cancel = _as_102(
                hangup_101,
                ChannelStateDesc="Ringing",
                Cause="26",
                **{"Cause-txt": "Answered elsewhere"},
            )
            out.append(RecordedBlock(answer.offset, cancel.fields))
    return out


def test_ring_group_both_ring_one_answers_the_other_pop_closes() -> None:
    events = run(ring_group())
    assert [(e.event.value, e.extension, e.extra.get("reason")) for e in events] == [
        ("ringing", "101", None),
        ("ringing", "102", None),
        ("answered", "101", None),
        ("hangup", "102", "answered_elsewhere"),
        ("hangup", "101", None),
    ]
    assert {e.call_id for e in events} == {"1795423894.0"}
    assert all(e.from_number == "+79161234567" and e.to_number == "7000" for e in events)


# --- robustness: same-millisecond reordering, duplicates -----------------------------------


def shuffled(blocks: list[RecordedBlock], seed: int) -> list[RecordedBlock]:
    rng = random.Random(seed)
    groups: dict[float, list[RecordedBlock]] = {}
    for block in blocks:
        groups.setdefault(block.offset, []).append(block)
    out: list[RecordedBlock] = []
    for offset in sorted(groups):
        group = groups[offset][:]
        rng.shuffle(group)
        out.extend(group)
    return out


def canonical(events: list[CallEvent]) -> list[tuple[object, ...]]:
    return sorted(
        (*row, tuple(sorted(e.extra.items()))) for row, e in zip(brief(events), events, strict=True)
    )


def per_extension_order(events: list[CallEvent]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for e in events:
        order.setdefault(e.extension, []).append(e.event.value)
    return order


SCENARIOS = {
    "inbound_answered": lambda: blocks_of("inbound_answered"),
    "inbound_noanswer": lambda: blocks_of("inbound_noanswer"),
    "click2dial": lambda: blocks_of("click2dial"),
    "ring_group": ring_group,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_millisecond_order_does_not_change_the_result(scenario: str) -> None:
    blocks = SCENARIOS[scenario]()
    expected = run(blocks)
    moved = 0
    for seed in range(40):
        variant = shuffled(blocks, seed)
        moved += variant != blocks
        got = run(variant)
        assert canonical(got) == canonical(expected), f"seed {seed}"
        assert per_extension_order(got) == per_extension_order(expected), f"seed {seed}"
    assert moved > 30  # the shuffles really reordered something


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_event_is_emitted_once_even_when_asterisk_repeats_itself(scenario: str) -> None:
    blocks = SCENARIOS[scenario]()
    doubled = [b for block in blocks for b in (block, block)]
    events = run(doubled)
    assert events == run(blocks)
    assert len({e.dedup_key for e in events}) == len(events)


def test_a_finished_call_is_not_resurrected_by_a_replay_of_its_events() -> None:
    tracker = CallTracker()
    assert len(run(blocks_of("inbound_answered"), tracker)) == 3
    assert run(blocks_of("inbound_answered"), tracker) == []
    assert tracker.live_calls() == []


def test_noise_and_unknown_events_yield_nothing() -> None:
    tracker = CallTracker()
    assert tracker.feed({"Event": "VarSet", "Linkedid": "1.0", "Uniqueid": "1.0"}) == []
    assert tracker.feed({"Event": "Newstate", "ChannelStateDesc": "Ringing"}) == []
    assert tracker.feed({"Response": "Success"}) == []


def test_device_pattern_is_configurable() -> None:
    tracker = CallTracker(device_pattern=r"^PJSIP/op(?P<ext>\d+)-")
    assert tracker.extension_of("PJSIP/op101-00000001") == "101"
    assert tracker.extension_of("PJSIP/101-00000001") is None
    assert run(blocks_of("inbound_answered"), tracker) == []  # 101 is not an operator here
    assert CallTracker().extension_of("Local/102@from-queue-0001;1") == "102"


# --- resynchronisation from CoreShowChannels -----------------------------------------------


async def snapshot(name: str, stop: float | None) -> list[dict[str, str]]:
    """The CoreShowChannel rows Asterisk would list after ``stop`` seconds of a recording."""
    server = FakeAmiServer(RECORDINGS)  # not started: replay only updates its live picture
    await server.replay(name, stop=stop)
    return server.live_channels()


def upto(name: str, stop: float) -> list[RecordedBlock]:
    return [b for b in blocks_of(name) if b.offset <= stop]


async def test_resync_of_a_call_that_started_while_we_were_away() -> None:
    events = CallTracker().resync(await snapshot("inbound_answered", 6.0))
    assert brief(events) == [
        ("ringing", "1795423894.0", "inbound", "+79161234567", "7000", "101"),
        ("answered", "1795423894.0", "inbound", "+79161234567", "7000", "101"),
    ]


async def test_resync_of_a_call_still_ringing_says_nothing_new() -> None:
    tracker = CallTracker()
    assert [e.event for e in run(upto("inbound_noanswer", 3.0), tracker)] == [RINGING]
    assert tracker.resync(await snapshot("inbound_noanswer", 3.0)) == []


async def test_resync_of_a_call_answered_while_we_were_away() -> None:
    tracker = CallTracker()
    run(upto("inbound_answered", 3.0), tracker)
    events = tracker.resync(await snapshot("inbound_answered", 6.0))
    assert [(e.event, e.extension) for e in events] == [(ANSWERED, "101")]


async def test_resync_hangs_up_calls_that_are_gone() -> None:
    tracker = CallTracker()
    run(upto("inbound_noanswer", 3.0), tracker)
    events = tracker.resync([])
    assert [(e.event, e.extension, e.extra) for e in events] == [
        (HANGUP, "101", {"reason": "resync"})
    ]
    assert tracker.live_calls() == []
    assert tracker.resync([]) == []


async def test_resync_of_an_outbound_call_in_progress() -> None:
    events = CallTracker().resync(await snapshot("click2dial", 6.0))
    assert brief(events) == [
        ("dialing", "c2d-cb0be536e674", "outbound", "101", "+79161234567", "101"),
        ("answered", "c2d-cb0be536e674", "outbound", "101", "+79161234567", "101"),
    ]


async def test_channels_newer_than_the_snapshot_survive_it() -> None:
    tracker = CallTracker()
    tracker.begin_resync()
    events = run(upto("inbound_noanswer", 3.0), tracker)  # arrives before the list completes
    assert tracker.resync([]) == []
    assert [e.event for e in events] == [RINGING]
    assert tracker.live_calls() == ["1795423914.2"]
