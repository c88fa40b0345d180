"""Which queues are paused, as the local pollers and scheduler see it: ``conveyor.paused_queues`` read at most once a
second for all of them together, on one connection of its own.

On AWS a pause disables the queue's event source mapping and its jobs' schedules; locally there is nothing to disable,
so the pollers and the scheduler ask here before each receive and each fire. A pause takes effect within about a
second (a batch already received finishes). When the database cannot be read, the last state read stands (at first:
nothing paused), so a database blip neither pauses nor resumes anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.pauses import paused_queues

log = logging.getLogger("conveyor.local.pauses")


class PauseWatch:
    def __init__(self, connect: Callable[[], Any], *, interval: float = 1.0) -> None:
        self._connect = connect
        self.interval = interval
        self._lock = threading.Lock()
        self._conn: Any = None
        self._paused: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self.reads = 0  # how many times the table was read (tests wait on it to know the pollers looked again)

    def paused(self, queue: str) -> bool:
        """Whether ``queue`` is paused, as of the last read (at most ``interval`` seconds old)."""
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.interval:
                self._read_at = now
                self._refresh()
            return queue in self._paused

    def _refresh(self) -> None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            self._paused = paused_queues(self._conn)
            self.reads += 1
        except Exception:  # noqa: BLE001 - keep the last known state; read again in a second
            log.warning("could not read the paused queues; keeping the last state read", exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
