"""Logging never blocks the thread that logs (the event loop, on the server).

The output here is a real pipe whose reader has not read: a write to it blocks. Logging goes
on regardless; the lines come out once the pipe is read; a flood beyond the queue is dropped
and counted, and said in the output."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

import pytest

from web import log_output
from web.log_output import LogOutput


@pytest.fixture
def full_pipe() -> Iterator[tuple[int, object]]:
    """A pipe whose buffer is already full, and a blocking text stream on its write end."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    filled = 0
    for size in (4096, 1):  # pages, then whatever room a page left
        with contextlib.suppress(BlockingIOError):  # raised once the pipe is full: the aim
            while True:
                filled += os.write(w, b"x" * size)
    os.set_blocking(w, True)
    stream = os.fdopen(w, "w", buffering=1)
    yield r, stream, filled
    # Whatever a test left blocked: read the pipe to its end so the close can flush.
    drain = threading.Thread(target=_read_all, args=(r, b"\0"), daemon=True)
    drain.start()
    stream.close()
    drain.join(5)
    os.close(r)


def _stuck(output: LogOutput) -> None:
    """Log one line and wait until the writer has taken it: it is now stuck writing it."""
    logging.getLogger("tierline.test").warning("first")
    for _ in range(500):
        if not output.listener.queue.qsize():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the log writer never took its first line")


def _log_from_a_thread(lines: int) -> threading.Thread:
    def run() -> None:
        log = logging.getLogger("tierline.test")
        for i in range(lines):
            log.warning("line %d", i)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    return thread


def _read_all(fd: int, until: bytes) -> bytes:
    out = b""
    while until not in out:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def test_logging_returns_while_the_output_is_blocked(full_pipe) -> None:  # type: ignore[no-untyped-def]
    r, stream, filled = full_pipe
    output = LogOutput(stream, "INFO").start()
    try:
        logger = _log_from_a_thread(100)
        # A StreamHandler on the pipe would still be stuck in its first write.
        assert not logger.is_alive()
        assert output.dropped == 0
        reader = threading.Thread(target=lambda: seen.append(_read_all(r, b"line 99\n")))
        seen: list[bytes] = []
        reader.start()
    finally:
        output.stop()  # writes what is queued (the reader drains the pipe meanwhile)
    reader.join(5)
    text = seen[0][filled:].decode()
    assert "WARNING tierline.test: line 0\n" in text and text.endswith("line 99\n")


def test_a_flood_beyond_the_queue_is_dropped_counted_and_said(full_pipe, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    r, stream, filled = full_pipe
    monkeypatch.setattr(log_output, "QUEUE_SIZE", 10)
    output = LogOutput(stream, "INFO").start()
    try:
        _stuck(output)
        logger = _log_from_a_thread(50)
        assert not logger.is_alive()
        assert output.dropped == 40  # ten wait in the queue, the rest are dropped
        lost = output.dropped
        reader = threading.Thread(target=lambda: seen.append(_read_all(r, b"after\n")))
        seen: list[bytes] = []
        reader.start()
        for _ in range(500):  # the backlog drains once the pipe is read
            if not output.listener.queue.qsize():
                break
            threading.Event().wait(0.01)
        logging.getLogger("tierline.test").warning("after")
    finally:
        output.stop()
    reader.join(5)
    text = seen[0][filled:].decode()
    assert f"{lost} log lines dropped: the log output was not being read" in text
    assert text.index("log lines dropped") < text.index("after")
    assert output.dropped == 0


def test_stop_gives_up_on_an_output_nobody_reads(full_pipe, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, stream, _ = full_pipe
    monkeypatch.setattr(log_output, "QUEUE_SIZE", 5)
    monkeypatch.setattr(log_output, "STOP_WAIT", 0.2)
    output = LogOutput(stream, "INFO").start()
    _stuck(output)
    assert not _log_from_a_thread(20).is_alive()
    assert output.dropped == 15  # five wait in the queue: it is full
    stopping = threading.Thread(target=output.stop, daemon=True)
    stopping.start()
    stopping.join(5)
    assert not stopping.is_alive()  # the process can still exit
    assert output.handler not in logging.getLogger().handlers
    # The stuck writer (a daemon thread) finishes once the fixture reads the pipe.


def test_stop_puts_the_root_logger_back(full_pipe) -> None:  # type: ignore[no-untyped-def]
    _, stream, _ = full_pipe
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    output = LogOutput(stream, "DEBUG").start()
    assert root.level == logging.DEBUG and output.handler in root.handlers
    output.stop()
    assert root.level == level and root.handlers == handlers
