"""The target of every EventBridge Scheduler schedule: one fire of a scheduled job.

Why a function and not the job's queue as the target: a schedule may fire twice for one period (Scheduler delivers
at least once, and its retries can repeat a delivery or arrive after the next period began). The fire goes through
``shared.scheduled.fire.fire_schedule``, which under a per-job lock claims the period in
``conveyor.schedule_fires`` and then enqueues the run through the outbox (or records why the period is skipped:
disabled, missed, an earlier run still live, the job's pre-check) in the same transaction, so a period gets
exactly one run or one ``skipped`` record; the run then takes the normal path (relay → the job's queue → its
function), with the job's retries, backoff and DLQ, and shows up in the run ledger like any other job.

The schedule passes ``{"job": "<name>", "scheduled_time": "<aws.scheduler.scheduled-time>"}``. The result says
what happened: ``outcome`` is ``enqueued``, ``duplicate`` or ``skipped`` (with ``reason``), ``scheduled_for`` the
period claimed. A failure (the database, a pre-check that raised, a bad ``CONVEYOR_JOB_<NAME>_ENABLED``) raises,
so Lambda's async retries and then the schedule DLQ take over.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from shared.database import Database
from shared.registry import Registry, RegistryError, default_registry
from shared.scheduled.fire import fire_schedule

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
    result = fire_schedule(_database.connection(), job, fire_time, registry=_registry, logger=logger)
    return result.as_dict()
