"""A small registry of test jobs whose handler does what its payload says: succeed, fail N times, fail for good."""

from __future__ import annotations

import threading

from shared.registry import JobPayload, Registry, RetryPolicy
from shared.runtime import JobContext, PermanentJobError, job_handler


class Work(JobPayload):
    n: int
    fail_times: int = 0
    permanent: bool = False


registry = Registry()
WORK = registry.job(
    "test.work",
    payload=Work,
    queue="work",
    retry=RetryPolicy(max_attempts=3, base_delay=1, max_delay=4, jitter=False),
    timeout=5,
    batch_size=10,
    concurrency=2,
)


class Calls:
    """What the handler saw, in order: (job_id, n, attempt)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, int, int]] = []

    def record(self, job_id: str, n: int, attempt: int) -> None:
        with self.lock:
            self.items.append((job_id, n, attempt))

    def ns(self) -> list[int]:
        with self.lock:
            return [n for _, n, _ in self.items]


def make_work_handler(calls: Calls):
    def work(payload: Work, ctx: JobContext) -> None:
        calls.record(ctx.job_id, payload.n, ctx.attempt)
        if payload.permanent:
            raise PermanentJobError(f"job {payload.n} can never work")
        if ctx.attempt <= payload.fail_times:
            raise RuntimeError(f"failure {ctx.attempt} of {payload.fail_times}")

    return job_handler(WORK, work)


def insert_run(
    conn,
    job_name: str,
    status: str,
    *,
    age_days: float = 0.0,
    created_days: float | None = None,
    **columns,
):
    """A ``conveyor.runs`` row as the ledger would hold it, ``age_days`` after it last changed: finished then (for a
    finished status), updated then, created an hour before (or ``created_days`` ago). ``columns`` set or override
    any other column (``finished_at=None``, ``parent_id=...``). Returns its id."""
    import uuid
    from datetime import timedelta

    from psycopg import sql

    job_id = columns.pop("id", None) or uuid.uuid4()
    live = status in ("waiting", "pending", "queued", "running", "retrying")
    age = timedelta(days=age_days)
    created = timedelta(days=created_days) if created_days is not None else age + timedelta(hours=1)
    values = {
        "id": job_id, "job_name": job_name, "queue": "q", "payload": "{}", "status": status,
        "created_at": sql.SQL("now() - {}").format(sql.Literal(created)),
        "run_at": sql.SQL("now() - {}").format(sql.Literal(created)),
        "updated_at": sql.SQL("now() - {}").format(sql.Literal(age)),
        "finished_at": None if live else sql.SQL("now() - {}").format(sql.Literal(age)),
        **columns,
    }  # fmt: skip
    names = sql.SQL(", ").join(sql.Identifier(name) for name in values)
    literals = sql.SQL(", ").join(v if isinstance(v, sql.Composable) else sql.Literal(v) for v in values.values())
    conn.execute(sql.SQL("INSERT INTO conveyor.runs ({}) VALUES ({})").format(names, literals))
    return job_id


# -- the real delivery path, one step at a time (enqueue → relay → SQS → receive → handler) ------------------------


class FakeLambdaContext:
    """What Lambda passes a handler (the parts the runtime reads). A stand-in for AWS, not for Conveyor's code."""

    def __init__(self, remaining_ms: int = 600_000) -> None:
        self.remaining_ms = remaining_ms
        self.function_name = "test"
        self.aws_request_id = "request"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def publish(db_url: str, sqs, stage: str) -> int:
    """One relay cycle: what is due in the outbox goes to SQS. Returns how many messages were sent."""
    from shared.database import connect
    from shared.outbox.relay import Relay
    from shared.queues import QueueDirectory
    from shared.settings import Settings

    settings = Settings(stage=stage, database_url=db_url)
    relay = Relay(lambda: connect(settings), sqs, QueueDirectory(sqs, settings))
    try:
        return relay.run_once().published
    finally:
        relay.close()


def receive(sqs, queue: tuple[str, str], count: int, *, visibility: int = 60) -> dict:
    """Receive ``count`` messages from ``queue`` (url, arn) as the event source would: a Lambda event."""
    from shared.lambda_events import sqs_record

    url, arn = queue
    messages: list = []
    for _ in range(50):
        if len(messages) >= count:
            break
        messages += sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility, AttributeNames=["All"],
            MessageAttributeNames=["All"], WaitTimeSeconds=1,
        ).get("Messages", [])  # fmt: skip
    assert len(messages) == count
    return {"Records": [sqs_record(m, queue_arn=arn, region="us-east-1") for m in messages]}


def fast_forward(sqs, queue: tuple[str, str], event: dict) -> None:
    """End the delay the runtime set on these messages (SQS's clock cannot be moved): visible again now."""
    for record in event["Records"]:
        sqs.change_message_visibility(QueueUrl=queue[0], ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0)
