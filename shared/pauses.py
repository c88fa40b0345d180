"""Which registry queues are paused (``conveyor.paused_queues``, migration 0007).

Below the local runtime and the operations service, which both use it: the service writes a pause (with its audit
row, in one transaction), the local pollers and scheduler read it. On AWS, pausing also switches the queue's event
source mapping and its jobs' schedules (:mod:`shared.operations.controls`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.sqlfile import load_queries

if TYPE_CHECKING:
    import psycopg

QUERIES = load_queries("shared", "pauses.sql")


def paused_queues(conn: psycopg.Connection) -> frozenset[str]:
    """The labels of the paused queues."""
    return frozenset(row[0] for row in conn.execute(QUERIES["paused_list"]))


def set_paused(conn: psycopg.Connection, queue: str, paused: bool, *, actor: str) -> bool:
    """Pause or resume ``queue`` on the caller's connection (never commits); True if that changed anything."""
    row = conn.execute(QUERIES["paused_add" if paused else "paused_remove"], {"queue": queue, "actor": actor}).fetchone()
    return row is not None
