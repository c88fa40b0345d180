"""The target of every EventBridge Scheduler schedule: enqueue one run of a scheduled job through the outbox.

Why a function and not the job's queue as the target: a schedule may fire twice for one period (Scheduler delivers
at least once, and its retries can repeat a delivery). Enqueueing through ``enqueue_scheduled`` claims the period
in ``conveyor.schedule_fires`` in the same transaction as the outbox row, so a period gets exactly one run; the run
then takes the normal path (relay → the job's queue → its function), with the job's retries, backoff and DLQ, and
shows up in the run ledger like any other job.

The schedule passes ``{"job": "<name>", "scheduled_time": "<aws.scheduler.scheduled-time>"}``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from shared.database import Database
from shared.outbox import enqueue_scheduled
from shared.registry import Registry, RegistryError, default_registry

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "conveyor-schedule"))
_database = Database()
_registry: Registry | None = None


class ScheduleEventError(ValueError):
    """The event is not what a Conveyor schedule sends; retrying it cannot help."""


def parse_event(event: Any, registry: Registry) -> tuple[Any, datetime]:
    if not isinstance(event, dict):
        raise ScheduleEventError(f"expected an object with 'job' and 'scheduled_time', got {type(event).__name__}")
    name, raw_time = event.get("job"), event.get("scheduled_time")
    if not isinstance(name, str) or not isinstance(raw_time, str):
        raise ScheduleEventError("expected string fields 'job' and 'scheduled_time' (Scheduler's <aws.scheduler.scheduled-time>)")
    try:
        job = registry[name]
    except RegistryError as exc:
        raise ScheduleEventError(str(exc)) from None
    if job.schedule is None:
        raise ScheduleEventError(f"job {name!r} has no schedule in the registry; delete the stray schedule")
    try:
        fire_time = datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleEventError(f"scheduled_time {raw_time!r} is not an ISO 8601 time") from None
    if fire_time.tzinfo is None:
        raise ScheduleEventError(f"scheduled_time {raw_time!r} has no UTC offset")
    return job, fire_time


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _registry
    if _registry is None:
        _registry = default_registry()
    job, fire_time = parse_event(event, _registry)
    logger.append_keys(job_name=job.name, scheduled_time=fire_time.isoformat())
    conn = _database.connection()
    job_id = enqueue_scheduled(conn, job, fire_time, registry=_registry)
    if job_id is None:
        logger.info("period already has its run; duplicate delivery ignored")
        return {"job": job.name, "scheduled_time": fire_time.isoformat(), "job_id": None, "duplicate": True}
    logger.info("scheduled run enqueued", extra={"job_id": str(job_id)})
    return {"job": job.name, "scheduled_time": fire_time.isoformat(), "job_id": str(job_id), "duplicate": False}
