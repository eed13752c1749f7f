"""SQLite's WAL checkpoints, moved off the connection that commits.

In WAL mode a commit appends to the ``-wal`` file; a checkpoint copies those pages into the
database file and fsyncs it. By default SQLite runs that checkpoint inside whichever commit
pushes the WAL past 1,000 pages, so that one commit — a call-log group, say, holding the write
lock every other writer queues on — takes the whole copy and the fsync: 15–27 ms on a quiet
disk here against 4–10 ms without (6,000 small commits), and now and then 0.2–0.9 s under the
screen-pop benchmark, which every pop waiting for a commit waited for too.

Here every connection is opened with ``wal_autocheckpoint=0`` and one thread of the process
runs a PASSIVE checkpoint on its own connection every ``every`` seconds. PASSIVE never waits
for a lock and never blocks a writer: it copies what no reader still needs. If it fails (a
full disk, say) the WAL only grows, nothing is lost, and SQLite checkpoints again when the
last connection closes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("tierline.db")


class Checkpointer:
    def __init__(self, path: str, every: float = 1.0) -> None:
        self.path = path
        self.every = every
        self.runs = 0  # checkpoints done
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        """Start the thread if it is not running (called as connections open)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="tierline-db-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, stop = self._thread, self._stop
            self._thread = self._stop = None
        if thread is not None and stop is not None:
            stop.set()
            thread.join(timeout=30)

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied)."""
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, frames, copied

    def _run(self, stop: threading.Event) -> None:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            while not stop.wait(self.every):
                try:
                    self.checkpoint(conn)
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint of %s failed (will retry): %s", self.path, exc)
                    continue
                self.runs += 1
        finally:
            conn.close()
