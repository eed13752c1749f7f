"""Ten thousand operator websockets on one server process: its memory, and pop latency
while a once-a-second dashboard broadcast goes to every socket.

    python bench/sockets_10k.py [--quick] [--sockets N]

The server process runs Tierline (SQLite, 100,000 clients, one operator per socket) on a
real socket. Two client processes each hold half the sockets but 200; a third holds those
200, sends signed ``ringing`` webhooks at 100 events/s (open loop) to their operators and
times each pop from the POST to the pop on the socket. Phases: pops alone, then pops while
``web.ws.broadcast`` sends a dashboard message to every socket once a second. Reports the
server's RSS before and after the sockets connected (aim: < 256 MB at 10,000), the pop
p50/p99 and how long each broadcast held the loop. --quick: 2,000 sockets, short phases.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gc_watch import GcWatch
from pop_latency import BROADCAST, CLIENTS, SECRET, number_of, pct, populate

from cti_adapter.fake import FakePbx
from cti_adapter.webhook import SIGNATURE_HEADER, sign
from engine.bus import LocalBus
from engine.service import Tierline
from engine.settings import Settings
from web.app import create_app
from web.heap import HeapKeeper, keep_heap
from web.keys import SESSIONS
from web.sessions import COOKIE
from web.ws import HUB, broadcast

RATE = 100  # pops per second
POP_SOCKETS = 200  # sockets of the operators who get the pops


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- data, in a process of its own ----------------------------------------------------------


def settings_for(data_dir: str) -> Settings:
    return Settings(
        data_dir=Path(data_dir),
        pbx_secret=SECRET,
        session_secret="bench-session-secret-0123456789",
        default_region="RU",
        timezone="Europe/Moscow",
    )


def fill(data_dir: str, operators: int) -> None:
    """Write the data set; done in another process so its garbage is not the server's RSS."""

    async def go() -> None:
        tl = Tierline.build(settings_for(data_dir), bus=LocalBus())
        await tl.start(timers=False)
        await populate(tl, operators=operators)
        await tl.stop()

    asyncio.run(go())


# --- client processes ------------------------------------------------------------------


def hold(
    port: int,
    sockets: list[tuple[int, str, str]],
    phases: list[dict[str, Any]],
    pops: bool,
    opened: Any,
    go: Any,
    out: Any,
) -> None:
    raise_fd_limit()
    runner = _hold if pops else _hold_idle
    out.send(asyncio.run(runner(port, sockets, phases, opened, go)))


# What an idle browser reads and answers, as bytes: the server's frames are unmasked and the
# same for every socket, so a holder can count and answer them without parsing.
PING = b'\x81\x0f{"type":"ping"}'
DASHBOARD = b'"type":"dashboard"'
PONG_TEXT = b'{"type":"pong"}'


class IdleBrowser(asyncio.Protocol):
    """A socket held at the cost of a few bytes compares: 9,800 of them parsed by aiohttp's
    client took the bench's two client processes a core during each broadcast, and the pop
    latency measured their scheduling, not the server."""

    def __init__(self, cookie: str, port: int, ready: asyncio.Future[None]) -> None:
        self.cookie, self.port, self.ready = cookie, port, ready
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.upgraded = False
        self.broadcasts = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nCookie: {COOKIE}={self.cookie}\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        data = self.tail + data
        if not self.upgraded:
            if b"\r\n\r\n" not in data:
                self.tail = data
                return
            self.upgraded = True
        if b'"hello"' in data and not self.ready.done():
            self.ready.set_result(None)
        # What lay wholly in the old tail was counted (and answered) on the last read.
        old = self.tail
        self.broadcasts += data.count(DASHBOARD) - old.count(DASHBOARD)
        for _ in range(data.count(PING) - old.count(PING)):
            mask = os.urandom(4)
            body = bytes(b ^ mask[i % 4] for i, b in enumerate(PONG_TEXT))
            assert self.transport is not None
            self.transport.write(bytes((0x81, 0x80 | len(PONG_TEXT))) + mask + body)
        self.tail = data[-32:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before hello"))


async def _hold_idle(
    port: int,
    sockets: list[tuple[int, str, str]],
    phases: list[dict[str, Any]],
    opened: Any,
    go: Any,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(200)
    browsers: list[IdleBrowser] = []

    async def open_socket(cookie: str) -> None:
        async with gate:
            ready = loop.create_future()
            _, browser = await loop.create_connection(
                lambda: IdleBrowser(cookie, port, ready), "127.0.0.1", port
            )
            browsers.append(browser)
            await ready

    await asyncio.gather(*(open_socket(c) for _, c, _ in sockets))
    opened.send(len(browsers))
    await loop.run_in_executor(None, go.recv)
    await asyncio.sleep(sum(p["seconds"] for p in phases) + 3.0)  # the pop process's phases
    received = sum(b.broadcasts for b in browsers)
    for browser in browsers:
        assert browser.transport is not None
        browser.transport.abort()
    return {"phases": [], "broadcasts": received}


async def _hold(
    port: int,
    sockets: list[tuple[int, str, str]],
    phases: list[dict[str, Any]],
    opened: Any,
    go: Any,
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    pending: dict[str, float] = {}
    latencies: list[float] = []
    broadcasts = [0]
    ws_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            kind = msg.data[9:22]
            if kind.startswith("screen_pop"):
                t0 = pending.pop(json.loads(msg.data)["call_id"], None)
                if t0 is not None:
                    latencies.append(now - t0)
            elif kind.startswith("dashboard"):
                broadcasts[0] += 1
            elif kind.startswith("ping"):
                await ws.send_str('{"type":"pong"}')

    gate = asyncio.Semaphore(100)

    async def open_socket(cookie: str) -> asyncio.Task[None]:
        async with gate:
            ws = await ws_session.ws_connect(
                base + "/ws", headers={"Cookie": f"{COOKIE}={cookie}"}, max_msg_size=0
            )
            await ws.receive()  # hello
            return asyncio.create_task(read(ws))

    readers = await asyncio.gather(*(open_socket(c) for _, c, _ in sockets))
    loop = asyncio.get_running_loop()
    opened.send(len(readers))
    await loop.run_in_executor(None, go.recv)  # every process connected

    async def send(i: int) -> None:
        _, _, ext = random.choice(sockets)
        call_id = f"s{i}-{uuid.uuid4().hex[:8]}"
        body = json.dumps(
            {
                "event": "ringing",
                "call_id": call_id,
                "from": number_of(random.randint(1, CLIENTS)),
                "to": "7000",
                "extension": ext,
            }
        ).encode()
        pending[call_id] = time.perf_counter()
        async with http.post(
            base + "/cti/events", data=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
        ) as resp:
            if resp.status != 202:
                print("  webhook answered", resp.status, flush=True)

    results = []
    counter = 0
    for phase in phases:
        (await http.post(base + "/bench/config", json=phase["config"])).release()
        pending.clear()
        latencies.clear()
        start = time.perf_counter()
        tasks = []
        for _ in range(int(RATE * phase["seconds"])):
            counter += 1
            delay = start + counter / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(counter)))
        await asyncio.gather(*tasks)
        for _ in range(40):
            if not pending:
                break
            await asyncio.sleep(0.05)
        results.append({"name": phase["name"], "lat": sorted(latencies), "lost": len(pending)})
    (await http.post(base + "/bench/config", json={"broadcast": False})).release()
    await asyncio.sleep(1.5)  # the last broadcast reaches every socket
    for task in readers:
        task.cancel()
    await http.close()
    await ws_session.close()
    return {"phases": results, "broadcasts": broadcasts[0]}


# --- server -------------------------------------------------------------------------------


async def run(count: int, seconds: int) -> None:
    print(f"file descriptors: {raise_fd_limit()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("spawn")
        filler = ctx.Process(target=fill, args=(tmp, count))
        filler.start()
        await asyncio.get_running_loop().run_in_executor(None, filler.join)
        tl = Tierline.build(settings_for(tmp), bus=LocalBus())
        await tl.start(timers=False)
        app = create_app(tl, pbx=FakePbx(), start_engine=False)
        keep_heap(app, HeapKeeper.from_settings(tl.settings))  # as `tierline serve` does
        state = {"broadcast": False}
        loop_times: list[float] = []

        async def configure(request: web.Request) -> web.Response:
            state["broadcast"] = (await request.json()).get("broadcast", False)
            return web.json_response({})

        app.router.add_post("/bench/config", configure)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        async def caster() -> None:
            while True:
                await asyncio.sleep(1.0)
                if state["broadcast"]:
                    t0 = time.perf_counter()
                    await broadcast(app, BROADCAST)
                    loop_times.append(time.perf_counter() - t0)

        lags: dict[bool, list[float]] = {False: [], True: []}

        async def lag_monitor() -> None:
            """How late the server's loop wakes a 10 ms sleep: its own delay, apart from
            the clients'."""
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(0.01)
                lags[state["broadcast"]].append(time.perf_counter() - t0 - 0.01)

        casting = asyncio.create_task(caster())
        rss_before = rss_mb()
        codec = app[SESSIONS]
        sockets = [(i + 1, codec.issue(i + 1)[0], str(1000 + i)) for i in range(count)]
        # The process that times pops holds only its operators' sockets: 5,000 sockets
        # reading a broadcast or a heartbeat in the timing process would be its own delay.
        rest = sockets[POP_SOCKETS:]
        halves = [sockets[:POP_SOCKETS], rest[: len(rest) // 2], rest[len(rest) // 2 :]]
        phases = [
            {"name": "warm-up", "seconds": 2, "config": {"broadcast": False}},
            {"name": f"pop {RATE}/s", "seconds": seconds, "config": {"broadcast": False}},
            {
                "name": f"pop {RATE}/s + 1/s broadcast",
                "seconds": seconds,
                "config": {"broadcast": True},
            },
        ]
        procs, outs, opens, gos = [], [], [], []
        t0 = time.perf_counter()
        for n, half in enumerate(halves):
            out_r, out_w = ctx.Pipe(duplex=False)
            open_r, open_w = ctx.Pipe(duplex=False)
            go_r, go_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=hold, args=(port, half, phases, n == 0, open_w, go_r, out_w))
            proc.start()
            procs.append(proc)
            outs.append(out_r)
            opens.append(open_r)
            gos.append(go_w)
        loop = asyncio.get_running_loop()
        for open_r in opens:
            await loop.run_in_executor(None, open_r.recv)
        connected = len(app[HUB].sockets())
        rss_open = rss_mb()
        print(
            f"{connected:,} sockets open in {time.perf_counter() - t0:.1f} s; server RSS "
            f"{rss_before:.0f} MB before, {rss_open:.0f} MB with the sockets "
            f"({(rss_open - rss_before) * 1024 / max(connected, 1):.1f} KB each)",
            flush=True,
        )
        monitoring = asyncio.create_task(lag_monitor())  # from the first phase on
        gc_watch = GcWatch().__enter__()
        for go_w in gos:
            go_w.send(True)
        results = [await loop.run_in_executor(None, out_r.recv) for out_r in outs]
        for proc in procs:
            await loop.run_in_executor(None, proc.join)
        rss_end = rss_mb()
        casting.cancel()
        monitoring.cancel()
        gc_watch.__exit__()
        gc_watch.report()
        await runner.cleanup()
        await tl.stop()

    print(f"\n{'phase':36} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lost':>5}")
    for r in results[0]["phases"][1:]:
        lat = r["lat"]
        print(
            f"{r['name']:36} {len(lat):6d} {pct(lat, 0.5):8.2f} {pct(lat, 0.99):8.2f} "
            f"{(lat[-1] * 1000 if lat else float('nan')):8.2f} {r['lost']:5d}"
        )
    received = sum(r["broadcasts"] for r in results)
    if loop_times:
        times = sorted(loop_times)
        print(
            f"broadcast to {connected:,} sockets: {len(times)} runs, {received:,} messages "
            f"received ({received / max(connected, 1):.1f} per socket), loop time median "
            f"{times[len(times) // 2] * 1000:.1f} ms, "
            f"max {times[-1] * 1000:.1f} ms"
        )
    for broadcasting, lag in lags.items():
        lag.sort()
        print(
            f"server loop lag {'with' if broadcasting else 'without'} broadcasts: "
            f"p50 {pct(lag, 0.5):.2f} ms, p99 {pct(lag, 0.99):.2f} ms, "
            f"max {(lag[-1] * 1000 if lag else float('nan')):.1f} ms"
        )
    print(f"server RSS at the end: {rss_end:.0f} MB (aim < 256 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 sockets, short phases")
    parser.add_argument("--sockets", type=int, default=None)
    args = parser.parse_args()
    count = args.sockets or (2_000 if args.quick else 10_000)
    asyncio.run(run(count, 5 if args.quick else 15))


if __name__ == "__main__":
    main()
