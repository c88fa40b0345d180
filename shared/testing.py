"""Helpers for testing jobs, for this project's tests and for users testing their own handlers.

Build an SQS event for a payload exactly as the relay would publish it, invoke a handler on it, and read what
happened::

    result = invoke(handler, {"to": "ada@example.com", ...})
    assert result.succeeded
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from shared.envelope import message_attributes
from shared.lambda_events import sqs_record
from shared.names import queue_resource_name
from shared.registry import JobSpec
from shared.runtime.handler import JobHandler, Outcome, RunReport


def sqs_event(
    job: JobSpec,
    payload: BaseModel | dict[str, Any] | str,
    *,
    job_id: str | None = None,
    receive_count: int = 1,
    stage: str = "dev",
    queue: str | None = None,
    region: str = "us-east-1",
    receipt_handle: str | None = None,
) -> dict[str, Any]:
    """A one-record SQS event for ``job``. ``payload`` may be a model, a dict, or a raw body string (to test
    invalid bodies)."""
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json(by_alias=True)  # as enqueue sends it
    elif isinstance(payload, str):
        body = payload
    else:
        import json

        body = json.dumps(payload)
    job_id = job_id or str(uuid.uuid4())
    now_ms = str(int(datetime.now(UTC).timestamp() * 1000))
    message = {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": receipt_handle or f"local-{uuid.uuid4()}",
        "Body": body,
        "Attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now_ms,
            "SenderId": "conveyor",
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
        "MessageAttributes": message_attributes(job_id=job_id, job_name=job.name, attempt=1, enqueued_at=datetime.now(UTC)),
    }
    arn = f"arn:aws:sqs:{region}:000000000000:{queue_resource_name(queue or job.queue, stage=stage)}"
    return {"Records": [sqs_record(message, queue_arn=arn, region=region)]}


@dataclass
class InvokeResult:
    response: dict[str, Any]
    reports: list[RunReport] = field(default_factory=list)

    @property
    def outcomes(self) -> list[Outcome]:
        return [r.outcome for r in self.reports]

    @property
    def succeeded(self) -> bool:
        return bool(self.reports) and all(r.outcome is Outcome.SUCCEEDED for r in self.reports)


def invoke(handler: JobHandler, payload: BaseModel | dict[str, Any] | str, **event_options: Any) -> InvokeResult:
    """Run ``handler`` on a one-record event built from ``payload`` and collect the run reports."""
    reports: list[RunReport] = []
    handler.observers.append(reports.append)
    try:
        response = handler(sqs_event(handler.job, payload, **event_options), None)
    finally:
        handler.observers.remove(reports.append)
    return InvokeResult(response, reports)
