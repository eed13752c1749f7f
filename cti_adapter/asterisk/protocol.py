"""AMI wire format: framing, parsing, action encoding, and the recording file format.

An AMI message is ``Key: Value`` lines ending in ``\\r\\n``, closed by an empty line. A real
call produces ~90 messages, most of them ``VarSet``/``Newexten`` we do not need, so the
parser looks at the first line of a frame and drops unwanted events before decoding it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

Message = dict[str, str]

SEPARATOR = b"\r\n\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"

# The events the call tracker and the connector act on; everything else is dropped unread.
TRACKED_EVENTS: frozenset[str] = frozenset(
    {
        "Newchannel",
        "Newstate",
        "DialBegin",
        "DialEnd",
        "Hangup",
        "OriginateResponse",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
        "FullyBooted",
        "Shutdown",
    }
)


class AmiProtocolError(Exception):
    """The peer sent something that is not AMI."""


def decode_frame(frame: bytes) -> Message:
    """One frame (without its closing blank line) to a dict; keys as sent, last one wins."""
    msg: Message = {}
    for line in frame.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            # "Key:" with an empty value, or a line with no colon at all (kept as is).
            key, _, value = line.partition(":")
        if key:
            msg[key] = value
    return msg


class AmiParser:
    """Incremental AMI parser: feed it bytes as they come, get whole messages back.

    ``keep_events=None`` keeps every message (the fake server parsing actions);
    otherwise events whose name is not in the set are counted in ``dropped`` and skipped.
    Responses and anything that is not an event are always kept.
    """

    def __init__(
        self, keep_events: Iterable[str] | None = TRACKED_EVENTS, *, expect_banner: bool = False
    ) -> None:
        self._keep: frozenset[bytes] | None = (
            None if keep_events is None else frozenset(e.encode() for e in keep_events)
        )
        self._buf = b""
        self._want_banner = expect_banner
        self.banner: str | None = None
        self.dropped = 0
        self.parsed = 0

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf + data if self._buf else data
        if self._want_banner:
            end = buf.find(b"\r\n")
            if end < 0:
                self._buf = buf
                return []
            self.banner = buf[:end].decode("utf-8", "replace")
            if not self.banner.startswith(BANNER_PREFIX):
                raise AmiProtocolError(f"not an Asterisk manager: {self.banner[:80]!r}")
            self._want_banner = False
            buf = buf[end + 2 :]
        frames = buf.split(SEPARATOR)
        self._buf = frames.pop()
        keep = self._keep
        out: list[Message] = []
        for frame in frames:
            if not frame:
                continue
            if keep is not None and frame.startswith(b"Event: "):
                end = frame.find(b"\r\n")
                if frame[7 : end if end >= 0 else None] not in keep:
                    self.dropped += 1
                    continue
            self.parsed += 1
            out.append(decode_frame(frame))
        return out


def encode_message(fields: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """Fields to one wire message. CR/LF in a value would inject lines: refused."""
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    parts: list[str] = []
    for key, value in pairs:
        text = str(value)
        if "\r" in text or "\n" in text or "\r" in key or "\n" in key or ":" in key:
            raise ValueError(f"AMI field {key!r} contains a line break or a bad key")
        parts.append(f"{key}: {text}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


def encode_action(action: str, action_id: str, fields: Mapping[str, str] | None = None) -> bytes:
    """``Action: X`` / ``ActionID: id`` then the fields, closed by a blank line."""
    pairs: list[tuple[str, str]] = [("Action", action), ("ActionID", action_id)]
    if fields:
        pairs.extend(fields.items())
    return encode_message(pairs)


# --- recordings: blocks as received, each preceded by "--- +S.SSS s" ------------------------

_HEADER = re.compile(r"^--- \+(?P<offset>\d+(?:\.\d+)?) s(?P<note> \(banner\))?\s*$")


@dataclass(frozen=True, slots=True)
class RecordedBlock:
    offset: float  # seconds since login
    fields: Message  # empty for the banner
    banner: str | None = None

    @property
    def name(self) -> str:
        """The event name, ``Response``, or ``Banner``."""
        if self.banner is not None:
            return "Banner"
        return self.fields.get("Event") or ("Response" if "Response" in self.fields else "")

    def to_wire(self) -> bytes:
        if self.banner is not None:
            return (self.banner + "\r\n").encode()
        return encode_message(self.fields)


def parse_recording(text: str) -> list[RecordedBlock]:
    """Parse a recording; values keep their spacing (``AccountCode: `` stays empty)."""
    blocks: list[RecordedBlock] = []
    offset: float | None = None
    is_banner = False
    lines: list[str] = []

    def flush() -> None:
        if offset is None:
            return
        body = [ln for ln in lines if ln]
        if is_banner:
            blocks.append(RecordedBlock(offset, {}, banner="\n".join(body)))
        elif body:
            blocks.append(RecordedBlock(offset, decode_frame("\r\n".join(body).encode())))

    for raw in text.splitlines():
        header = _HEADER.match(raw)
        if header:
            flush()
            offset = float(header["offset"])
            is_banner = header["note"] is not None
            lines = []
        elif offset is not None:
            lines.append(raw.rstrip("\r"))
    flush()
    return blocks


def load_recording(path: str | Path) -> list[RecordedBlock]:
    return parse_recording(Path(path).read_text(encoding="utf-8"))


def recording_to_wire(blocks: Iterable[RecordedBlock]) -> bytes:
    """What a client would have read off the socket for these blocks."""
    return b"".join(block.to_wire() for block in blocks)
