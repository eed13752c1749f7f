"""The fake Asterisk's live channels: what its ``CoreShowChannels`` lists.

Kept from the events the fake sends, as Asterisk keeps its channel table: a channel appears
with its first event, takes each later event's snapshot (state, caller id, linked id), follows
its dialplan application and bridge, and is gone with its ``Hangup``. A connector that
reconnects asks for this list to learn which calls are still up (``AmiConnector``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

Fields = list[tuple[str, str]]

_SNAPSHOT_KEYS = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
    "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context", "Exten",
    "Priority", "Uniqueid", "Linkedid",
)  # fmt: skip


@dataclass
class _LiveChannel:
    fields: dict[str, str]
    since: float = field(default_factory=time.monotonic)
    application: str = ""
    data: str = ""
    bridge: str = ""


class LiveChannels:
    def __init__(self) -> None:
        self._live: dict[str, _LiveChannel] = {}

    def clear(self) -> None:
        self._live.clear()

    def snapshots(self) -> list[dict[str, str]]:
        return [dict(ch.fields) for ch in self._live.values()]

    def track(self, ev: Mapping[str, str]) -> None:
        """Follow one event (its ``Dest`` channel too, as a ``DialBegin`` names two)."""
        name = ev.get("Event", "")
        for prefix in ("", "Dest"):
            uid = ev.get(prefix + "Uniqueid")
            if not uid or not ev.get(prefix + "Linkedid") or not ev.get(prefix + "Channel"):
                continue
            if name == "Hangup" and not prefix:
                self._live.pop(uid, None)
                continue
            snap = {k: ev.get(prefix + k, "") for k in _SNAPSHOT_KEYS}
            live = self._live.setdefault(uid, _LiveChannel(snap))
            live.fields = snap
            if prefix:
                continue
            if name == "Newexten":
                live.application, live.data = ev.get("Application", ""), ev.get("AppData", "")
            elif name == "BridgeEnter":
                live.bridge = ev.get("BridgeUniqueid", "")
            elif name == "BridgeLeave":
                live.bridge = ""

    def listing(self, head: Fields) -> list[Fields]:
        """The reply to a ``CoreShowChannels`` (``head``: its ActionID), message by message."""
        out: list[Fields] = [
            [("Response", "Success"), *head, ("EventList", "start"),
             ("Message", "Channels will follow")],
        ]  # fmt: skip
        now = time.monotonic()
        for live in self._live.values():
            secs = int(now - live.since)
            duration = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
            out.append([("Event", "CoreShowChannel"), *head, *live.fields.items(),
                        ("Application", live.application), ("ApplicationData", live.data),
                        ("Duration", duration), ("BridgeId", live.bridge)])  # fmt: skip
        out.append([("Event", "CoreShowChannelsComplete"), *head, ("EventList", "Complete"),
                    ("ListItems", str(len(self._live)))])  # fmt: skip
        return out
