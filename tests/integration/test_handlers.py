"""Handlers behind the local event-source loop: retries, backoff, dead letters, partial batches, foreign producers."""

import json
import time

import psycopg

from shared.envelope import ATTR_ERROR, ATTR_ERROR_TYPE, ATTR_JOB_ID, ATTR_JOB_NAME
from shared.outbox import enqueue
from tests.support import WORK


def dead_letters(runtime, queue="work"):
    sqs, url = runtime.sqs, runtime.urls[queue][1]
    found = []
    for _ in range(5):
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            break
        found.extend(batch)
    return found


def enqueue_committed(db_url, payload, **options):
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        return str(enqueue(conn, WORK, payload, **options))


def test_committed_job_reaches_its_handler(work_runtime, db_url, calls):
    job_id = enqueue_committed(db_url, {"n": 1})
    assert work_runtime.wait_for(lambda: calls.items, timeout=10)
    assert calls.items == [(job_id, 1, 1)]
    # The console line comes once the ledger has the run's outcome, a moment after the handler returned.
    assert work_runtime.wait_for(lambda: any("succeeded" in line and job_id in line for line in work_runtime.lines), timeout=10)


def test_failure_is_retried_with_backoff_then_dead_lettered_with_the_error(work_runtime, db_url, calls):
    job_id = enqueue_committed(db_url, {"n": 7, "fail_times": 99})
    assert work_runtime.wait_for(lambda: len(dead_letters_peek(work_runtime)) == 1, timeout=30)
    assert work_runtime.wait_for(lambda: len([r for r in work_runtime.reports if r.job_id == job_id]) == 3, timeout=10)
    attempts = [a for _, n, a in calls.items if n == 7]
    assert attempts == [1, 2, 3]  # max_attempts = 3, then no more runs
    # ...though the queue's redrive policy would allow more receives (room for throttling): the handler decides.
    redrive = work_runtime.sqs.get_queue_attributes(QueueUrl=work_runtime.urls["work"][0], AttributeNames=["RedrivePolicy"])
    assert json.loads(redrive["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 10
    [dead] = dead_letters(work_runtime)
    attrs = dead["MessageAttributes"]
    assert attrs[ATTR_JOB_ID]["StringValue"] == job_id
    assert attrs[ATTR_ERROR_TYPE]["StringValue"] == "RuntimeError"
    assert "attempt 3 of 3 failed" in attrs[ATTR_ERROR]["StringValue"]
    # Backoff: the policy waits 1 s after attempt 1 and 2 s after attempt 2 (no jitter in the test job).
    times = [r for r in work_runtime.reports if r.job_id == job_id]
    assert [r.retry_in for r in times] == [1, 2, None]




def dead_letters_peek(runtime):
    """Count DLQ messages without consuming them (ApproximateNumberOfMessages)."""
    attrs = runtime.sqs.get_queue_attributes(QueueUrl=runtime.urls["work"][1], AttributeNames=["ApproximateNumberOfMessages"])
    return [None] * int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def test_retry_waits_for_the_backoff(work_runtime, db_url, calls):
    enqueue_committed(db_url, {"n": 3, "fail_times": 1})
    assert work_runtime.wait_for(lambda: len(calls.items) == 2, timeout=15)
    assert work_runtime.wait_for(lambda: len([r for r in work_runtime.reports if r.job_name == "test.work"]) >= 2, timeout=10)
    first, second = [r for r in work_runtime.reports if r.job_name == "test.work"][:2]
    assert first.outcome == "retrying" and first.retry_in == 1
    assert second.outcome == "succeeded" and second.attempt == 2


def test_retry_gap_is_at_least_the_backoff(work_runtime, db_url, calls):
    stamps = []
    work_runtime.handlers["test.work"].observers.append(lambda r: stamps.append(time.monotonic()))
    enqueue_committed(db_url, {"n": 4, "fail_times": 2})
    assert work_runtime.wait_for(lambda: len(stamps) == 3, timeout=20)
    assert stamps[1] - stamps[0] >= 0.9 and stamps[2] - stamps[1] >= 1.9


def test_permanent_error_goes_to_the_dlq_without_retries(work_runtime, db_url, calls):
    enqueue_committed(db_url, {"n": 5, "permanent": True})
    assert work_runtime.wait_for(lambda: len(dead_letters_peek(work_runtime)) == 1, timeout=10)
    time.sleep(1.5)  # a retry would have come back by now
    assert [a for _, n, a in calls.items if n == 5] == [1]
    [dead] = dead_letters(work_runtime)
    assert dead["MessageAttributes"][ATTR_ERROR_TYPE]["StringValue"] == "PermanentJobError"
    assert "can never work" in dead["MessageAttributes"][ATTR_ERROR]["StringValue"]


def test_invalid_payload_at_the_handler_goes_to_the_dlq_with_the_reason(work_runtime, calls):
    # A producer that bypassed validation (SQL add_job, another service) sent a body that does not fit the model.
    work_runtime.sqs.send_message(QueueUrl=work_runtime.urls["work"][0], MessageBody=json.dumps({"n": "seven"}))
    assert work_runtime.wait_for(lambda: len(dead_letters_peek(work_runtime)) == 1, timeout=10)
    time.sleep(1.5)
    assert calls.items == []
    [dead] = dead_letters(work_runtime)
    assert dead["MessageAttributes"][ATTR_ERROR_TYPE]["StringValue"] == "PayloadInvalid"
    assert "n: Input should be a valid integer" in dead["MessageAttributes"][ATTR_ERROR]["StringValue"]
    assert json.loads(dead["Body"]) == {"n": "seven"}  # the original body, for inspection and redrive


def test_foreign_producer_message_is_handled_like_an_outbox_job(work_runtime, calls):
    sent = work_runtime.sqs.send_message(QueueUrl=work_runtime.urls["work"][0], MessageBody=json.dumps({"n": 11}))
    assert work_runtime.wait_for(lambda: calls.items, timeout=10)
    assert calls.items == [(sent["MessageId"], 11, 1)]  # no envelope: the message id is the job id


def test_message_naming_another_job_is_dead_lettered(work_runtime, calls):
    work_runtime.sqs.send_message(
        QueueUrl=work_runtime.urls["work"][0],
        MessageBody=json.dumps({"n": 1}),
        MessageAttributes={ATTR_JOB_NAME: {"DataType": "String", "StringValue": "email.send"}},
    )
    assert work_runtime.wait_for(lambda: len(dead_letters_peek(work_runtime)) == 1, timeout=10)
    [dead] = dead_letters(work_runtime)
    assert "delivered to the handler of 'test.work'" in dead["MessageAttributes"][ATTR_ERROR]["StringValue"]
    assert calls.items == []


def test_one_failure_does_not_rerun_its_batch_mates(runtime_factory, db_url, calls):
    from tests.support import make_work_handler

    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        for n, fail in [(1, 0), (2, 1), (3, 0)]:
            enqueue(conn, WORK, {"n": n, "fail_times": fail})
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, workers_per_queue=1)
    assert runtime.wait_for(lambda: len(calls.items) == 4, timeout=15)
    time.sleep(1.5)
    assert sorted(calls.ns()) == [1, 2, 2, 3]


def test_stop_lets_an_in_flight_job_finish_and_keeps_the_rest(runtime_factory, db_url):
    """What Ctrl-C on `conveyor dev` does: the running job completes and is deleted; jobs not yet published stay in
    the outbox for the next start."""
    import threading

    from shared.runtime import job_handler

    started, release = threading.Event(), threading.Event()
    finished: list[int] = []

    def slow(payload, ctx):
        started.set()
        release.wait(5)
        finished.append(payload.n)

    runtime = runtime_factory(handlers={"test.work": job_handler(WORK, slow)})
    enqueue_committed(db_url, {"n": 1})
    assert started.wait(10)
    enqueue_committed(db_url, {"n": 2}, delay=3600)  # committed, not due: must survive the stop in the outbox
    stopper = threading.Thread(target=runtime.stop)
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive(), "stop returned while a job was still running"
    release.set()
    stopper.join(30)
    assert finished == [1]
    assert [r.outcome for r in runtime.reports] == ["succeeded"]
    queue_url = runtime.urls["work"][0]
    attrs = runtime.sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT payload->>'n' FROM conveyor.outbox").fetchall() == [("2",)]


def test_concurrent_jobs_do_not_share_a_transaction(runtime_factory, db_url):
    """Two runs of one job at once (two workers on the queue): one failing must not roll back the other's work."""
    import threading

    from shared.registry import Registry, RetryPolicy
    from shared.runtime import job_handler
    from tests.support import Work

    registry = Registry()
    spec = registry.job("test.pair", payload=Work, queue="pair", batch_size=1, concurrency=2, retry=RetryPolicy(max_attempts=1))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE written (n int)")
    second_done = threading.Event()

    def run(payload, ctx):
        with ctx.transaction() as conn:
            conn.execute("INSERT INTO written VALUES (%s)", (payload.n,))
            if payload.n == 1:
                # Hold this transaction open while the other run commits, then fail.
                assert second_done.wait(10), "the second run never ran concurrently"
                raise RuntimeError("first run fails")
        second_done.set()

    runtime = runtime_factory(registry=registry, handlers={"test.pair": job_handler(spec, run)})
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        enqueue(conn, spec, {"n": 1}, registry=registry)
    time.sleep(0.5)  # the first run is inside its transaction, waiting
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        enqueue(conn, spec, {"n": 2}, registry=registry)
    assert runtime.wait_for(lambda: len(runtime.reports) == 2, timeout=20), runtime.lines
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT n FROM written").fetchall() == [(2,)]


def test_local_invocations_get_the_function_timeout_of_a_whole_batch(runtime_factory, db_url):
    """`make dev` gives each batch the deadline Lambda would: the queue's function timeout, not one job's."""
    from shared.runtime import job_handler
    from tests.support import registry

    deadlines = []
    runtime = runtime_factory(handlers={"test.work": job_handler(WORK, lambda p, ctx: deadlines.append(ctx.lambda_context.timeout_s))})
    enqueue_committed(db_url, {"n": 1})
    assert runtime.wait_for(lambda: deadlines, timeout=10)
    assert deadlines == [registry.queue_settings("work").function_timeout]


def test_local_batch_that_outlives_its_deadline_stays_on_the_queue(sqs, stage):
    """As on Lambda, where the invocation would have been killed: nothing of a late batch is deleted."""
    import dataclasses
    import threading

    from shared.local.aws import ensure_queues
    from shared.local.poller import QueuePoller
    from tests.support import registry

    url, _ = ensure_queues(sqs, registry, stage=stage)["work"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def late(event, context):
        while context.get_remaining_time_in_millis() > 0:
            time.sleep(0.05)
        time.sleep(0.05)
        return {"batchItemFailures": []}

    poller = QueuePoller(
        sqs=sqs, queue=dataclasses.replace(registry.queue_settings("work"), function_timeout=1), url=url, queue_arn=arn,
        handlers={"test.work": late}, stop=threading.Event(), stage=stage,
    )  # fmt: skip
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 1}))
    assert poller.poll_once() == 1
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
