"""The run ledger as the handler runtime writes it: every job's row from enqueue to its end, on real PostgreSQL and
moto's SQS. Messages take the real path (enqueue → relay → SQS → receive → handler) unless a test needs a message no
producer of ours would send."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest

from shared.database import Database
from shared.local.aws import ensure_queues
from shared.migrate import sync_registry
from shared.outbox import enqueue
from shared.queues import QueueDirectory
from shared.registry import JobPayload, Registry, RetryPolicy
from shared.runtime import JobContext, job_handler
from shared.settings import Settings

from tests.support import FakeLambdaContext, fast_forward, insert_run, publish, receive


class Step(JobPayload):
    n: int
    fail: bool = False


registry = Registry()
STEP = registry.job("test.step", payload=Step, queue="steps", timeout=5, retry=RetryPolicy(max_attempts=3, jitter=False))


@pytest.fixture
def steps(sqs, stage, db_url, conn):
    """The test job's queue on moto and its registry synced to the test database: (queue url, arn)."""
    sync_registry(conn, registry)
    url, _ = ensure_queues(sqs, registry, stage=stage)["steps"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


@pytest.fixture
def make_handler(sqs, stage, db_url):
    databases = []

    def make(fn, *, database_url=db_url):
        settings = Settings(stage=stage, database_url=database_url)
        database = Database(settings)
        databases.append(database)
        handler = job_handler(STEP, fn)
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
        handler.reports = []
        handler.observers.append(handler.reports.append)
        return handler

    yield make
    for database in databases:
        database.close()


def job(conn, job_id):
    row = conn.execute(
        "SELECT status, attempt, last_error_type, last_error, first_started_at IS NOT NULL, finished_at IS NOT NULL,"
        " progress, result FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    return None if row is None else dict(
        zip(("status", "attempt", "error_type", "error", "started", "finished", "progress", "result"), row)
    )


def enqueue_step(conn, n, **payload):
    with conn.transaction():
        return enqueue(conn, STEP, {"n": n, **payload}, registry=registry)


# -- the ledger follows a job ------------------------------------------------------------------------------------


def test_a_job_is_pending_then_queued_then_succeeded_with_its_timings(conn, db_url, sqs, stage, steps, make_handler):
    job_id = enqueue_step(conn, 1)
    assert job(conn, job_id)["status"] == "pending"
    assert publish(db_url, sqs, stage) == 1
    assert job(conn, job_id)["status"] == "queued"
    handler = make_handler(lambda payload, ctx: {"n": payload.n * 10})
    assert handler(receive(sqs, steps, 1), FakeLambdaContext()) == {"batchItemFailures": []}
    assert job(conn, job_id) == {
        "status": "succeeded", "attempt": 1, "error_type": None, "error": None, "started": True, "finished": True,
        "progress": None, "result": {"n": 10},
    }  # fmt: skip
    created, published, started, finished = conn.execute(
        "SELECT created_at, published_at, first_started_at, finished_at FROM conveyor.runs WHERE id = %s", (job_id,)
    ).fetchone()
    assert created <= published <= started <= finished


def test_failed_attempts_are_counted_with_their_errors_until_the_dlq(conn, db_url, sqs, stage, steps, make_handler):
    job_id = enqueue_step(conn, 2, fail=True)
    publish(db_url, sqs, stage)

    def fail(payload, ctx):
        raise RuntimeError(f"attempt {ctx.attempt} broke")

    handler = make_handler(fail)
    for attempt in (1, 2):
        event = receive(sqs, steps, 1)
        handler(event, FakeLambdaContext())
        row = job(conn, job_id)
        assert (row["status"], row["attempt"], row["error"]) == ("retrying", attempt, f"attempt {attempt} broke")
        fast_forward(sqs, steps, event)
    handler(receive(sqs, steps, 1), FakeLambdaContext())
    row = job(conn, job_id)
    assert (row["status"], row["attempt"], row["error_type"], row["finished"]) == ("dead", 3, "RuntimeError", True)
    assert "attempt 3 of 3 failed" in row["error"]


def test_a_redelivered_succeeded_job_is_acknowledged_without_running(conn, db_url, sqs, stage, steps, make_handler):
    job_id = enqueue_step(conn, 3)
    publish(db_url, sqs, stage)
    runs = []
    handler = make_handler(lambda payload, ctx: runs.append(ctx.attempt))
    event = receive(sqs, steps, 1)
    assert handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    # SQS delivers the same message again (at-least-once): the job does not run twice.
    assert handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert runs == [1]
    assert [r.outcome.value for r in handler.reports] == ["succeeded", "not_run"]
    assert job(conn, job_id)["attempt"] == 1


def test_a_cancelled_published_job_is_acknowledged_without_running(conn, db_url, sqs, stage, steps, make_handler):
    job_id = enqueue_step(conn, 4)
    publish(db_url, sqs, stage)
    from shared.ledger.cancel import cancel

    with conn.transaction():
        assert cancel(conn, job_id, reason="the order was refunded") == "queued"
    runs = []
    handler = make_handler(lambda payload, ctx: runs.append(payload.n))
    assert handler(receive(sqs, steps, 1), FakeLambdaContext()) == {"batchItemFailures": []}
    assert runs == []
    assert job(conn, job_id)["status"] == "cancelled"


def test_a_late_publish_never_overwrites_a_status_the_job_reached(conn, db_url, sqs, stage, steps, make_handler):
    """The relay's lease ran out after SQS took the message and the job ran; another relay publishes it again. The
    ledger keeps 'succeeded', and the duplicate message is acknowledged unrun."""
    job_id = enqueue_step(conn, 5)
    publish(db_url, sqs, stage)
    runs = []
    handler = make_handler(lambda payload, ctx: runs.append(payload.n))
    handler(receive(sqs, steps, 1), FakeLambdaContext())
    # The same job's row back in the outbox, as a relay that lost its lease would find it.
    conn.execute(
        "INSERT INTO conveyor.outbox (id, job_name, queue, payload) SELECT id, job_name, queue, payload FROM conveyor.runs WHERE id = %s",
        (job_id,),
    )
    assert publish(db_url, sqs, stage) == 1
    assert job(conn, job_id)["status"] == "succeeded"
    handler(receive(sqs, steps, 1), FakeLambdaContext())
    assert runs == [5]


# -- effectively-once database effects -----------------------------------------------------------------------------


@pytest.fixture
def ledger_table(conn):
    conn.execute("CREATE TABLE public.effects (job_id text, n int)")


def test_ctx_transaction_commits_the_work_with_the_succeeded_mark(conn, db_url, sqs, stage, steps, make_handler, ledger_table):
    job_id = enqueue_step(conn, 6)
    publish(db_url, sqs, stage)
    seen = {}

    def work(payload, ctx: JobContext):
        with ctx.transaction() as tx:
            tx.execute("INSERT INTO public.effects VALUES (%s, %s)", (ctx.job_id, payload.n))
            # Inside the transaction the run is not yet succeeded for anyone else.
            with psycopg.connect(db_url, autocommit=True) as other:
                seen["during"] = job(other, job_id)["status"]

    handler = make_handler(work)
    event = receive(sqs, steps, 1)
    handler(event, FakeLambdaContext())
    handler(event, FakeLambdaContext())  # redelivered: skipped
    assert seen["during"] == "running"
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone()[0] == 1
    assert job(conn, job_id)["status"] == "succeeded"


def test_a_crash_inside_ctx_transaction_leaves_nothing_and_the_retry_commits_once(
    conn, db_url, sqs, stage, steps, make_handler, ledger_table
):
    job_id = enqueue_step(conn, 7)
    publish(db_url, sqs, stage)

    def work(payload, ctx: JobContext):
        with ctx.transaction() as tx:
            tx.execute("INSERT INTO public.effects VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
            if ctx.attempt == 1:
                raise ConnectionResetError("the mail server hung up mid-job")

    handler = make_handler(work)
    event = receive(sqs, steps, 1)
    handler(event, FakeLambdaContext())
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone()[0] == 0
    assert job(conn, job_id)["status"] == "retrying"
    fast_forward(sqs, steps, event)
    handler(receive(sqs, steps, 1), FakeLambdaContext())
    assert conn.execute("SELECT job_id, n FROM public.effects").fetchall() == [(str(job_id), 2)]
    assert job(conn, job_id)["status"] == "succeeded"


def test_a_run_taken_over_cannot_commit_its_transaction(conn, db_url, sqs, stage, steps, make_handler, ledger_table):
    """A worker that overran its time was taken for dead and its job given to another delivery: when it finally
    commits, its work is rolled back, so the job's database effects happen once."""
    job_id = enqueue_step(conn, 8)
    publish(db_url, sqs, stage)
    inside, release = threading.Event(), threading.Event()

    def slow(payload, ctx: JobContext):
        with ctx.transaction() as tx:
            tx.execute("INSERT INTO public.effects VALUES (%s, 1)", (ctx.job_id,))
            inside.set()
            release.wait(20)

    def quick(payload, ctx: JobContext):
        with ctx.transaction() as tx:
            tx.execute("INSERT INTO public.effects VALUES (%s, 2)", (ctx.job_id,))

    event = receive(sqs, steps, 1, visibility=0)
    first = make_handler(slow)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("first", first(event, FakeLambdaContext())))
    thread.start()
    assert inside.wait(10)
    conn.execute("UPDATE conveyor.runs SET stale_at = now() - interval '1 second' WHERE id = %s", (job_id,))
    assert job(conn, job_id)["status"] == "abandoned"
    second = make_handler(quick)
    assert second(receive(sqs, steps, 1), FakeLambdaContext()) == {"batchItemFailures": []}
    release.set()
    thread.join(20)
    assert conn.execute("SELECT n FROM public.effects").fetchall() == [(2,)]
    row = job(conn, job_id)
    assert (row["status"], row["attempt"], row["error_type"]) == ("succeeded", 2, "Abandoned")
    # The first worker leaves its message on SQS; when it comes back, the job is done and it is acknowledged.
    assert len(result["first"]["batchItemFailures"]) == 1


# -- stale and concurrent runs --------------------------------------------------------------------------------------


def test_a_message_of_a_job_running_elsewhere_is_handed_back_until_that_run_would_be_stale(
    conn, db_url, sqs, stage, steps, make_handler
):
    job_id = enqueue_step(conn, 9)
    publish(db_url, sqs, stage)
    event = receive(sqs, steps, 1, visibility=0)
    conn.execute(
        "UPDATE conveyor.runs SET status = 'running', attempt = 1, run_token = gen_random_uuid(),"
        " stale_at = now() + interval '40 seconds' WHERE id = %s",
        (job_id,),
    )
    runs = []
    handler = make_handler(lambda payload, ctx: runs.append(1))
    response = handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert runs == [] and job(conn, job_id)["attempt"] == 1
    # Hidden until the other run would count as abandoned, not for the queue's whole visibility timeout.
    assert sqs.receive_message(QueueUrl=steps[0], WaitTimeSeconds=0).get("Messages", []) == []


def test_a_stale_run_is_shown_abandoned_and_its_redelivery_continues_the_same_row(
    conn, db_url, sqs, stage, steps, make_handler
):
    job_id = enqueue_step(conn, 10)
    publish(db_url, sqs, stage)

    class WorkerDied(BaseException):
        """Stands in for Lambda killing the invocation: nothing after it runs in the worker."""

    def die(payload, ctx):
        raise WorkerDied

    event = receive(sqs, steps, 1, visibility=0)
    with pytest.raises(WorkerDied):
        make_handler(die)(event, FakeLambdaContext())
    row = job(conn, job_id)
    assert (row["status"], row["attempt"]) == ("running", 1)
    stale_in = conn.execute("SELECT extract(epoch FROM stale_at - now()) FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone()[0]
    # One slot: the job's timeout and its margins, far less than 6 x the timeout the recovery must stay under.
    assert 0 < stale_in <= STEP.timeout * 6
    conn.execute("UPDATE conveyor.runs SET stale_at = now() - interval '1 second' WHERE id = %s", (job_id,))
    assert job(conn, job_id)["status"] == "abandoned"
    runs = []
    make_handler(lambda payload, ctx: runs.append(ctx.attempt))(event, FakeLambdaContext())
    assert runs == [2]
    row = job(conn, job_id)
    assert (row["status"], row["attempt"], row["error_type"]) == ("succeeded", 2, "Abandoned")
    assert conn.execute("SELECT count(*) FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone()[0] == 1
    [lost] = attempts_history(conn, job_id)
    assert (lost["attempt"], lost["outcome"], lost["error_type"]) == (1, "abandoned", "Abandoned")


def test_each_record_is_visible_again_at_the_end_of_its_slot(conn, db_url, sqs, stage, steps, make_handler):
    """A worker that dies is recovered after its record's slot in the batch, not after the queue's visibility."""
    import time

    from moto.sqs.models import sqs_backends

    for n in (11, 12):
        enqueue_step(conn, n)
    publish(db_url, sqs, stage)
    event = receive(sqs, steps, 2, visibility=3600)
    before = time.time()
    make_handler(lambda payload, ctx: None)(event, FakeLambdaContext())
    account, name = steps[0].rstrip("/").split("/")[-2:]
    messages = {m.id: m for m in sqs_backends[account]["us-east-1"].queues[name]._messages}
    slot = STEP.timeout + 5
    for index, record in enumerate(event["Records"]):
        visible_in = messages[record["messageId"]].visible_at / 1000 - before  # moto keeps milliseconds
        assert (index + 1) * slot <= visible_in <= (index + 1) * slot + 5 + 2  # not the 3600 s of the receive


def test_attempts_count_runs_not_receives(conn, db_url, sqs, stage, steps, make_handler):
    """A receive that never ran (a throttled invocation hands its batch back) does not use up an attempt."""
    job_id = enqueue_step(conn, 13)
    publish(db_url, sqs, stage)
    for _ in range(3):  # three receives that never reached the handler
        receive(sqs, steps, 1, visibility=0)
    event = receive(sqs, steps, 1)
    assert event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "4"
    attempts = []
    make_handler(lambda payload, ctx: attempts.append(ctx.attempt))(event, FakeLambdaContext())
    assert attempts == [1]
    assert job(conn, job_id)["attempt"] == 1


# -- foreign producers and an unreachable ledger -------------------------------------------------------------------


def test_a_foreign_message_gets_a_ledger_row_on_first_receive(conn, db_url, sqs, stage, steps, make_handler):
    sqs.send_message(QueueUrl=steps[0], MessageBody=json.dumps({"n": 14}))
    event = receive(sqs, steps, 1)
    make_handler(lambda payload, ctx: None)(event, FakeLambdaContext())
    message_id = event["Records"][0]["messageId"]
    row = conn.execute(
        "SELECT job_name, queue, status, attempt, payload::text, message_id, published_at IS NOT NULL FROM conveyor.jobs WHERE id = %s",
        (uuid.UUID(message_id),),
    ).fetchone()
    assert row == ("test.step", "steps", "succeeded", 1, '{"n": 14}', message_id, True)


def test_an_unreachable_ledger_never_decides_a_jobs_fate(conn, db_url, sqs, stage, steps, make_handler):
    runs = []
    handler = make_handler(lambda payload, ctx: runs.append(ctx.attempt), database_url="postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    sqs.send_message(QueueUrl=steps[0], MessageBody=json.dumps({"n": 15}))
    assert handler(receive(sqs, steps, 1), FakeLambdaContext()) == {"batchItemFailures": []}
    assert runs == [1]
    assert handler.ledger_gaps == 2  # neither the start nor the outcome could be written, and both are counted


# -- progress and results ---------------------------------------------------------------------------------------------


def test_progress_is_persisted_monotonic_and_throttled(conn, db_url, sqs, stage, steps, make_handler):
    job_id = enqueue_step(conn, 16)
    publish(db_url, sqs, stage)
    seen = []

    def work(payload, ctx: JobContext):
        with psycopg.connect(db_url, autocommit=True) as other:
            ctx.progress(10, "starting")
            seen.append(job(other, job_id)["progress"])  # the first report is written at once
            for percent in range(11, 60):
                ctx.progress(percent)  # a tight loop: throttled to one write a second
            seen.append(job(other, job_id)["progress"])
            ctx.progress(5)  # never backwards
            with pytest.raises(ValueError, match="0 to 100"):
                ctx.progress(101)

    make_handler(work)(receive(sqs, steps, 1), FakeLambdaContext())
    assert seen == [10, 10]
    assert conn.execute("SELECT progress, progress_message FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone() == (59, "starting")


def test_a_result_too_large_to_keep_is_dropped_with_a_warning_not_a_failure(conn, db_url, sqs, stage, steps, make_handler):
    job_id = enqueue_step(conn, 17)
    publish(db_url, sqs, stage)
    handler = make_handler(lambda payload, ctx: {"blob": "x" * 20_000})
    assert handler(receive(sqs, steps, 1), FakeLambdaContext()) == {"batchItemFailures": []}
    row = job(conn, job_id)
    assert (row["status"], row["result"]) == ("succeeded", None)


def test_a_job_that_kills_its_worker_every_time_goes_to_the_dlq_after_its_attempts(conn, db_url, sqs, stage, steps, make_handler):
    """Each run dies (a crash, out of memory): the attempts count, and after the last one the job is dead-lettered
    without running again, instead of looping until the queue's maxReceiveCount."""
    from shared.names import dlq_resource_name

    job_id = enqueue_step(conn, 18)
    publish(db_url, sqs, stage)

    class WorkerDied(BaseException):
        """Stands in for the runtime being killed mid-run."""

    runs = []

    def die(payload, ctx):
        runs.append(ctx.attempt)
        raise WorkerDied

    for _ in range(STEP.retry.max_attempts):
        event = receive(sqs, steps, 1, visibility=0)
        with pytest.raises(WorkerDied):
            make_handler(die)(event, FakeLambdaContext())
        conn.execute("UPDATE conveyor.runs SET stale_at = now() - interval '1 second' WHERE id = %s", (job_id,))
    event = receive(sqs, steps, 1)
    assert make_handler(die)(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert runs == [1, 2, 3]
    row = job(conn, job_id)
    assert (row["status"], row["attempt"], row["error_type"]) == ("dead", 4, "Abandoned")
    assert "all 3 attempts started and none reported an outcome" in row["error"]
    dlq = sqs.get_queue_url(QueueName=dlq_resource_name("steps", stage=stage))["QueueUrl"]
    assert len(sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])) == 1


# -- review findings: crash windows and a ledger that misses a write ------------------------------------------------


class WorkerKilled(BaseException):
    """Stands in for Lambda killing the invocation (a timeout, out of memory): nothing after it runs."""


def test_a_worker_killed_after_moving_a_retry_to_the_outbox_does_not_fork_the_job(conn, db_url, sqs, stage, steps, make_handler):
    """The long RetryAfter is held in the outbox and the ledger says so in the same transaction; the worker then dies
    before its batch's outcome statement. The original message, delivered again, does not run the job early, and a
    job never has two rows waiting in the outbox."""
    from shared.runtime import RetryAfter

    job_id = enqueue_step(conn, 19)
    publish(db_url, sqs, stage)
    runs = []

    def long_wait(payload, ctx):
        runs.append(ctx.attempt)
        raise RetryAfter(43_200, "the bank's API opens tomorrow")

    handler = make_handler(long_wait)
    original_finish = handler._finish
    # Crash injection: the invocation is killed right before its outcome statement (not a stand-in for our logic).
    handler._finish = lambda invocation: (_ for _ in ()).throw(WorkerKilled())
    event = receive(sqs, steps, 1, visibility=0)
    with pytest.raises(WorkerKilled):
        handler(event, FakeLambdaContext())
    handler._finish = original_finish
    assert job(conn, job_id)["status"] == "pending"
    assert make_handler(long_wait)(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert runs == [1]
    assert conn.execute("SELECT count(*) FROM conveyor.outbox WHERE job_id = %s", (job_id,)).fetchone()[0] == 1
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, attempt) VALUES (gen_random_uuid(), %s, 'test.step', 'steps', '{}', 5)",
            (job_id,),
        )


def test_batch_mates_of_a_job_that_kills_its_worker_keep_their_attempts(conn, db_url, sqs, stage, steps, make_handler):
    """The worker dies on the first record; the second never started. Taken over again and again, only the first
    record's attempts count: the good job is not dead-lettered for runs it never had."""
    poison, good = enqueue_step(conn, 20), enqueue_step(conn, 21)
    publish(db_url, sqs, stage)
    ran = []

    def work(payload, ctx):
        ran.append(payload.n)
        if payload.n == 20:
            raise WorkerKilled

    for _ in range(STEP.retry.max_attempts):
        event = receive(sqs, steps, 2)
        event["Records"].sort(key=lambda r: json.loads(r["body"])["n"])  # the poison job first, every time
        with pytest.raises(WorkerKilled):
            make_handler(work)(event, FakeLambdaContext())
        # Their slots end (SQS's and the ledger's clocks cannot be moved): visible again, and stale.
        fast_forward(sqs, steps, event)
        conn.execute("UPDATE conveyor.runs SET stale_at = now() - interval '1 second' WHERE id = ANY(%s)", ([poison, good],))
    assert 21 not in ran
    assert (job(conn, good)["status"], job(conn, good)["attempt"]) == ("abandoned", 1)
    # The poison job has used its attempts and goes to its DLQ unrun; its batch-mate finally runs, as attempt 1.
    event = receive(sqs, steps, 2)
    event["Records"].sort(key=lambda r: json.loads(r["body"])["n"])
    assert make_handler(work)(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert ran == [20, 20, 20, 21]
    assert (job(conn, poison)["status"], job(conn, poison)["error_type"]) == ("dead", "Abandoned")
    assert (job(conn, good)["status"], job(conn, good)["attempt"]) == ("succeeded", 1)


def refuse_starts(conn):
    """Make the ledger's start statement fail in the database (the table refuses a new 'running' row), as during a
    failover, while every other statement works: a real fault, not a mocked one."""
    conn.execute("""
        CREATE FUNCTION public.refuse_start() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'running' THEN RAISE EXCEPTION 'injected: the start statement fails'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_start BEFORE INSERT ON conveyor.runs FOR EACH ROW EXECUTE FUNCTION public.refuse_start();
    """)


@pytest.fixture
def start_fails(conn):
    refuse_starts(conn)


def test_a_run_the_ledger_missed_still_commits_its_transaction_once(
    conn, db_url, sqs, stage, steps, make_handler, ledger_table
):
    """The first delivery commits its work; a second delivery of the same job arrives while the start statement
    fails. Its ctx.transaction() checks the ledger itself and rolls its work back."""
    job_id = enqueue_step(conn, 22)
    publish(db_url, sqs, stage)

    def work(payload, ctx: JobContext):
        with ctx.transaction() as tx:
            tx.execute("INSERT INTO public.effects VALUES (%s, %s)", (ctx.job_id, payload.n))

    event = receive(sqs, steps, 1)
    make_handler(work)(event, FakeLambdaContext())
    refuse_starts(conn)
    handler = make_handler(work)
    response = handler(event, FakeLambdaContext())
    assert handler.ledger_gaps == 1
    assert len(response["batchItemFailures"]) == 1  # left on SQS; delivered again, the ledger will say succeeded
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone()[0] == 1
    assert job(conn, job_id)["status"] == "succeeded"


def test_the_outcome_of_a_run_the_ledger_missed_is_still_recorded(conn, db_url, sqs, stage, steps, make_handler, start_fails):
    job_id = enqueue_step(conn, 23)
    publish(db_url, sqs, stage)
    handler = make_handler(lambda payload, ctx: None)
    assert handler(receive(sqs, steps, 1), FakeLambdaContext()) == {"batchItemFailures": []}
    assert handler.ledger_gaps == 1  # the start only
    row = job(conn, job_id)
    assert (row["status"], row["attempt"], row["finished"]) == ("succeeded", 1, True)


def test_a_job_whose_retry_the_relay_gives_up_on_ends_failed_in_the_ledger(conn, db_url, sqs, stage, steps):
    """A retry held in the outbox (the job's ledger row reads 'pending') that SQS can never take."""
    job_id = enqueue_step(conn, 24)
    publish(db_url, sqs, stage)
    conn.execute("UPDATE conveyor.runs SET status = 'pending', attempt = 1 WHERE id = %s", (job_id,))
    conn.execute(
        "INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, attempt) VALUES (gen_random_uuid(), %s, 'test.step', 'steps', %s, 2)",
        (job_id, json.dumps({"n": 24, "pad": "x" * 262_144})),
    )
    publish(db_url, sqs, stage)
    row = job(conn, job_id)
    assert (row["status"], row["error_type"], row["finished"]) == ("failed", "PublishFailed", True)


def test_a_requeued_retry_the_relay_gave_up_on_runs(conn, db_url, sqs, stage, steps, make_handler):
    """`conveyor outbox --requeue` of a retry held in the outbox that SQS refused: the ledger row is reopened, so the
    job runs instead of being acknowledged as already failed."""
    from shared.outbox.dead import requeue_dead

    job_id = enqueue_step(conn, 25)
    publish(db_url, sqs, stage)
    conn.execute("UPDATE conveyor.runs SET status = 'pending', attempt = 1 WHERE id = %s", (job_id,))
    conn.execute(
        "INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, attempt) VALUES (gen_random_uuid(), %s, 'test.step', 'steps', %s, 2)",
        (job_id, json.dumps({"n": 25, "pad": "x" * 262_144})),
    )
    publish(db_url, sqs, stage)
    assert job(conn, job_id)["status"] == "failed"
    # The operator fixes the cause (here: the row's payload) and requeues it.
    conn.execute("UPDATE conveyor.outbox_dead SET payload = '{\"n\": 25}' WHERE job_id = %s", (job_id,))
    assert requeue_dead(conn) == 1
    assert job(conn, job_id)["status"] == "pending"
    publish(db_url, sqs, stage)
    runs = []
    # The first attempt's message (never consumed in this test) and the requeued retry's: only the retry runs.
    make_handler(lambda payload, ctx: runs.append(ctx.attempt))(receive(sqs, steps, 2), FakeLambdaContext())
    assert runs == [2]
    assert job(conn, job_id)["status"] == "succeeded"


def test_ctx_transaction_inside_a_transaction_the_job_opened_is_refused(conn, db_url, sqs, stage, steps, make_handler, ledger_table):
    """Nesting would commit the work with the job's own transaction but never mark the run: refused, so the job
    retries instead of silently losing effectively-once."""
    job_id = enqueue_step(conn, 26)
    publish(db_url, sqs, stage)

    def work(payload, ctx: JobContext):
        conn = ctx.connection()
        with conn.transaction():
            conn.execute("INSERT INTO public.effects VALUES (%s, 1)", (ctx.job_id,))
            with ctx.transaction():
                pass

    make_handler(work)(receive(sqs, steps, 1), FakeLambdaContext())
    row = job(conn, job_id)
    assert (row["status"], row["error_type"]) == ("retrying", "RuntimeError")
    assert "make ctx.transaction() the outermost transaction" in row["error"]
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone()[0] == 0


# -- failed attempts' history (conveyor.runs.attempts) ---------------------------------------------------------------


def attempts_history(conn, job_id) -> list[dict]:
    return conn.execute("SELECT coalesce(attempts, '[]') FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone()[0]


def test_each_failed_attempt_is_kept_with_its_error_and_a_success_adds_none(conn, db_url, sqs, stage, steps, make_handler):
    job_id = enqueue_step(conn, 20)
    publish(db_url, sqs, stage)

    def flaky(payload, ctx):
        if ctx.attempt <= 2:
            raise RuntimeError(f"attempt {ctx.attempt} broke")

    handler = make_handler(flaky)
    for _ in range(3):
        event = receive(sqs, steps, 1)
        handler(event, FakeLambdaContext())
        fast_forward(sqs, steps, event)
    assert job(conn, job_id)["status"] == "succeeded"
    history = attempts_history(conn, job_id)
    assert [(e["attempt"], e["outcome"], e["error_type"], e["error"]) for e in history] == [
        (1, "retrying", "RuntimeError", "attempt 1 broke"),
        (2, "retrying", "RuntimeError", "attempt 2 broke"),
    ]
    assert all(e["started_at"] <= e["finished_at"] for e in history)


def test_the_history_keeps_the_last_25_failed_attempts(conn):
    from shared.ledger import record

    job_id = insert_run(conn, "test.step", "running", run_token=uuid.uuid4())
    for attempt in range(1, 31):
        token = uuid.uuid4()
        conn.execute("UPDATE conveyor.runs SET status = 'running', attempt = %s, run_token = %s WHERE id = %s", (attempt, token, job_id))
        status = "dead" if attempt == 30 else "retrying"
        assert record.finish(conn, [record.Outcome(job_id, token, status, error_type="RuntimeError", error=f"no {attempt}")]) == 1
    history = attempts_history(conn, job_id)
    assert [e["attempt"] for e in history] == list(range(6, 31))
    assert (history[-1]["outcome"], history[-1]["error"]) == ("dead", "no 30")
