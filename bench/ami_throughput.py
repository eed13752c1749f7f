"""AMI parser + call tracker throughput on recorded Asterisk 22 traffic.

Replays the three recordings, repeated with fresh call ids to ~200,000 AMI events, through
the real parser (fed 64 KiB reads, as from a socket) and the CallTracker, and prints
events per second of one core's CPU time. Target: 20,000/s. Asserts nothing about time.

    python bench/ami_throughput.py [--events 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cti_adapter.asterisk.protocol import AmiParser, load_recording  # noqa: E402
from cti_adapter.asterisk.translate import CallTracker  # noqa: E402

_LOCAL = ROOT / "tests" / "fixtures" / "ami"
_SHARED = ROOT.parent / "shared" / "pbx" / "asterisk-ami"
RECORDINGS = _LOCAL if (_LOCAL / "inbound_answered.txt").exists() else _SHARED
NAMES = ("inbound_answered", "inbound_noanswer", "click2dial")
SESSION = {"FullyBooted", "SuccessfulAuth"}
READ_SIZE = 65536


def call_traffic() -> list[tuple[bytes, list[bytes], int]]:
    """Per recording: its call events on the wire, the ids to renumber, the event count."""
    out = []
    for name in NAMES:
        blocks = [
            b
            for b in load_recording(RECORDINGS / f"{name}.txt")
            if b.banner is None and b.fields.get("Event") and b.fields["Event"] not in SESSION
        ]
        ids = {b.fields[k] for b in blocks for k in ("Uniqueid", "Linkedid") if k in b.fields}
        wire = b"".join(b.to_wire() for b in blocks)
        out.append((wire, sorted((i.encode() for i in ids), key=len, reverse=True), len(blocks)))
    return out


def build_stream(target: int) -> tuple[list[bytes], int, int]:
    """Socket-sized reads of ~target events; every repetition is a new set of calls."""
    traffic = call_traffic()
    parts: list[bytes] = []
    events = calls = rep = 0
    while events < target:
        for wire, ids, count in traffic:
            for uid in ids:
                wire = wire.replace(uid, uid + b"-%d" % rep)
            parts.append(wire)
            events += count
            calls += 1
        rep += 1
    stream = b"".join(parts)
    reads = [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]
    return reads, events, calls


def measure(reads: list[bytes], with_tracker: bool) -> tuple[float, float, int, AmiParser]:
    parser, tracker = AmiParser(), CallTracker()
    emitted = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for chunk in reads:
        for msg in parser.feed(chunk):
            if with_tracker:
                emitted += len(tracker.feed(msg))
    return time.process_time() - cpu0, time.perf_counter() - wall0, emitted, parser


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--events", type=int, default=200_000)
    target = args.parse_args().events
    reads, events, calls = build_stream(target)
    size = sum(len(r) for r in reads)
    print(f"stream: {events:,} AMI events, {calls:,} calls, {size / 1e6:.1f} MB")
    for label, with_tracker in (("parser only", False), ("parser + tracker", True)):
        cpu, wall, emitted, parser = measure(reads, with_tracker)
        print(
            f"{label:17} {events / cpu:>10,.0f} events/s per core "
            f"({cpu:.2f} s CPU, {wall:.2f} s wall; kept {parser.parsed:,}, "
            f"dropped {parser.dropped:,}, call events {emitted:,})"
        )
    print("target: 20,000 events/s per core")


if __name__ == "__main__":
    main()
