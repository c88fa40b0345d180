"""What operations answer, as pydantic models: the API returns them as JSON (and its OpenAPI document describes
them), the CLI prints them as tables or, with ``--json``, as the same JSON. One shape for both, so they cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobStats(BaseModel):
    """One registry job's counts, from the database."""

    name: str
    queue: str
    schedule: str | None = None
    timezone: str | None = None
    outbox_pending: int = 0       # in the outbox, not yet published (due or delayed)
    outbox_dead: int = 0          # rows the relay gave up on (conveyor.outbox_dead)
    running: int = 0
    succeeded_1h: int = 0
    failed_1h: int = 0            # failed or dead
    succeeded_24h: int = 0
    failed_24h: int = 0


class QueueStats(BaseModel):
    """One registry queue: SQS's approximate counts (None when SQS could not be asked) and the ledger's view."""

    name: str                     # the registry label, e.g. email-high
    resource_name: str            # the SQS queue name, e.g. conveyor-dev-email-high
    paused: bool = False
    visible: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    dlq_depth: int | None = None
    oldest_age_seconds: float | None = None   # the oldest queued (published, unstarted) job's wait
    sqs_error: str | None = None
    jobs: list[JobStats] = Field(default_factory=list)


class QueuesView(BaseModel):
    generated_at: datetime
    relay_lag_seconds: float | None = None   # how long the oldest due, unpublished outbox row has waited
    queues: list[QueueStats]


class Attempt(BaseModel):
    """One failed attempt, as the ledger's history keeps it (the last 25)."""

    attempt: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: str
    error_type: str | None = None
    error: str | None = None


class RunSummary(BaseModel):
    id: str
    job: str
    queue: str
    status: str
    attempt: int
    created_at: datetime
    run_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    last_error_type: str | None = None
    last_error: str | None = None
    reason: str | None = None
    progress: int | None = None
    parent_id: str | None = None
    scheduled_for: datetime | None = None
    # What this caller may do to this run now: a subset of ["retry", "cancel"]. The page shows only these buttons.
    actions: list[str] = Field(default_factory=list)


class RunsPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = None   # pass as ``cursor`` for the next (older) page; None on the last page


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    result: str                  # ok | error
    detail: dict[str, Any] | None = None


class RunDetail(RunSummary):
    payload: Any = None           # with fields marked sensitive in the job's model masked
    result: Any = None
    progress_message: str | None = None
    published_at: datetime | None = None
    first_started_at: datetime | None = None
    message_id: str | None = None
    dedup_key: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    children: list[RunSummary] = Field(default_factory=list)
    children_total: int = 0
    children_pending: int | None = None
    audit: list[AuditEntry] = Field(default_factory=list)


class ActionResult(BaseModel):
    action: str
    job_id: str
    status: str                   # the job's status after the action
    message: str


class RedriveResult(BaseModel):
    queue: str
    job: str | None = None
    mode: Literal["move_task", "copy"]   # StartMessageMoveTask (whole queue on AWS), or receive → send → delete
    moved: int = 0
    failed: int = 0               # could not be sent back: still in the DLQ
    skipped: int = 0              # another job's messages, left in the DLQ
    task_handle: str | None = None
    complete: bool = True         # False when the deadline stopped it: run it again for the rest
    errors: list[str] = Field(default_factory=list)


class QueueSwitch(BaseModel):
    queue: str
    paused: bool
    changed: bool                 # False when it already was
    event_source_mappings: int = 0   # mappings enabled/disabled on AWS
    schedules: list[str] = Field(default_factory=list)   # jobs whose schedule was disabled/enabled


class HealthCheck(BaseModel):
    name: str                     # database | relay_lag | dead_letter_queues | outbox_dead
    ok: bool
    detail: str


class Health(BaseModel):
    healthy: bool
    checks: list[HealthCheck]
    reasons: list[str]            # the detail of each failed check


class ThroughputBucket(BaseModel):
    start: datetime
    succeeded: int
    failed: int


class Throughput(BaseModel):
    window: Literal["1h", "24h"]
    bucket_seconds: int
    buckets: list[ThroughputBucket]


class Me(BaseModel):
    actor: str
    scopes: list[str]
    actions: list[str]


class ErrorAnswer(BaseModel):
    """Every error the API answers, whatever its status: a stable ``code`` (:mod:`shared.operations.errors`; scripts
    match on it), a message for people, and the error's details. Other details may appear beside these (an
    unavailable dependency names itself, a refused input its ``field``)."""

    model_config = ConfigDict(extra="allow")

    code: str                               # unauthenticated, forbidden, not_found, wrong_state, invalid_request, ...
    message: str
    required_scope: str | None = None       # 403: the scope the caller lacks
    kind: str | None = None                 # 404: what was not found (job, job_name, queue)
    status: str | None = None               # 409: the job's status now (move_task_running for a redrive)
    errors: list[dict[str, Any]] | None = None   # 422: each problem with the request: where, type, message
