"""What a job function gets besides its payload."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.database import Database
from shared.registry import JobSpec, Registry

if TYPE_CHECKING:
    import psycopg
    from aws_lambda_powertools import Logger


@dataclass
class JobContext:
    """The running job's identity and the tools to do its work.

    ``attempt`` is 1 on the first run. ``transaction()`` opens a transaction on the container's shared connection;
    jobs enqueued inside it with ``enqueue`` exist only if it commits, exactly like application code.
    """

    job_id: str
    job_name: str
    attempt: int
    max_attempts: int
    enqueued_at: datetime | None
    message_id: str
    logger: Logger
    database: Database
    registry: Registry | None = None
    lambda_context: Any = None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def connection(self) -> psycopg.Connection:
        """The container's connection (autocommit; use :meth:`transaction` to group statements)."""
        return self.database.connection()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        conn = self.connection()
        with conn.transaction():
            yield conn

    def enqueue(self, job: JobSpec | str, payload: Any, **options: Any) -> uuid.UUID:
        """Enqueue a follow-up job. Inside ``with ctx.transaction()`` it joins that transaction (a savepoint);
        otherwise it commits on its own."""
        from shared.outbox import enqueue

        with self.transaction() as conn:
            return enqueue(conn, job, payload, registry=options.pop("registry", self.registry), **options)
