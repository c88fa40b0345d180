"""Cancel a job that has not started, on the caller's connection (like ``enqueue``: never commits).

Which jobs can be cancelled, and what happens to them:

- **pending** (still in the outbox): its row leaves the outbox and the job gets its ledger row, ``cancelled``; the
  relay never publishes it.
- **queued** or **retrying** (its message is in SQS), **waiting** (a flow's parent), or a released flow parent not
  yet published: marked ``cancelled``, with its rows still waiting in the outbox (a retry, the released parent)
  deleted. SQS cannot take a message back, so the handler runtime acknowledges the job's message without running it
  when it arrives.
- **running**, or finished (succeeded, failed, dead, cancelled, skipped): too late; :class:`CancelError` names the
  status and nothing is written. A running handler is not interrupted (a Lambda cannot be stopped from outside).

A relay publishing the job at the same moment does not beat cancel: its lease is not a lock, so cancel deletes the
leased row and the relay's mark then finds nothing to move (the message it already sent is acknowledged unrun); if
the relay's mark commits first, cancel waits for it and cancels the ``queued`` job. Cancelling a flow's child counts
as that child ending ``cancelled`` (see :mod:`shared.ledger.flows`); cancelling a flow's parent does not cancel its
children.

The rule lives in SQL (``conveyor.try_cancel_job``, migration 0005) and SQL callers use ``conveyor.cancel_job(id,
reason)``, which raises SQLSTATE 55000 (wrong status) or P0002 (no such job) instead. From Python a refused cancel
raises without failing the caller's transaction: the refusal writes nothing and no SQL error is raised.
"""

from __future__ import annotations

import uuid

import psycopg

from shared.ids import parse_job_id
from shared.ledger.errors import JobNotFoundError
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.ledger", "cancel.sql")

# The ledger's bound on runs.reason (migration 0003).
MAX_REASON_CHARS = 4000


class CancelError(ValueError):
    """The job has started or finished, so it can no longer be cancelled. Nothing was written. ``status`` is the
    job's status as the ledger has it (``running``, ``succeeded``, ``failed``, ``dead``, ``cancelled``,
    ``skipped``)."""

    def __init__(self, job_id: uuid.UUID, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"job {job_id} is {status}; only pending, queued, retrying or waiting jobs can be cancelled")


def cancel(conn: psycopg.Connection, job_id: uuid.UUID | str, reason: str | None = None) -> str:
    """Cancel a job that has not started and return the status it had (``pending``, ``queued``, ``retrying`` or
    ``waiting``). ``reason`` (at most 4,000 characters) is kept in the ledger row. Never commits.

    Raises :class:`CancelError` (with ``.status``) when the job is running or finished and
    :class:`JobNotFoundError` when no job has this id; either way nothing is written and the caller's transaction
    can go on.
    """
    identity = parse_job_id(job_id)
    if reason is not None:
        if not isinstance(reason, str):
            raise ValueError(f"reason must be a string, got {type(reason).__name__}")
        if len(reason) > MAX_REASON_CHARS:
            raise ValueError(f"reason must be at most {MAX_REASON_CHARS} characters, got {len(reason)}")
        if "\x00" in reason:
            raise ValueError("reason contains a NUL character (U+0000), which PostgreSQL cannot store")
    row = conn.execute(QUERIES["job_cancel"], {"id": identity, "reason": reason}).fetchone()
    assert row is not None  # the function returns exactly one row
    cancelled, status = row
    if cancelled:
        return status
    if status is None:
        raise JobNotFoundError(identity)
    raise CancelError(identity, status)


__all__ = ("cancel", "CancelError", "JobNotFoundError")
