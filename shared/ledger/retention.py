"""Retention: delete finished ledger rows and old schedule claims once nobody needs them.

Without it ``conveyor.runs`` grows by a row per job forever and ``conveyor.schedule_fires`` by a row per period.
``conveyor.retention`` is a job like any other (:func:`retention_job`: its own queue, run every hour) whose handler
calls :func:`prune`.

What is deleted, per job, counting a row's age from ``finished_at`` (``updated_at``, then ``created_at``, when a
row never recorded its end):

- ``succeeded`` and ``skipped`` rows older than the job's ``keep_succeeded`` days (default 14);
- ``cancelled`` rows older than that and older than the queues' message retention (``QUEUE_RETENTION_DAYS``,
  14): a cancelled job's message may still wait on its queue, and its row is what makes the runtime acknowledge
  it unrun;
- ``failed`` rows older than the job's ``keep_failed`` days (default 30);
- ``dead`` rows older than that and older than the DLQ's message retention: while the message may still be in the
  DLQ (to be redriven), its row keeps the reason;
- ``conveyor.schedule_fires`` rows older than ``keep_schedule_fires`` days (default 30), never a job's latest (the
  schedulers read it to tell which periods were missed).

First, runs still ``running`` a day past their ``stale_at`` are ended as ``dead`` (``Abandoned``): their message
never came back to be taken over, so the queue's redrive policy moved it to the DLQ (or it expired). Without this
they would read ``abandoned`` forever, hold a flow's parent and never be deleted. Likewise ``queued`` and
``retrying`` runs not heard of for longer than the queues keep a message (the ledger missed their end while the
database was unreachable).

Never deleted: live rows (waiting, pending, queued, running, retrying), a flow's children while their parent is
live, and rows of ``conveyor.outbox_dead`` (they wait for someone to requeue them). A job's own ``keep_*`` settings
win over the defaults; the run's payload can change the defaults.

How: one DELETE per batch of at most 1,000 rows, each its own short transaction, rows chosen with ``FOR UPDATE SKIP
LOCKED`` (a row being written by a handler is skipped, not waited for) through indexes (``runs_job_created``, the
primary key of ``schedule_fires``), oldest first, until nothing is left or the time runs low. What it did not reach
is left for the next run; a crash loses at most one uncommitted batch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field

from shared.ledger.status import LIVE, RunStatus
from shared.registry import (
    MAX_KEEP_DAYS,
    QUEUE_RETENTION_DAYS,
    JobPayload,
    JobSpec,
    Registry,
    RegistryError,
    RetryPolicy,
)
from shared.sqlfile import load_queries

if TYPE_CHECKING:
    import psycopg

QUERIES = load_queries("shared.ledger", "retention.sql")

# How long past its stale_at a run may stay 'running' before retention ends it: longer than SQS's 12-hour longest
# visibility timeout, within which its message comes back and is taken over if it still exists.
ABANDONED_GRACE = timedelta(days=1)

JOB_NAME = "conveyor.retention"
QUEUE = "conveyor-maintenance"
# Every hour: each run deletes about an hour's worth of expired rows (short runs, no daily burst of deletes for
# vacuum to absorb), and a run that ran out of time is continued within the hour. A run with nothing to do costs a
# few index probes. EventBridge bills nothing for the schedule itself.
SCHEDULE = "rate(1 hour)"

KEEP_SUCCEEDED_DAYS = 14
KEEP_FAILED_DAYS = 30
KEEP_SCHEDULE_FIRES_DAYS = 30
MAX_BATCH = 1000
# Stop starting batches with less than this left of the invocation: far more than one batch of 1,000 rows takes.
TIME_RESERVE_SECONDS = 10.0

# Where each pass starts: before any row (a batch then continues from the last one it deleted).
_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
_LIVE_STORED = sorted(s.value for s in LIVE if s is not RunStatus.ABANDONED)


class RetentionPayload(JobPayload):
    """Overrides for one run; the scheduled run sends ``{}`` (all defaults).

    ``keep_succeeded`` and ``keep_failed`` replace the defaults (14 and 30 days) for jobs that set none of their
    own in the registry; a job's own setting always wins.
    """

    keep_succeeded: int | None = Field(default=None, ge=1, le=MAX_KEEP_DAYS)
    keep_failed: int | None = Field(default=None, ge=1, le=MAX_KEEP_DAYS)
    # At least a day: Scheduler may deliver a period late (retries) and the claim must still be there.
    keep_schedule_fires: int | None = Field(default=None, ge=1, le=MAX_KEEP_DAYS)
    batch_size: int = Field(default=MAX_BATCH, ge=1, le=MAX_BATCH)


@functools.cache
def retention_job() -> JobSpec:
    """The ``conveyor.retention`` job. Add it to your own registry to get retention there too::

        registry.add(retention_job())

    Its handler is ``functions/conveyor_retention/handler.py``. Always the same object, so the registry's entry and
    the handler's job are one. Tune it per job with ``keep_succeeded=`` / ``keep_failed=`` on the jobs themselves.
    """
    return JobSpec(
        name=JOB_NAME,
        description="Delete finished run-ledger rows and old schedule claims past their retention.",
        payload=RetentionPayload,
        # Its own queue: ledger upkeep never waits behind the product's jobs, nor they behind it.
        queue=QUEUE,
        # A failed run is not worth many retries: the next hourly run starts where this one stopped.
        retry=RetryPolicy(max_attempts=2, base_delay=60, max_delay=300),
        timeout=300,
        batch_size=1,
        concurrency=2,
        schedule=SCHEDULE,
    )


@dataclass(frozen=True)
class Keep:
    """How many days a job's finished rows are kept."""

    succeeded: int
    failed: int

    def by_status(self) -> dict[int, list[str]]:
        """Statuses grouped by the days their rows are kept (one DELETE per group)."""
        days = {
            RunStatus.SUCCEEDED: self.succeeded,
            RunStatus.SKIPPED: self.succeeded,
            RunStatus.CANCELLED: max(self.succeeded, QUEUE_RETENTION_DAYS),
            RunStatus.FAILED: self.failed,
            RunStatus.DEAD: max(self.failed, QUEUE_RETENTION_DAYS),
        }
        groups: dict[int, list[str]] = {}
        for status, keep in days.items():
            groups.setdefault(keep, []).append(status.value)
        return groups


def keep_for(job_name: str, registry: Registry | None, payload: RetentionPayload | None = None) -> Keep:
    """The job's own settings, else the payload's, else the defaults. Jobs no longer in the registry get the
    defaults."""
    payload = payload or RetentionPayload()
    spec: JobSpec | None = None
    if registry is not None:
        try:
            spec = registry[job_name]
        except RegistryError:
            spec = None
    return Keep(
        succeeded=(spec and spec.keep_succeeded) or payload.keep_succeeded or KEEP_SUCCEEDED_DAYS,
        failed=(spec and spec.keep_failed) or payload.keep_failed or KEEP_FAILED_DAYS,
    )


@dataclass
class RetentionReport:
    """What one :func:`prune` did. ``batches`` holds the rows each DELETE statement removed, in order."""

    deleted: dict[str, dict[str, int]] = field(default_factory=dict)  # job -> status -> rows
    # Runs ended as dead because their worker died and their message never came back.
    abandoned_closed: int = 0
    schedule_fires: int = 0
    batches: list[int] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0

    @property
    def runs(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.deleted.values())

    def by_status(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for by_status in self.deleted.values():
            for status, rows in by_status.items():
                totals[status] = totals.get(status, 0) + rows
        return dict(sorted(totals.items()))

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready summary: the run's result and its log line."""
        return {
            "abandoned_closed": self.abandoned_closed,
            "runs_deleted": self.runs,
            "by_status": self.by_status(),
            "by_job": {job: sum(s.values()) for job, s in sorted(self.deleted.items()) if sum(s.values())},
            "schedule_fires_deleted": self.schedule_fires,
            "statements": len(self.batches),
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
        }


class _OutOfTime(Exception):
    pass


def prune(
    conn: psycopg.Connection,
    registry: Registry | None,
    payload: RetentionPayload | None = None,
    *,
    time_left: Callable[[], float | None] | None = None,
) -> RetentionReport:
    """Delete what has expired (see the module docstring) and say what was deleted.

    ``conn`` must be in autocommit mode, so each batch commits on its own. ``time_left`` returns the seconds left
    to work (None: no limit); no batch starts with less than ``TIME_RESERVE_SECONDS`` left, and the report then
    says ``complete=False``.
    """
    if not conn.autocommit:
        raise ValueError("prune() needs an autocommit connection: each batch must commit on its own")
    payload = payload or RetentionPayload()
    report = RetentionReport()
    started = time.monotonic()

    def check_time() -> None:
        left = time_left() if time_left is not None else None
        if left is not None and left < TIME_RESERVE_SECONDS:
            raise _OutOfTime

    try:
        while True:  # rarely more than one short statement: abandoned runs are few
            closed = len(conn.execute(
                QUERIES["runs_close_abandoned"],
                {"grace": ABANDONED_GRACE, "expired": timedelta(days=QUEUE_RETENTION_DAYS + 1), "limit": payload.batch_size},
            ).fetchall())  # fmt: skip
            report.abandoned_closed += closed
            if closed < payload.batch_size:
                break
            check_time()
        for job_name in [row[0] for row in conn.execute(QUERIES["runs_job_names"])]:
            keep = keep_for(job_name, registry, payload)
            counts = report.deleted.setdefault(job_name, {})
            for days, statuses in sorted(keep.by_status().items()):
                after = _BEGINNING
                while True:
                    check_time()
                    rows = conn.execute(QUERIES["runs_delete_finished"], {
                        "job_name": job_name, "keep": timedelta(days=days), "statuses": statuses,
                        "live": _LIVE_STORED, "limit": payload.batch_size, "after": after,
                    }).fetchall()  # fmt: skip
                    batch = sum(n for _, n, _ in rows)
                    report.batches.append(batch)
                    for status, n, last in rows:
                        counts[status] = counts.get(status, 0) + n
                        after = max(after, last)
                    if batch < payload.batch_size:
                        break
        keep_fires = timedelta(days=payload.keep_schedule_fires or KEEP_SCHEDULE_FIRES_DAYS)
        for job_name in [row[0] for row in conn.execute(QUERIES["schedule_fires_job_names"])]:
            after = _BEGINNING
            while True:
                check_time()
                fired = [row[0] for row in conn.execute(QUERIES["schedule_fires_delete"], {
                    "job_name": job_name, "keep": keep_fires, "limit": payload.batch_size, "after": after,
                })]  # fmt: skip
                batch = len(fired)
                after = max([after, *fired])
                report.batches.append(batch)
                report.schedule_fires += batch
                if batch < payload.batch_size:
                    break
    except _OutOfTime:
        report.complete = False
    report.deleted = {job: counts for job, counts in report.deleted.items() if counts}
    report.seconds = time.monotonic() - started
    return report
