"""Asterisk Manager Interface (AMI) connector."""

from cti_adapter.asterisk.config import DEFAULT_DEVICE_PATTERN, AmiConfig, backoff_delay
from cti_adapter.asterisk.connector import AmiConnector, AmiLoginRefused
from cti_adapter.asterisk.fake_server import FakeAmiServer
from cti_adapter.asterisk.protocol import (
    TRACKED_EVENTS,
    AmiParser,
    AmiProtocolError,
    RecordedBlock,
    encode_action,
    encode_message,
    load_recording,
    parse_recording,
    recording_to_wire,
)
from cti_adapter.asterisk.translate import CallTracker

__all__ = [
    "DEFAULT_DEVICE_PATTERN",
    "TRACKED_EVENTS",
    "AmiConfig",
    "AmiConnector",
    "AmiLoginRefused",
    "AmiParser",
    "AmiProtocolError",
    "CallTracker",
    "FakeAmiServer",
    "RecordedBlock",
    "backoff_delay",
    "encode_action",
    "encode_message",
    "load_recording",
    "parse_recording",
    "recording_to_wire",
]
