"""Outbox rows the relay gave up on, and the outbox at a glance: what ``conveyor outbox`` shows and does.

A row lands in ``conveyor.outbox_dead`` when SQS refuses it for good or after the relay's last publish attempt (see
``shared.outbox.relay``). It stays there, with its reason, until someone fixes the cause and requeues it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from shared.outbox import QUERIES


@dataclass(frozen=True)
class DeadRow:
    id: uuid.UUID
    job_id: uuid.UUID
    job_name: str
    queue: str
    publish_attempts: int
    failed_at: datetime
    last_error: str
    payload_bytes: int


@dataclass(frozen=True)
class PendingGroup:
    job_name: str
    queue: str
    pending: int
    due: int
    leased: int
    failing: int
    oldest_due_seconds: float


def list_dead(conn: psycopg.Connection, *, limit: int = 100) -> list[DeadRow]:
    """The most recently failed rows first."""
    return [DeadRow(*row) for row in conn.execute(QUERIES["outbox_dead_list"], {"limit": limit})]


def requeue_dead(conn: psycopg.Connection, ids: Sequence[uuid.UUID] | None = None) -> int:
    """Move dead rows (``ids``, or all when None) back to the outbox, due now with a fresh attempt count. Returns how
    many moved; a row whose dedup key a pending job holds meanwhile stays where it is."""
    row = conn.execute(QUERIES["outbox_requeue_dead"], {"ids": None if ids is None else list(ids)}).fetchone()
    return int(row[0]) if row else 0


def dead_count(conn: psycopg.Connection) -> int:
    """Rows in ``conveyor.outbox_dead``: jobs that will not run until someone requeues them."""
    row = conn.execute(QUERIES["outbox_dead_count"]).fetchone()
    return int(row[0]) if row else 0


def pending_summary(conn: psycopg.Connection) -> list[PendingGroup]:
    return [PendingGroup(*row) for row in conn.execute(QUERIES["outbox_summary"])]
