"""Which queues are paused, as the local pollers and scheduler see it: ``conveyor.paused_queues`` read at most once a
second for all of them together, on one connection of its own.

On AWS a pause disables the queue's event source mapping and its jobs' schedules; locally there is nothing to disable,
so the pollers and the scheduler ask here before each receive and each fire. A pause takes effect within about a
second (a batch already received finishes). When the database cannot be read, the last state read stands (at first:
nothing paused), so a database blip neither pauses nor resumes anything.

Nobody waits for a read but the caller doing it: one caller at a time reads, outside the lock, and the others answer
from the last state read meanwhile (only the very first read, before there is any state, is waited for). The read
itself is bounded, by a short connect timeout and a statement timeout on its connection, so a database that is
unreachable or a table locked by another transaction holds up one poller for a few seconds at most, never all of
them and the scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from shared.database import connect
from shared.pauses import paused_queues
from shared.settings import Settings

log = logging.getLogger("conveyor.local.pauses")

# Bounds on one read: libpq's smallest connect timeout, and a statement (waiting for the table's lock included).
CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 1000
# How long a caller waits for the first read before answering "nothing paused"; longer than one bounded read.
FIRST_READ_WAIT_SECONDS = 10.0


# How stale the pollers' view of the pauses may be: a pause takes effect locally within about this long (on AWS,
# when Lambda has applied the event source mapping's update).
REFRESH_SECONDS = 1.0

class PauseWatch:
    def __init__(self, settings: Settings, *, interval: float = REFRESH_SECONDS) -> None:
        self._settings = settings
        self.interval = interval
        self._lock = threading.Lock()
        self._reading = False
        self._first_read = threading.Event()  # set once the first read ended, well or not
        self._conn: Any = None
        self._closed = False
        self._paused: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self.reads = 0  # how many times the table was read (tests wait on it to know the pollers looked again)

    def paused(self, queue: str) -> bool:
        """Whether ``queue`` is paused, as of the last read (at most ``interval`` seconds old when the database
        answers)."""
        with self._lock:
            now = time.monotonic()
            due = not self._reading and (self._read_at is None or now - self._read_at >= self.interval)
            if due:
                self._reading = True
                self._read_at = now
        if due:
            try:
                self._refresh()
            finally:
                with self._lock:
                    self._reading = False
                self._first_read.set()
        elif not self._first_read.is_set():
            self._first_read.wait(FIRST_READ_WAIT_SECONDS)
        return queue in self._paused

    def _refresh(self) -> None:
        """Read the table (on the reading caller's thread, outside the lock: only one caller reads at a time)."""
        if self._closed:
            return
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                conn = self._conn = connect(
                    self._settings, connect_timeout=CONNECT_TIMEOUT_SECONDS, statement_timeout_ms=STATEMENT_TIMEOUT_MS
                )
            paused = paused_queues(conn)
            with self._lock:
                self._paused = paused
                self.reads += 1
        except Exception:  # noqa: BLE001 - keep the last known state; read again in a second
            log.warning("could not read the paused queues; keeping the last state read", exc_info=True)
        finally:
            if self._closed:  # closed while this read ran: the connection it opened is not left behind
                self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
