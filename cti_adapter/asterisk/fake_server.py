"""A fake Asterisk manager (AMI) over real TCP, for tests and demos.

It speaks the protocol the way Asterisk 22 does on the wire: banner, ``Login`` (accepted or
``Authentication failed`` then the socket is closed), ``Ping``, ``Logoff``,
``CoreShowChannels`` (the channels live in what it replayed: ``fake_channels.py``) and
``Originate`` (``Originate successfully queued``, then the recorded click-to-dial traffic with
the request's ChannelId, extension and number put in, so the events tie back to the request).
Calls are replayed from recordings (see ``protocol.parse_recording``) on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cti_adapter.asterisk.fake_channels import LiveChannels
from cti_adapter.asterisk.protocol import (
    AmiParser,
    Message,
    RecordedBlock,
    encode_message,
    load_recording,
)

BANNER = "Asterisk Call Manager/11.0.0"
ORIGINATE_RECORDING = "click2dial"
_SESSION_EVENTS = frozenset({"FullyBooted", "SuccessfulAuth"})


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    logged_in: bool = False

    def send(self, fields: Mapping[str, str] | list[tuple[str, str]]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_message(fields))


def _token_pattern(tokens: Mapping[str, str]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    # Whole tokens only: "101" in "PJSIP/101-0004" but not in a timestamp "…948.101".
    return re.compile(rf"(?<![\w.])(?:{alternatives})(?!\w)")


class FakeAmiServer:
    def __init__(
        self,
        recordings_dir: str | Path | None = None,
        *,
        username: str = "cti",
        secret: str = "secret",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.recordings_dir = Path(recordings_dir) if recordings_dir else None
        self.username, self.secret, self.host = username, secret, host
        self._port = port
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._recordings: dict[str, list[RecordedBlock]] = {}
        self._channels = LiveChannels()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(100)
        self._login_changed = asyncio.Condition()
        self.actions: list[Message] = []  # every action received, in order
        self.logins = 0  # successful logins since creation
        self.originate_error: str | None = None  # set to refuse Originate with this message
        self.originate_speed = 0.0  # replay speed of the click-to-dial answer (0: at once)
        self.silent_actions: set[str] = set()  # lower-case action names left unanswered

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self, *, keep_calls: bool = False) -> None:
        """Stop listening and cut every client, as an Asterisk shutdown does."""
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        await self.drop_clients()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if not keep_calls:
            self._channels.clear()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> FakeAmiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drop_clients(self) -> None:
        clients, self._clients = self._clients, set()
        for client in clients:
            client.writer.close()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.writer.wait_closed()

    @property
    def client_count(self) -> int:
        return sum(1 for c in self._clients if c.logged_in)

    async def wait_for_clients(self, count: int = 1) -> None:
        """Until ``count`` clients are logged in (wrap it in ``asyncio.timeout``)."""
        async with self._login_changed:
            await self._login_changed.wait_for(lambda: self.client_count >= count)

    async def wait_for_logins(self, total: int) -> None:
        """Until ``total`` successful logins since creation (reconnects count)."""
        async with self._login_changed:
            await self._login_changed.wait_for(lambda: self.logins >= total)

    async def settle(self) -> None:
        """Until the replays started by Originate have been sent."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- recordings ---------------------------------------------------------------------

    def add_recording(self, name: str, blocks: list[RecordedBlock] | str | Path) -> None:
        self._recordings[name] = blocks if isinstance(blocks, list) else load_recording(blocks)

    def recording(self, name: str) -> list[RecordedBlock]:
        if name not in self._recordings:
            if self.recordings_dir is None:
                raise KeyError(f"no recording {name!r} and no recordings_dir")
            self.add_recording(name, self.recordings_dir / f"{name}.txt")
        return self._recordings[name]

    def live_channels(self) -> list[dict[str, str]]:
        return self._channels.snapshots()

    async def replay(
        self,
        name: str,
        speed: float = 0.0,
        *,
        start: float = 0.0,
        stop: float | None = None,
        substitute: Mapping[str, str] | None = None,
    ) -> int:
        """Send a recording's call events (offsets in [start, stop]) to logged-in clients.

        ``speed`` 0 sends back to back; otherwise the recorded gaps are divided by it.
        ``substitute`` replaces whole tokens in every value (ids, numbers, extensions).
        The live-channel picture is updated even when no client is connected.
        """
        pattern = _token_pattern(substitute or {})
        blocks = [
            b
            for b in self.recording(name)
            if b.banner is None
            and "Event" in b.fields
            and b.fields["Event"] not in _SESSION_EVENTS
            and start <= b.offset
            and (stop is None or b.offset <= stop)
        ]
        wall = time.time()
        stamps = (float(b.fields["Timestamp"]) for b in blocks if "Timestamp" in b.fields)
        first_ts = next(stamps, 0.0)
        previous = blocks[0].offset if blocks else 0.0
        for block in blocks:
            if speed > 0 and block.offset > previous:
                await asyncio.sleep((block.offset - previous) / speed)
            previous = block.offset
            fields = dict(block.fields)
            if pattern is not None and substitute:
                for key, value in fields.items():
                    if key != "Timestamp":
                        fields[key] = pattern.sub(lambda m: substitute[m[0]], value)
            if "Timestamp" in fields:  # Asterisk stamps events with its own clock
                fields["Timestamp"] = f"{wall + float(fields['Timestamp']) - first_ts:.6f}"
            self._channels.track(fields)
            await self._broadcast(fields)
        return len(blocks)

    async def send_event(self, fields: Mapping[str, str]) -> None:
        """Send one hand-made event to every logged-in client."""
        await self.send_events([fields])

    async def send_events(self, events: Iterable[Mapping[str, str]]) -> None:
        """Send hand-made events back to back, in one write: a busy Asterisk's socket
        carries many events per TCP segment, and a benchmark's PBX must not be slower than
        the client it measures."""
        payload = bytearray()
        for fields in events:
            self._channels.track(dict(fields))
            payload += encode_message(fields)
        await self._write_all(bytes(payload))

    async def send_encoded(self, payload: bytes) -> None:
        """Send events already encoded (``encode_message``) as they are. For load generators:
        no bookkeeping of live channels, so a CoreShowChannels after it lists none of them."""
        await self._write_all(payload)

    async def _broadcast(self, fields: Mapping[str, str]) -> None:
        await self._write_all(encode_message(fields))

    async def _write_all(self, payload: bytes) -> None:
        for client in list(self._clients):
            if client.logged_in and not client.writer.is_closing():
                client.writer.write(payload)
                with contextlib.suppress(ConnectionError):
                    await client.writer.drain()

    # --- the AMI session ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        self._clients.add(client)
        parser = AmiParser(keep_events=None)
        writer.write(f"{BANNER}\r\n".encode())
        try:
            while not writer.is_closing():
                data = await reader.read(65536)
                if not data:
                    break
                for msg in parser.feed(data):
                    if "Action" in msg:
                        self.actions.append(msg)
                        self._handle(client, msg)
                await writer.drain()
                if client.logged_in:
                    async with self._login_changed:
                        self._login_changed.notify_all()
        except ConnectionError:
            return  # the client went away: exactly what a real Asterisk sees too
        finally:
            self._clients.discard(client)
            writer.close()

    def _handle(self, client: _Client, msg: Message) -> None:
        action = msg.get("Action", "").lower()
        head = [("ActionID", msg["ActionID"])] if "ActionID" in msg else []
        if action in self.silent_actions:
            return  # a hung Asterisk: the action is read and never answered
        if action == "login":
            if msg.get("Username") == self.username and msg.get("Secret") == self.secret:
                client.logged_in = True
                self.logins += 1
                client.send([("Response", "Success"), *head,
                             ("Message", "Authentication accepted")])  # fmt: skip
                client.send([("Event", "FullyBooted"), ("Privilege", "system,all"),
                             ("Uptime", "3"), ("LastReload", "3"),
                             ("Status", "Fully Booted")])  # fmt: skip
            else:
                client.send([("Response", "Error"), *head, ("Message", "Authentication failed")])
                client.writer.close()  # Asterisk ends the session on a failed login
        elif not client.logged_in:
            client.send([("Response", "Error"), *head, ("Message", "Permission denied")])
        elif action == "ping":
            client.send([("Response", "Success"), *head, ("Ping", "Pong"),
                         ("Timestamp", f"{time.time():.6f}")])  # fmt: skip
        elif action == "logoff":
            client.send([("Response", "Goodbye"), *head, ("Message", "Thanks for all the fish.")])
            client.writer.close()
        elif action == "coreshowchannels":
            for message in self._channels.listing(head):
                client.send(message)
        elif action == "originate":
            self._originate(client, msg, head)
        else:
            client.send([("Response", "Error"), *head, ("Message", "Invalid/unknown command: "
                         f"{msg.get('Action')}. Use Action: ListCommands to show available "
                         "commands.")])  # fmt: skip

    def _originate(self, client: _Client, msg: Message, head: list[tuple[str, str]]) -> None:
        if not msg.get("Channel"):
            client.send([("Response", "Error"), *head, ("Message", "Channel not specified")])
            return
        if self.originate_error:
            client.send([("Response", "Error"), *head, ("Message", self.originate_error)])
            return
        client.send([("Response", "Success"), *head,
                     ("Message", "Originate successfully queued")])  # fmt: skip
        if self.recordings_dir is None and ORIGINATE_RECORDING not in self._recordings:
            return
        task = asyncio.get_running_loop().create_task(self._play_originate(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play_originate(self, msg: Message) -> None:
        blocks = self.recording(ORIGINATE_RECORDING)
        answer = next(b.fields for b in blocks if b.fields.get("Event") == "OriginateResponse")
        sent_at = next(
            b.offset
            for b in blocks
            if b.fields.get("Response") and b.fields.get("ActionID") == answer.get("ActionID")
        )
        rec_id, rec_channel = answer["Uniqueid"], answer["Channel"]
        rec_device = rec_channel.rsplit("-", 1)[0]  # PJSIP/101-00000004 -> PJSIP/101
        rec_ext = rec_device.partition("/")[2]
        channel_id = msg.get("ChannelId") or f"{int(time.time())}.{next(self._ids)}"
        tokens = {
            rec_id: channel_id,
            rec_ext: msg["Channel"].partition("/")[2] or rec_ext,
            answer.get("Exten", ""): msg.get("Exten", ""),
            answer.get("ActionID", ""): msg.get("ActionID", ""),
        }
        # Other channels of the call get fresh ids, as a second call would in Asterisk.
        for block in blocks:
            uid = block.fields.get("Uniqueid", "")
            if block.offset > sent_at and uid and uid not in tokens:
                tokens[uid] = f"{int(time.time())}.{next(self._ids)}"
        tokens = {k: v for k, v in tokens.items() if k and v}
        await self.replay(
            ORIGINATE_RECORDING, self.originate_speed, start=sent_at, substitute=tokens
        )
