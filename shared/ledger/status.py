"""The states of a job, as the ledger (``conveyor.runs``) and the ``conveyor.jobs`` view spell them.

The table stores text with a CHECK (migration 0003), so these values are the contract between Python, SQL readers
and the migration; a test checks the enum against the table's CHECK so the two cannot drift.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    WAITING = "waiting"        # a flow's parent, waiting for its children
    PENDING = "pending"        # in the outbox, not yet published
    QUEUED = "queued"          # published to SQS, not started
    RUNNING = "running"        # a handler has it
    RETRYING = "retrying"      # an attempt failed; the next one waits on SQS (or in the outbox)
    SUCCEEDED = "succeeded"
    FAILED = "failed"          # ended without a DLQ copy (a flow whose child died; a row the relay could not publish)
    DEAD = "dead"              # in the job's dead-letter queue, with the reason
    CANCELLED = "cancelled"
    SKIPPED = "skipped"        # a scheduled period that did not run, with the reason
    # Shown by the conveyor.jobs view only, never stored: a running row past its stale_at (its worker died).
    ABANDONED = "abandoned"

    @property
    def live(self) -> bool:
        """Not finished: something will still happen to the job (an abandoned run is redelivered)."""
        return self in LIVE

    @property
    def finished(self) -> bool:
        return not self.live


# Stored statuses of jobs that are not done yet. Retention never deletes these.
LIVE = frozenset({
    RunStatus.WAITING, RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING, RunStatus.ABANDONED,
})
# Stored statuses: every member but the view's ABANDONED.
STORED = tuple(s for s in RunStatus if s is not RunStatus.ABANDONED)


def parse_status(text: str) -> RunStatus:
    """``"dead"`` → ``RunStatus.DEAD``; anything else is a ValueError that lists the statuses."""
    try:
        return RunStatus(text.strip().lower())
    except ValueError:
        raise ValueError(f"unknown status {text!r}; statuses: {', '.join(RunStatus)}") from None
