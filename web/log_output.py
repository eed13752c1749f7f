"""Log lines leave the process from a thread of their own, never from the event loop.

``logging.basicConfig`` writes each record to stderr in the thread that logs it: on the
server, the event loop. A stderr that does not drain (a terminal paused with Ctrl-S, a full
pipe to a stalled log collector) then blocks the next ``log.warning`` and with it every pop
and every socket. Here records go into a bounded queue (``logging.handlers.QueueHandler``) and
one listener thread writes them. When the queue is full the record is dropped and counted;
the next record that fits is preceded by a line saying how many were lost, so a flood of
errors never grows memory without bound and is never lost silently.
"""

from __future__ import annotations

import logging
import queue
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO, cast

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUEUE_SIZE = 10_000
STOP_WAIT = 5.0  # seconds ``stop`` waits for room in the queue, then for the writer to finish


class _DroppingQueueHandler(QueueHandler):
    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        # Called under the handler's own lock (Handler.handle): the count needs no other.
        if self.dropped:
            try:
                self.queue.put_nowait(self._lost_line(self.dropped))
                self.dropped = 0
            except queue.Full:
                self.dropped += 1
                return
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    @staticmethod
    def _lost_line(count: int) -> logging.LogRecord:
        return logging.LogRecord(
            "tierline.log", logging.WARNING, __file__, 0,
            "%d log lines dropped: the log output was not being read", (count,), None,
        )  # fmt: skip


class _Listener(QueueListener):
    def stop(self) -> None:
        """Write what is queued, then end the thread; give up on an output that is not read
        (QueueListener's own ``stop`` would raise on a full queue, or wait forever)."""
        try:
            # Its queue is ours, a queue.Queue; its sentinel is the class's own (not typed).
            sentinel = self._sentinel  # type: ignore[attr-defined]
            cast("queue.Queue[Any]", self.queue).put(sentinel, timeout=STOP_WAIT)
        except queue.Full:
            return
        if self._thread is not None:
            self._thread.join(STOP_WAIT)
            self._thread = None


class LogOutput:
    """The process's log handler and its writer thread; ``stop`` writes what is queued."""

    def __init__(self, stream: TextIO, level: int | str) -> None:
        records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
        writer = logging.StreamHandler(stream)
        writer.setFormatter(logging.Formatter(FORMAT))
        self.handler = _DroppingQueueHandler(records)
        self.listener = _Listener(records, writer, respect_handler_level=False)
        self.level = level
        self._previous_level = logging.NOTSET

    @property
    def dropped(self) -> int:
        return self.handler.dropped

    def start(self) -> LogOutput:
        root = logging.getLogger()
        self._previous_level = root.level
        root.setLevel(self.level)
        root.addHandler(self.handler)
        self.listener.start()
        return self

    def stop(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self._previous_level)
        self.listener.stop()  # what is queued is written, unless nothing reads the output
