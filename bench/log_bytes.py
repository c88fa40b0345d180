"""CloudWatch Logs bytes per job at the default log level (INFO, as ``infra.lambda_defaults`` deploys): the input
``shared.cost`` calls ``log_bytes`` (``conveyor cost --log-bytes``).

A no-op job runs through the real handler runtime, as on Lambda: messages sent to (moto's) SQS with Conveyor's
attributes, received in batches of ``batch_size``, and each batch handed to the handler, which records the run
ledger in a real PostgreSQL. The handler's Powertools logger is captured with the formatter it uses on Lambda, and
the bytes it writes per job are printed. Lambda's own platform lines (START/END/REPORT) are not counted: the stack
sets the system log level to WARN, which drops them.

Metrics are on, as deployed: their one EMF line per invocation is billed as log ingestion too, and printed apart.

Run from a checkout root: ``PYTHONPATH=. .venv/bin/python bench/log_bytes.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import time
import uuid
from datetime import UTC, datetime

# Metrics on, as deployed: Powertools writes them to the log as one Embedded Metric Format line per invocation,
# which CloudWatch bills as log ingestion like any other line.
os.environ["POWERTOOLS_METRICS_DISABLED"] = "false"
os.environ["POWERTOOLS_METRICS_NAMESPACE"] = "Conveyor"
os.environ["POWERTOOLS_LOG_LEVEL"] = "INFO"  # the deployed default (infra.lambda_defaults)
os.environ["POWERTOOLS_SERVICE_NAME"] = "conveyor-prod-bench-noop"  # as the stack names each function's service
# Active tracing puts a trace id in the environment, and Powertools copies it into every line.
os.environ["_X_AMZN_TRACE_ID"] = "Root=1-67890abc-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1"
for key, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ.setdefault(key, value)

import boto3  # noqa: E402
import psycopg  # noqa: E402
from moto import mock_aws  # noqa: E402

from shared.database import Database  # noqa: E402
from shared.envelope import message_attributes  # noqa: E402
from shared.lambda_events import sqs_record  # noqa: E402
from shared.local.aws import ensure_queues  # noqa: E402
from shared.local.postgres import EmbeddedPostgres  # noqa: E402
from shared.migrate import migrate, sync_registry  # noqa: E402
from shared.queues import QueueDirectory  # noqa: E402
from shared.registry import JobPayload, Registry  # noqa: E402
from shared.runtime import job_handler  # noqa: E402
from shared.settings import Settings  # noqa: E402

JOBS = 200
PER_EVENT_OVERHEAD = 26
last_line = ""
last_metrics = ""
busy_ms = 0.0  # median invocation time of the last measure(), in ms
split = (0, 0, 0)  # (bytes of log lines, bytes of metrics lines, metrics lines) of the last measure()


class LambdaContext:
    """The parts of Lambda's context object Powertools copies into every line (function name, request id...)."""

    def __init__(self, request_id: str) -> None:
        self.function_name = "conveyor-prod-bench-noop"
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.memory_limit_in_mb = 256
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


class Note(JobPayload):
    user_id: int
    text: str


def billed(lines: list[str]) -> int:
    """Bytes of ``lines`` as CloudWatch receives them: each line's UTF-8 bytes and newline, plus the 26 bytes per
    event that PutLogEvents counts (counted here as billed too, so the figure errs high)."""
    return sum(len(line.encode()) + 1 + PER_EVENT_OVERHEAD for line in lines)


def measure(batch_size: int, url: str) -> tuple[int, int, list[str]]:
    """(log bytes, jobs that succeeded, the distinct messages logged) for JOBS no-op jobs in batches of batch_size."""
    registry = Registry()
    job = registry.job("bench.noop", payload=Note, queue="bench-noop", batch_size=batch_size)
    with psycopg.connect(url, autocommit=True) as conn:
        sync_registry(conn, registry)
    settings = Settings(stage="bench", database_url=url)
    with mock_aws():
        sqs = boto3.client("sqs")
        queue_url, _ = ensure_queues(sqs, registry, stage="bench")["bench-noop"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        handler = job_handler(job, lambda payload, ctx: None)
        database = Database(settings)
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
        reports: list = []
        handler.observers.append(reports.append)
        stream = io.StringIO()
        metrics = io.StringIO()
        handled: list[float] = []  # seconds per invocation: what Lambda bills, for a job that does nothing
        sink = logging.StreamHandler(stream)
        sink.setFormatter(handler.logger.registered_formatter)
        # Only our sink: the logger's own stdout handler would flood the terminal with the same lines.
        own = list(handler.logger.handlers)
        for h in own:
            handler.logger.removeHandler(h)
        handler.logger.addHandler(sink)
        try:
            for start in range(0, JOBS, batch_size):
                for n in range(start, min(start + batch_size, JOBS)):
                    attributes = message_attributes(job_id=str(uuid.uuid4()), job_name=job.name, attempt=1, enqueued_at=datetime.now(UTC))
                    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"user_id": n, "text": "x" * 40}), MessageAttributes=attributes)
                messages = sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=batch_size, AttributeNames=["All"], MessageAttributeNames=["All"]
                ).get("Messages", [])
                event = {"Records": [sqs_record(m, queue_arn=arn, region="us-east-1") for m in messages]}
                with contextlib.redirect_stdout(metrics):  # Powertools prints its EMF lines to stdout
                    began = time.perf_counter()
                    handler(event, LambdaContext(f"{uuid.uuid4()}"))
                    handled.append(time.perf_counter() - began)
        finally:
            handler.logger.removeHandler(sink)
            for h in own:
                handler.logger.addHandler(h)
            database.close()
    logged = [line for line in stream.getvalue().splitlines() if line.strip()]
    emf = [line for line in metrics.getvalue().splitlines() if line.strip().startswith("{")]
    messages = sorted({json.loads(line).get("message", "") for line in logged})
    global last_line
    last_line = logged[-1] if logged else ""
    global last_metrics, split
    last_metrics = emf[-1] if emf else ""
    split = (billed(logged), billed(emf), len(emf))
    size = split[0] + split[1]
    global busy_ms
    busy_ms = statistics.median(handled) * 1000 if handled else 0.0
    return size, sum(r.outcome.value == "succeeded" for r in reports), messages


def main() -> None:
    with EmbeddedPostgres(log=lambda m: None) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            migrate(conn)
        for batch_size in (1, 10):
            size, succeeded, messages = measure(batch_size, server.url)
            print(f"batch_size={batch_size}: {succeeded}/{JOBS} jobs succeeded, {size} bytes of log, {size / JOBS:.0f} bytes/job; messages: {messages}")
            logged, metric_bytes, invocations = split
            print(f"  log lines {logged / JOBS:.0f} bytes/job; metrics {metric_bytes / max(invocations, 1):.0f} bytes/invocation")
            print(f"  invocation time, median: {busy_ms:.1f} ms ({busy_ms / batch_size:.2f} ms/job; a no-op job: the runtime's own share)")
            print(f"  one line: {last_line}")
            print(f"  one metrics line: {last_metrics}")


if __name__ == "__main__":
    main()
