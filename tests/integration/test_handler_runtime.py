"""The handler runtime called the way Lambda calls it: per-record state, deadlines, retry delays, DLQ copies.

Events are built from real moto SQS receives where the test looks at what the runtime did to a message.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.lambda_events import sqs_record
from shared.local.aws import ensure_queues
from shared.names import dlq_resource_name
from shared.queues import QueueDirectory
from shared.registry import RECORD_MARGIN_SECONDS, JobPayload, Registry, RetryPolicy, function_timeout
from shared.runtime import JobContext, job_handler
from shared.settings import Settings
from shared.testing import sqs_event


class Item(JobPayload):
    n: int


registry = Registry()
ITEM = registry.job("test.item", payload=Item, queue="items", timeout=5, retry=RetryPolicy(max_attempts=3, jitter=False))


class FakeLambdaContext:
    """What Lambda passes a handler (the parts the runtime reads). Not Conveyor's code: a stand-in for AWS."""

    def __init__(self, name: str, remaining_ms: int = 600_000) -> None:
        self.function_name = name
        self.remaining_ms = remaining_ms
        self.aws_request_id = name

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@contextmanager
def captured_logs(handler) -> Iterator[io.StringIO]:
    """The handler logger's JSON lines, formatted exactly as on Lambda."""
    stream = io.StringIO()
    sink = logging.StreamHandler(stream)
    sink.setFormatter(handler.logger.registered_formatter)
    handler.logger.addHandler(sink)
    try:
        yield stream
    finally:
        handler.logger.removeHandler(sink)


def test_concurrent_runs_of_one_handler_keep_their_own_log_keys_and_lambda_context():
    """The local runtime polls a queue with two workers that share one handler: each run's log lines and
    ``ctx.lambda_context`` must be its own, not whichever run started last."""
    both_running = threading.Barrier(2, timeout=10)
    seen: dict[int, object] = {}

    def run(payload: Item, ctx: JobContext) -> None:
        both_running.wait()  # both runs have started (and set their state) before either logs
        ctx.logger.warning("working", extra={"n": payload.n})
        seen[payload.n] = ctx.lambda_context
        both_running.wait()  # neither run ends (and clears its state) before the other has logged

    handler = job_handler(ITEM, run)
    events = {n: sqs_event(ITEM, {"n": n}, job_id=f"job-{n}") for n in (1, 2)}
    contexts = {n: FakeLambdaContext(f"invocation-{n}") for n in (1, 2)}
    responses: dict[int, dict] = {}
    threads = [
        threading.Thread(target=lambda n=n: responses.__setitem__(n, handler(events[n], contexts[n]))) for n in (1, 2)
    ]
    with captured_logs(handler) as stream:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert responses == {1: {"batchItemFailures": []}, 2: {"batchItemFailures": []}}
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    working = [line for line in lines if line["message"] == "working"]
    assert sorted((line["n"], line.get("job_id")) for line in working) == [(1, "job-1"), (2, "job-2")]
    assert seen == contexts


# -- against moto's SQS ----------------------------------------------------------------------------------------------


@pytest.fixture
def items_queue(sqs, stage):
    """The test registry's queue on moto: (queue url, queue arn)."""
    url, _ = ensure_queues(sqs, registry, stage=stage)["items"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


@pytest.fixture
def bind(sqs, stage):
    def bind_(handler):
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, Settings(stage=stage)))
        return handler

    return bind_


def received_event(sqs, queue, bodies, *, visibility=60):
    """Send ``bodies`` to the queue and receive them as the event source would: a Lambda event of real records."""
    url, arn = queue
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    messages = []
    while len(messages) < len(bodies):
        messages += sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility, AttributeNames=["All"],
            MessageAttributeNames=["All"], WaitTimeSeconds=1,
        ).get("Messages", [])  # fmt: skip
    messages.sort(key=lambda m: json.loads(m["Body"])["n"])
    return {"Records": [sqs_record(m, queue_arn=arn, region="us-east-1") for m in messages]}


def moto_message(url, message_id):
    """moto's own record of a message (the server runs in this process): when it becomes visible again."""
    from moto.sqs.models import sqs_backends

    account, name = url.rstrip("/").split("/")[-2:]
    return next(m for m in sqs_backends[account]["us-east-1"].queues[name]._messages if m.id == message_id)


def test_records_are_not_started_without_time_for_their_timeout(items_queue, bind, sqs):
    """Lambda would kill a record started too close to the deadline, and with it the whole batch: the runtime
    leaves such records unstarted and hands them back, without counting a failed attempt or touching their
    visibility."""
    ran = []
    context = FakeLambdaContext("items", remaining_ms=function_timeout(ITEM.timeout, 3) * 1000)

    def run(payload: Item, ctx: JobContext) -> None:
        ran.append(payload.n)
        # This record took longer than its timeout: one second short of what the next one needs is left.
        context.remaining_ms = (ITEM.timeout + RECORD_MARGIN_SECONDS) * 1000 - 1000

    handler = bind(job_handler(ITEM, run))
    reports = []
    handler.observers.append(reports.append)
    event = received_event(sqs, items_queue, [{"n": 1}, {"n": 2}, {"n": 3}])
    hidden_until = {r["messageId"]: moto_message(items_queue[0], r["messageId"]).visible_at for r in event["Records"]}
    response = handler(event, context)
    assert ran == [1]
    unstarted = [r["messageId"] for r in event["Records"][1:]]
    assert response == {"batchItemFailures": [{"itemIdentifier": m} for m in unstarted]}
    assert [(r.attempt, r.outcome) for r in reports] == [(1, "succeeded")]  # no failed run reported for 2 and 3
    for message_id in unstarted:  # their visibility is the receive's, untouched
        assert moto_message(items_queue[0], message_id).visible_at == hidden_until[message_id]


def test_dead_letter_copy_keeps_the_producers_attributes(items_queue, bind, sqs, stage):
    """A foreign producer's trace id and tenant (text and binary) survive the move to the DLQ."""
    from shared.envelope import ATTR_ERROR_TYPE
    from shared.runtime import PermanentJobError

    def refuse(payload: Item, ctx: JobContext) -> None:
        raise PermanentJobError("never")

    url, _ = items_queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 1}), MessageAttributes={
        "trace_id": {"DataType": "String", "StringValue": "Root=1-abc"},
        "tenant": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
    })  # fmt: skip
    [message] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"], WaitTimeSeconds=1)["Messages"]
    event = {"Records": [sqs_record(message, queue_arn=items_queue[1], region="us-east-1")]}
    assert bind(job_handler(ITEM, refuse))(event, None) == {"batchItemFailures": []}
    dlq = sqs.get_queue_url(QueueName=dlq_resource_name("items", stage=stage))["QueueUrl"]
    [dead] = sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=1)["Messages"]
    attributes = dead["MessageAttributes"]
    assert attributes["trace_id"] == {"StringValue": "Root=1-abc", "DataType": "String"}
    assert attributes["tenant"] == {"BinaryValue": b"\x00\xff", "DataType": "Binary"}
    assert attributes[ATTR_ERROR_TYPE]["StringValue"] == "PermanentJobError"
