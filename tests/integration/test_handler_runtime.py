"""The handler runtime called the way Lambda calls it: per-record state, deadlines, retry delays, DLQ copies.

Events are built from real moto SQS receives where the test looks at what the runtime did to a message.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.database import Database
from shared.lambda_events import sqs_record
from shared.local.aws import ensure_queues
from shared.names import dlq_resource_name
from shared.queues import QueueDirectory
from shared.registry import RECORD_MARGIN_SECONDS, JobPayload, Registry, RetryPolicy, function_timeout
from shared.runtime import JobContext, RetryAfter, job_handler
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
    """Point a handler at moto and (when given) a test database; the handler reports its runs to ``.reports``."""
    databases = []

    def bind_(handler, db_url=None):
        settings = Settings(stage=stage, database_url=db_url)
        database = Database(settings)
        databases.append(database)
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
        handler.reports = []
        handler.observers.append(handler.reports.append)
        return handler

    yield bind_
    for database in databases:
        database.close()


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


# -- retry delays ----------------------------------------------------------------------------------------------------


def now_ms() -> float:
    return time.time() * 1000


def retrying(seconds):
    def run(payload: Item, ctx: JobContext) -> None:
        raise RetryAfter(seconds, "rate limited")

    return run


@pytest.mark.parametrize("asked, set_", [(0.5, 1), (3600, 3600)])
def test_retry_after_sets_the_visibility_it_asks_for_rounded_up(items_queue, bind, sqs, asked, set_):
    handler = bind(job_handler(ITEM, retrying(asked)))
    event = received_event(sqs, items_queue, [{"n": 1}])
    [message_id] = [r["messageId"] for r in event["Records"]]
    before = now_ms()
    response = handler(event, FakeLambdaContext("items"))
    after = now_ms()
    assert response == {"batchItemFailures": [{"itemIdentifier": message_id}]}  # stays on the queue, hidden
    visible_at = moto_message(items_queue[0], message_id).visible_at
    assert before + set_ * 1000 <= visible_at <= after + set_ * 1000
    [report] = handler.reports
    assert (report.outcome, report.retry_in, report.rescheduled_as) == ("retrying", set_, None)


def outbox_rows(db_url):
    import psycopg

    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT coalesce(job_id, id), job_name, queue, payload::text, extract(epoch FROM run_at) * 1000 FROM conveyor.outbox"
        ).fetchall()


def test_retry_after_longer_than_sqs_can_hold_goes_back_through_the_outbox(items_queue, bind, sqs, db_url):
    """SQS keeps a message hidden at most 12 h after its receive, and part of that has passed: the job waits its
    full delay in the outbox instead of coming back early."""
    handler = bind(job_handler(ITEM, retrying(43_200)), db_url)
    event = received_event(sqs, items_queue, [{"n": 7}])
    before = now_ms()
    response = handler(event, FakeLambdaContext("items"))
    after = now_ms()
    assert response == {"batchItemFailures": []}  # the original is deleted: its copy waits in the outbox
    [(job_id, job_name, queue, payload, run_at)] = outbox_rows(db_url)
    assert (job_name, queue, json.loads(payload)) == ("test.item", "items", {"n": 7})
    assert before + 43_200_000 <= float(run_at) <= after + 43_200_000
    [report] = handler.reports
    assert (report.outcome, report.retry_in, report.rescheduled_as) == ("retrying", 43_200, str(job_id))
    # The same job, counting on: its next message starts at attempt 2, so it still reaches the DLQ in the end.
    assert str(job_id) == report.job_id
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT attempt FROM conveyor.outbox").fetchone()[0] == 2
    # The invocation died before Lambda deleted the original: its redelivery adds no second retry.
    assert handler(event, FakeLambdaContext("items")) == {"batchItemFailures": []}
    assert outbox_rows(db_url) == [(job_id, job_name, queue, payload, run_at)]


def test_retry_after_that_sqs_refuses_goes_back_through_the_outbox(items_queue, bind, sqs, db_url):
    """The runtime cannot see when SQS counts the 12 h from (a receive before the invocation): when SQS refuses
    the delay, the job is rescheduled through the outbox rather than retried early."""
    handler = bind(job_handler(ITEM, retrying(3600)), db_url)
    event = received_event(sqs, items_queue, [{"n": 8}])
    moto_message(items_queue[0], event["Records"][0]["messageId"]).sent_timestamp -= 11.5 * 3600 * 1000
    assert handler(event, FakeLambdaContext("items")) == {"batchItemFailures": []}
    [(job_id, job_name, _, payload, _)] = outbox_rows(db_url)
    assert (job_name, json.loads(payload)) == ("test.item", {"n": 8})
    assert handler.reports[0].rescheduled_as == str(job_id)


def test_a_retry_delay_sqs_does_not_take_is_reported_as_not_set(items_queue, bind):
    """A receipt handle SQS no longer honours: the message comes back after the queue's visibility timeout, and
    the run's report and log say so instead of claiming the backoff."""
    from shared.testing import invoke

    handler = bind(job_handler(ITEM, retrying(30)))
    with captured_logs(handler) as stream:
        result = invoke(handler, {"n": 1}, queue="items", receipt_handle="not-a-receipt-handle")
    assert result.response["batchItemFailures"]  # still retried, by the queue's visibility timeout
    [report] = result.reports
    assert (report.outcome, report.retry_in) == ("retrying", None)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any("could not set the retry delay" in line["message"] and line.get("job_id") for line in lines)
    [retry] = [line for line in lines if line["message"] == "job failed, will retry"]
    assert retry.get("retry_in_s") is None


def test_retry_after_takes_fractions_and_refuses_what_sqs_cannot_do():
    assert RetryAfter(0.5).seconds == 1
    assert RetryAfter(2).seconds == 2
    for bad in (-1, 43_201, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="RetryAfter seconds must be a number between 0 and 43200"):
            RetryAfter(bad)


def test_a_backoff_sqs_cannot_hold_for_this_receive_is_shortened_and_reported_as_set(items_queue, bind, sqs):
    """The registry keeps backoffs within what SQS can hold; should one still not fit (a receive older than the
    runtime expects), it is shortened to what SQS takes, and the report says what was set."""
    def fail(payload: Item, ctx: JobContext) -> None:
        raise RuntimeError("flaky")

    handler = bind(job_handler(ITEM, fail))  # backoff after attempt 1: 10 s
    event = received_event(sqs, items_queue, [{"n": 1}])
    [record] = event["Records"]
    received_ms = now_ms() - (43_200 - 15) * 1000  # almost 12 h ago: 5 s or less is left
    record["attributes"]["ApproximateFirstReceiveTimestamp"] = str(int(received_ms))
    moto_message(items_queue[0], record["messageId"]).sent_timestamp = received_ms
    with captured_logs(handler) as stream:
        before = now_ms()
        handler(event, FakeLambdaContext("items"))
        after = now_ms()
    [report] = handler.reports
    assert 0 <= report.retry_in < ITEM.retry.delay_after(1)
    visible_at = moto_message(items_queue[0], record["messageId"]).visible_at
    assert before + report.retry_in * 1000 <= visible_at <= after + report.retry_in * 1000
    assert any(json.loads(line)["message"] == "retry delay shortened to what SQS can hold" for line in stream.getvalue().splitlines())


# -- what a job can do through its context ---------------------------------------------------------------------------


def test_ctx_enqueue_commits_and_rolls_back_with_ctx_transaction(items_queue, bind, db_url):
    import psycopg

    from shared.runtime import PermanentJobError
    from shared.testing import invoke

    def pending() -> list[int]:
        with psycopg.connect(db_url) as other:
            return sorted(json.loads(p)["n"] for (p,) in other.execute("SELECT payload::text FROM conveyor.outbox"))

    seen_inside = []

    def run(payload: Item, ctx: JobContext) -> None:
        if payload.n == 3:
            ctx.enqueue(ITEM, {"n": 30})  # outside a transaction: committed at once
            raise PermanentJobError("fails after its own enqueue committed")
        with ctx.transaction() as conn:
            ctx.enqueue("test.item", {"n": payload.n * 10})
            conn.execute("SELECT 1")
            seen_inside.append(pending())  # not yet visible to anyone else
            if payload.n == 2:
                raise PermanentJobError("rolls back the follow-up with the rest of the transaction")

    handler = bind(job_handler(ITEM, run, registry=registry), db_url)
    assert invoke(handler, {"n": 1}, queue="items").succeeded
    assert pending() == [10]
    assert invoke(handler, {"n": 2}, queue="items").outcomes == ["dead"]
    assert pending() == [10]
    assert invoke(handler, {"n": 3}, queue="items").outcomes == ["dead"]
    assert pending() == [10, 30]
    assert seen_inside == [[], [10]]
