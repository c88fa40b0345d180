"""``send_now``: publish a job straight to SQS, for callers that have no database transaction to join.

There is no outbox here, so no atomicity with anything else the caller does: use it from scripts, other services
and event handlers that only need the job to run. Delays are limited to SQS's 15 minutes; longer ones need
``enqueue`` (the outbox holds the job until it is due).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from shared.envelope import message_attributes
from shared.ids import new_job_id
from shared.outbox import EnqueueError, payload_body, resolve_job, validate_payload
from shared.queues import QueueDirectory
from shared.registry import JobSpec, Registry

SQS_MAX_DELAY = timedelta(minutes=15)


def send_now(
    job: JobSpec | str,
    payload: BaseModel | dict[str, Any],
    *,
    delay: timedelta | float | None = None,
    queue: str | None = None,
    sqs: Any = None,
    directory: QueueDirectory | None = None,
    registry: Registry | None = None,
) -> uuid.UUID:
    """Validate and send one job to its queue now; returns the job id."""
    spec = resolve_job(job, registry)
    model = validate_payload(spec, payload)
    body = payload_body(spec, model)
    if isinstance(delay, (int, float)):
        delay = timedelta(seconds=delay)
    if delay is not None and not timedelta(0) <= delay <= SQS_MAX_DELAY:
        raise EnqueueError(f"send_now delays 0 to 15 minutes (SQS's limit), got {delay}; use enqueue() for longer delays")
    if sqs is None:
        import boto3

        sqs = boto3.client("sqs")
    directory = directory or QueueDirectory(sqs)
    job_id = new_job_id()
    sqs.send_message(
        QueueUrl=directory.url(spec.queue_for(model, queue)),
        MessageBody=body,
        DelaySeconds=int(delay.total_seconds()) if delay else 0,
        MessageAttributes=message_attributes(
            job_id=str(job_id), job_name=spec.name, attempt=1, enqueued_at=datetime.now(UTC)
        ),
    )
    return job_id
