"""One fire of a job's schedule: enqueue the period's run, or record why it does not run.

Both schedulers call :func:`fire_schedule`: the ``schedule`` function that EventBridge Scheduler invokes on AWS, and
the local scheduler under ``conveyor dev``. In one transaction on the caller's connection it

1. takes the job's advisory lock (``pg_advisory_xact_lock``), so fires of the same job, for the same period or not,
   run the steps below one at a time (Scheduler may deliver a period twice, and its retries after an outage
   overlap the next period's delivery);
2. plans the fire (:func:`shared.scheduled.policy.plan_fire`): a late fire is coalesced into the latest due period
   (``missed=once``) or recorded as missed (``missed=skip``);
3. claims the period in ``conveyor.schedule_fires``: a period already claimed is a duplicate and does nothing more;
4. skips the period when the job is disabled (``CONVEYOR_JOB_<NAME>_ENABLED=false``), when the fire was missed
   under ``missed=skip``, when an earlier run is still live under ``overlap=skip``, or when the job's ``pre_check``
   returns a reason. A skipped period gets a ``conveyor.runs`` row with status ``skipped`` and the reason, and its
   claim points at that row, so a second delivery of the period does nothing more;
5. otherwise enqueues the run through the outbox with ``scheduled_for`` = the period.

Guarantees: one run or one skip record per (job, period), committed together with the claim. If anything fails
(the database, a ``pre_check`` that raises, a bad enable flag) nothing is recorded and the fire raises: Scheduler
retries the delivery, the local scheduler retries the period. The connection must use READ COMMITTED (the
default; ours are autocommit connections), so the checks after the lock see what the previous holder committed.
A run that never reports its end holds off the next periods under ``overlap=skip`` until its ``stale_at`` passes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg

from shared.ids import new_job_id
from shared.outbox import enqueue_scheduled_run, payload_body, validate_payload
from shared.registry import JobSpec, Registry
from shared.scheduled.policy import OverlapPolicy, plan_fire
from shared.settings import job_enabled, job_enabled_variable
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.scheduled")
# conveyor.runs.reason holds at most this many characters.
MAX_REASON = 4000

log = logging.getLogger("conveyor.schedule")


class FireOutcome(StrEnum):
    ENQUEUED = "enqueued"
    DUPLICATE = "duplicate"  # the period was claimed by an earlier fire
    SKIPPED = "skipped"


class PreCheckError(RuntimeError):
    """A job's ``pre_check`` raised or answered something other than a reason or None. Nothing was recorded; the
    fire fails and its scheduler retries it."""


@dataclass(frozen=True)
class PreCheckContext:
    """What a job's ``pre_check(ctx)`` gets. ``conn`` is in the fire's transaction, under the job's schedule lock:
    read what the check needs ("did this period's report already go out?"); anything it writes commits with the
    fire. Return a reason (a non-empty string) to skip ``scheduled_for``, or None to run it."""

    job: JobSpec
    scheduled_for: datetime
    conn: psycopg.Connection
    logger: Any


@dataclass(frozen=True)
class FireResult:
    """What a fire did. ``period`` is the period it claimed (differs from ``fire_time`` when a late fire was
    coalesced); ``job_id`` is the run enqueued or the ``skipped`` row; ``duplicate_of`` is the run an earlier fire
    gave the period."""

    job_name: str
    fire_time: datetime
    period: datetime
    outcome: FireOutcome
    job_id: uuid.UUID | None = None
    reason: str | None = None
    duplicate_of: uuid.UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job_name,
            "scheduled_time": self.fire_time.isoformat(),
            "scheduled_for": self.period.isoformat(),
            "outcome": self.outcome.value,
            "job_id": str(self.job_id) if self.job_id else None,
            "duplicate": self.outcome is FireOutcome.DUPLICATE,
            "duplicate_of": str(self.duplicate_of) if self.duplicate_of else None,
            "reason": self.reason,
        }


def fire_schedule(
    conn: psycopg.Connection,
    job: JobSpec,
    fire_time: datetime,
    *,
    now: datetime | None = None,
    registry: Registry | None = None,
    environ: Mapping[str, str] | None = None,
    logger: Any = None,
) -> FireResult:
    """Handle one fire of ``job``'s schedule for ``fire_time`` (see the module docstring). ``now`` is the
    scheduler's clock (the local scheduler's may run fast in tests); ``environ`` holds the enable flag."""
    if job.schedule is None:
        raise ValueError(f"job {job.name!r} has no schedule")
    logger = logger or log
    now = now or datetime.now(UTC)
    enabled = job_enabled(job.name, environ)  # a bad value raises before anything is written
    plan = plan_fire(job.parsed_schedule, fire_time, now, job.missed)
    model = validate_payload(job, dict(job.schedule_payload))
    queue, body = job.queue_for(model), payload_body(job, model)
    key = {"job_name": job.name, "fire_time": plan.period}
    with conn.transaction():
        conn.execute(QUERIES["schedule_lock"], key)
        if conn.execute(QUERIES["schedule_claim_fire"], key).fetchone() is None:
            row = conn.execute(QUERIES["schedule_fire_job"], key).fetchone()
            result = FireResult(job.name, fire_time, plan.period, FireOutcome.DUPLICATE, duplicate_of=row and row[0])
            logger.info("scheduled period already has its run; this fire does nothing", extra=_log_fields(result))
            return result
        reason = _skip_reason(conn, job, plan.period, enabled, plan.missed_reason, logger)
        if reason is not None:
            reason = reason[:MAX_REASON]
            record = new_job_id()
            conn.execute(
                QUERIES["schedule_record_skip"],
                {"id": record, "job_name": job.name, "queue": queue, "payload": body,
                 "reason": reason, "scheduled_for": plan.period},
            )  # fmt: skip
            result = FireResult(job.name, fire_time, plan.period, FireOutcome.SKIPPED, record, reason)
        else:
            job_id = enqueue_scheduled_run(conn, job, plan.period, registry=registry)
            result = FireResult(job.name, fire_time, plan.period, FireOutcome.ENQUEUED, job_id)
        conn.execute(QUERIES["schedule_record_job"], {**key, "job_id": result.job_id})
    if result.outcome is FireOutcome.SKIPPED:
        logger.warning("scheduled period skipped", extra=_log_fields(result))
    else:
        logger.info("scheduled run enqueued", extra=_log_fields(result))
    return result


def _skip_reason(
    conn: psycopg.Connection, job: JobSpec, period: datetime, enabled: bool, missed: str | None, logger: Any
) -> str | None:
    """Why ``period`` must not run, checked cheapest first; None when it runs."""
    if not enabled:
        return f"disabled: {job_enabled_variable(job.name)} is false"
    if missed is not None:
        return missed
    if job.overlap is OverlapPolicy.SKIP:
        live = conn.execute(QUERIES["schedule_live_run"], {"job_name": job.name}).fetchone()
        if live is not None:
            run_id, status, since = live
            since_text = since.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            return f"overlap: run {run_id} of this job is still {status} (since {since_text}; overlap=skip)"
    if job.pre_check is not None:
        try:
            answer = job.pre_check(PreCheckContext(job=job, scheduled_for=period, conn=conn, logger=logger))
        except Exception as exc:
            raise PreCheckError(f"pre_check of job {job.name!r} for {period.isoformat()} raised {exc!r}") from exc
        if answer is not None:
            if not isinstance(answer, str) or not answer.strip():
                raise PreCheckError(
                    f"pre_check of job {job.name!r} returned {answer!r}; return a reason (a non-empty str) to skip "
                    "the period, or None to run it"
                )
            return f"pre_check: {answer}"
    return None


def latest_fire(conn: psycopg.Connection, job_name: str) -> datetime | None:
    """The latest period of ``job_name`` any fire claimed (run or skipped), or None if it never fired here."""
    row = conn.execute(QUERIES["schedule_latest_fire"], {"job_name": job_name}).fetchone()
    return row[0] if row else None


def _log_fields(result: FireResult) -> dict[str, Any]:
    return {k: v for k, v in result.as_dict().items() if v is not None and k != "duplicate"}
