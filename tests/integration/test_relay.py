"""The relay against a real PostgreSQL and moto's SQS server."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from shared.database import connect
from shared.envelope import ATTR_ATTEMPT, ATTR_ENQUEUED_AT, ATTR_JOB_ID, ATTR_JOB_NAME
from shared.jobs import EMAIL_SEND
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.outbox import enqueue, enqueue_many
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
WELCOME = {"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}}


@pytest.fixture
def queues(sqs, stage):
    return ensure_queues(sqs, product, stage=stage)


def make_relay(db_url, sqs, stage, *, client=None, **options):
    """A relay on the test's database and stage; ``client`` stands in for the SQS client (fault injection)."""
    settings = Settings(stage=stage, database_url=db_url)
    return Relay(lambda: connect(settings), client or sqs, QueueDirectory(sqs, settings), **options)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def receive_all(sqs, url, expected=None, rounds=50):
    seen = []
    for _ in range(rounds):
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        if not batch:
            if expected is None or len(seen) >= expected:
                break
            continue
        seen.extend(batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return seen


def test_committed_job_is_published_with_its_envelope_and_moved_to_the_ledger(conn, db_url, sqs, stage, queues):
    with conn.transaction():
        job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    relay = make_relay(db_url, sqs, stage)
    try:
        stats = relay.drain(5)
    finally:
        relay.close()
    assert stats.published == 1
    messages = receive_all(sqs, queues["email-default"][0])
    bodies = {m["MessageAttributes"][ATTR_JOB_ID]["StringValue"]: m for m in messages}
    message = bodies[str(job_id)]
    assert json.loads(message["Body"])["to"] == "ada@example.com"
    attrs = message["MessageAttributes"]
    assert attrs[ATTR_JOB_NAME]["StringValue"] == "email.send"
    assert attrs[ATTR_ATTEMPT]["StringValue"] == "1"
    assert ATTR_ENQUEUED_AT in attrs
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0
    status, message_id = conn.execute("SELECT status, message_id FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone()
    assert status == "queued" and message_id == message["MessageId"]


def test_rolled_back_job_is_never_published(conn, db_url, sqs, stage, queues):
    with pytest.raises(ZeroDivisionError):
        with conn.transaction():
            enqueue(conn, EMAIL_SEND, WELCOME)
            1 / 0  # noqa: B018
    relay = make_relay(db_url, sqs, stage)
    try:
        assert relay.drain(2).published == 0
    finally:
        relay.close()
    assert receive_all(sqs, queues["email-default"][0]) == []


def test_delayed_job_is_not_published_before_its_time(conn, db_url, sqs, stage, queues):
    from datetime import timedelta

    job_id = enqueue(conn, EMAIL_SEND, WELCOME, delay=timedelta(hours=1))
    relay = make_relay(db_url, sqs, stage)
    try:
        assert relay.run_once().published == 0
        conn.execute("UPDATE conveyor.outbox SET run_at = now() - interval '1 second' WHERE id = %s", (job_id,))
        assert relay.run_once().published == 1
    finally:
        relay.close()


def test_two_relays_publish_each_job_exactly_once(conn, db_url, sqs, stage, queues):
    total = 300
    enqueue_many(conn, EMAIL_SEND, [{**WELCOME, "subject": f"#{i}"} for i in range(total)])
    relays = [make_relay(db_url, sqs, stage, batch_size=20) for _ in range(2)]
    results = {}
    barrier = threading.Barrier(2)

    def run(index):
        barrier.wait()
        results[index] = relays[index].drain(30)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for relay in relays:
        relay.close()
    assert results[0].published + results[1].published == total
    messages = receive_all(sqs, queues["email-default"][0], expected=total, rounds=200)
    ids = [m["MessageAttributes"][ATTR_JOB_ID]["StringValue"] for m in messages]
    assert len(ids) == total and len(set(ids)) == total
    assert conn.execute("SELECT count(*) FROM conveyor.runs").fetchone()[0] == total


CRASHING_RELAY = textwrap.dedent(
    """
    import os, signal, sys
    import boto3
    from shared.database import connect
    from shared.outbox.relay import Relay
    from shared.queues import QueueDirectory
    from shared.settings import Settings

    from datetime import timedelta

    class CrashAfterPublish(Relay):
        def _mark(self, token, published, *rest):
            print(len(published), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # dies holding published-but-unmarked rows

    settings = Settings(stage=sys.argv[2], database_url=sys.argv[1])
    sqs = boto3.client("sqs")
    CrashAfterPublish(
        lambda: connect(settings), sqs, QueueDirectory(sqs, settings),
        lease=timedelta(seconds=1), send_budget=timedelta(seconds=0.5),
    ).run_once()
    """
)


def test_relay_killed_between_publish_and_mark_loses_nothing(conn, db_url, sqs, stage, queues, aws_endpoint):
    ids = {str(i) for i in enqueue_many(conn, EMAIL_SEND, [WELCOME] * 5)}
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_RELAY, db_url, stage],
        cwd=ROOT, env={**os.environ, "AWS_ENDPOINT_URL": aws_endpoint}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "5"
    # The crash left every job pending, leased to the dead relay: nobody publishes them until the lease ends.
    assert conn.execute("SELECT count(*) FROM conveyor.outbox WHERE locked_until > now()").fetchone()[0] == 5
    relay = make_relay(db_url, sqs, stage)
    try:
        assert relay.run_once().published == 0
        wait_until(lambda: conn.execute("SELECT bool_and(locked_until <= now()) FROM conveyor.outbox").fetchone()[0])
        assert relay.drain(5).published == 5
    finally:
        relay.close()
    messages = receive_all(sqs, queues["email-default"][0], expected=10)
    seen = [m["MessageAttributes"][ATTR_JOB_ID]["StringValue"] for m in messages]
    assert set(seen) == ids  # nothing lost …
    assert len(seen) == 10  # … and each job duplicated once, which at-least-once delivery allows
    assert conn.execute("SELECT count(*) FROM conveyor.runs").fetchone()[0] == 5


def test_entries_sqs_refuses_stay_pending_with_the_error(conn, db_url, sqs, stage):
    # No queues exist for this stage: every publish fails, and every job must survive it.
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    relay = make_relay(db_url, sqs, stage)
    try:
        stats = relay.run_once()
    finally:
        relay.close()
    assert stats.published == 0 and stats.failed == 1
    attempts, error, delayed = conn.execute(
        "SELECT publish_attempts, last_error, next_attempt_at > now() FROM conveyor.outbox WHERE id = %s", (job_id,)
    ).fetchone()
    assert attempts == 1 and "does not exist" in error and delayed


class FlakyConnect:
    """connect() that refuses the next ``refusals`` calls, as a restarting database does."""

    def __init__(self, settings, refusals=0):
        self.settings, self.refusals = settings, refusals

    def __call__(self):
        if self.refusals:
            self.refusals -= 1
            raise psycopg.OperationalError("connection refused (simulated outage)")
        return connect(self.settings)


def test_relay_survives_a_database_outage(db_url, sqs, stage, queues, conn):
    """run() keeps going through connection errors; jobs enqueued meanwhile are published afterwards."""
    settings = Settings(stage=stage, database_url=db_url)
    relay = Relay(FlakyConnect(settings, refusals=2), sqs, QueueDirectory(sqs, settings))
    enqueue(conn, EMAIL_SEND, WELCOME)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_interval": 0.01})
    thread.start()
    try:
        for _ in range(100):
            if conn.execute("SELECT count(*) FROM conveyor.runs").fetchone()[0] == 1:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join()
        relay.close()
    assert conn.execute("SELECT count(*) FROM conveyor.runs").fetchone()[0] == 1


def test_large_messages_are_packed_into_batches_sqs_accepts(conn, db_url, sqs, stage, queues):
    """Ten 110 KB payloads: by count they are one batch of 1.1 MB, which SQS refuses every time. Packed by size,
    every one goes out."""
    big = {**WELCOME, "variables": {"blob": "x" * 110_000}}
    ids = enqueue_many(conn, EMAIL_SEND, [big] * 10)
    relay = make_relay(db_url, sqs, stage)
    try:
        stats = relay.drain(max_seconds=30)
    finally:
        relay.close()
    assert (stats.published, stats.failed) == (10, 0)
    published = {row[0] for row in conn.execute("SELECT id FROM conveyor.runs").fetchall()}
    assert published == set(ids)


def test_a_long_running_relay_survives_errors_outside_the_database(conn, db_url, sqs, stage, queues):
    calls = []

    def admit(queue):
        calls.append(queue)
        if len(calls) == 1:
            raise ConnectionError("moto went away for a moment")
        return True

    relay = make_relay(db_url, sqs, stage, admit=admit, known_queues=list(queues))
    stop = threading.Event()
    published = []
    thread = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_interval": 0.02, "on_cycle": published.append})
    thread.start()
    try:
        enqueue(conn, EMAIL_SEND, WELCOME)
        deadline = time.monotonic() + 10
        while not published and time.monotonic() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
        relay.close()
    assert sum(s.published for s in published) == 1


# -- no row locks over the network; leases; dead rows -------------------------------------------------------------


class InterceptedSQS:
    """A real boto3 SQS client (moto) with a hook that runs around SendMessageBatch: fault injection at the AWS
    boundary, the way a stalled network or a failover would strike, with our own code untouched."""

    def __init__(self, sqs, before=None, after=None, refuse=None):
        self._sqs, self.before, self.after, self.refuse = sqs, before, after, refuse
        self.sent = 0

    def __getattr__(self, name):
        return getattr(self._sqs, name)

    def send_message_batch(self, **kwargs):
        if self.before:
            self.before(kwargs)
        if self.refuse:
            refused = [e for e in kwargs["Entries"] if self.refuse(e)]
            kept = [e for e in kwargs["Entries"] if not self.refuse(e)]
            response = self._sqs.send_message_batch(QueueUrl=kwargs["QueueUrl"], Entries=kept) if kept else {}
            response.setdefault("Failed", []).extend(
                {"Id": e["Id"], "SenderFault": True, "Code": "InvalidMessageContents", "Message": "Invalid characters"}
                for e in refused
            )
            response.setdefault("Successful", [])
        else:
            response = self._sqs.send_message_batch(**kwargs)
        self.sent += len(response.get("Successful", []))
        if self.after:
            self.after(kwargs)
        return response


def test_no_transaction_or_row_lock_is_held_while_sqs_is_called(conn, db_url, sqs, stage, queues):
    ids = enqueue_many(conn, EMAIL_SEND, [WELCOME] * 3)
    seen = []

    def check(_kwargs):
        pid = relay._conn.info.backend_pid
        state = conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]
        with conn.transaction():  # another session can lock every claimed row at once: nobody holds them
            locked = conn.execute("SELECT id FROM conveyor.outbox FOR UPDATE NOWAIT").fetchall()
        seen.append((state, len(locked)))

    relay = make_relay(db_url, sqs, stage, client=InterceptedSQS(sqs, before=check))
    try:
        assert relay.run_once().published == 3
    finally:
        relay.close()
    assert seen == [("idle", 3)]
    assert {r[0] for r in conn.execute("SELECT id FROM conveyor.runs")} == set(ids)


def test_losing_the_connection_after_publishing_does_not_republish_every_cycle(conn, db_url, sqs, stage, queues):
    """The old design published inside the claim's transaction: when its commit failed, every later cycle sent
    the same rows again (3 jobs, 3 cycles: 9 messages, 0 in the ledger). Now the mark reconnects and lands."""
    enqueue_many(conn, EMAIL_SEND, [WELCOME] * 3)

    def kill_relay_connection(_kwargs):
        conn.execute("SELECT pg_terminate_backend(%s)", (relay._conn.info.backend_pid,))

    intercepted = InterceptedSQS(sqs, after=kill_relay_connection)
    relay = make_relay(db_url, sqs, stage, client=intercepted)
    try:
        for _ in range(3):
            relay.run_once()
    finally:
        relay.close()
    assert intercepted.sent == 3
    assert conn.execute("SELECT count(*) FROM conveyor.runs").fetchone()[0] == 3
    assert len(receive_all(sqs, queues["email-default"][0], expected=3)) == 3


def test_rows_of_a_relay_that_cannot_mark_come_back_once_its_lease_ends(conn, db_url, sqs, stage, queues):
    from datetime import timedelta

    ids = {str(i) for i in enqueue_many(conn, EMAIL_SEND, [WELCOME] * 2)}
    settings = Settings(stage=stage, database_url=db_url)
    outage = {"on": False}

    def connect_or_fail():
        if outage["on"]:
            raise psycopg.OperationalError("the database is gone (simulated)")
        return connect(settings)

    def go_down(_kwargs):
        outage["on"] = True
        conn.execute("SELECT pg_terminate_backend(%s)", (stuck._conn.info.backend_pid,))

    stuck = Relay(connect_or_fail, InterceptedSQS(sqs, after=go_down), QueueDirectory(sqs, settings),
                  lease=timedelta(seconds=1), send_budget=timedelta(seconds=0.5))  # fmt: skip
    with pytest.raises(psycopg.OperationalError):
        stuck.run_once()
    stuck.close()
    other = make_relay(db_url, sqs, stage)
    try:
        assert other.run_once().published == 0  # still leased to the stuck relay
        wait_until(lambda: conn.execute("SELECT bool_and(locked_until <= now()) FROM conveyor.outbox").fetchone()[0])
        assert other.run_once().published == 2
    finally:
        other.close()
    seen = [m["MessageAttributes"][ATTR_JOB_ID]["StringValue"] for m in receive_all(sqs, queues["email-default"][0], expected=4)]
    assert set(seen) == ids and len(seen) == 4  # each once more: a duplicate, never a loss


def test_a_cycle_that_starts_too_late_in_its_lease_releases_rows_unsent(conn, db_url, sqs, stage, queues):
    from datetime import timedelta

    enqueue(conn, EMAIL_SEND, WELCOME)
    # send_budget nearly equal to the lease: no time is left to send by the time the rows are claimed.
    relay = make_relay(db_url, sqs, stage, lease=timedelta(seconds=30), send_budget=timedelta(seconds=29.999))
    try:
        stats = relay.run_once()
    finally:
        relay.close()
    assert (stats.published, stats.failed) == (0, 0)
    attempts, token, locked = conn.execute("SELECT publish_attempts, claim_token, locked_until FROM conveyor.outbox").fetchone()
    assert (attempts, token, locked) == (0, None, None)


def test_the_lambda_relay_has_timeouts_shorter_than_its_lease():
    from shared.outbox.relay import SEND_BUDGET, relay_client_config

    config = relay_client_config()
    worst = config.retries["total_max_attempts"] * (config.connect_timeout + config.read_timeout)
    assert worst < SEND_BUDGET.total_seconds() < Relay.__init__.__kwdefaults__["lease"].total_seconds()


def test_drain_survives_the_database_dropping_mid_drain(conn, db_url, sqs, stage, queues):
    """drain() is what the Lambda runs: one dropped connection used to end the invocation with an error."""
    settings = Settings(stage=stage, database_url=db_url)
    flaky = FlakyConnect(settings)
    relay = Relay(flaky, sqs, QueueDirectory(sqs, settings))
    enqueue(conn, EMAIL_SEND, WELCOME)
    try:
        assert relay.drain(5).published == 1
        conn.execute("SELECT pg_terminate_backend(%s)", (relay._conn.info.backend_pid,))
        flaky.refusals = 2
        enqueue(conn, EMAIL_SEND, WELCOME)
        stats = relay.drain(10, stay=False)
    finally:
        relay.close()
    assert stats.published == 1 and stats.cycle_errors >= 1
    assert conn.execute("SELECT count(*) FROM conveyor.runs").fetchone()[0] == 2


def test_a_row_too_large_for_sqs_leaves_the_claim_path_with_its_reason(conn, db_url, sqs, stage, queues):
    """Only a hand-written INSERT can store it, but then it used to sit at the head of every claim forever."""
    conn.execute(
        "INSERT INTO conveyor.outbox (id, job_name, queue, payload) VALUES "
        "(gen_random_uuid(), 'email.send', 'email-default', json_build_object('x', repeat('y', 300000)))"
    )
    good = enqueue(conn, EMAIL_SEND, WELCOME)
    relay = make_relay(db_url, sqs, stage)
    try:
        stats = relay.run_once()
        assert relay.dead_count() == 1
    finally:
        relay.close()
    assert (stats.published, stats.failed, stats.dead) == (1, 1, 1)
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0
    attempts, error = conn.execute("SELECT publish_attempts, last_error FROM conveyor.outbox_dead").fetchone()
    assert attempts == 1 and error.startswith("MessageTooLong")
    assert conn.execute("SELECT id FROM conveyor.runs").fetchall() == [(good,)]


def test_rows_sqs_refuses_for_good_are_moved_out_and_the_rest_published(conn, db_url, sqs, stage, queues):
    bad = enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "refused"})
    good = enqueue(conn, EMAIL_SEND, WELCOME)
    intercepted = InterceptedSQS(sqs, refuse=lambda entry: "refused" in entry["MessageBody"])
    relay = make_relay(db_url, sqs, stage, client=intercepted)
    try:
        stats = relay.run_once()
    finally:
        relay.close()
    assert (stats.published, stats.dead) == (1, 1)
    assert conn.execute("SELECT id, last_error FROM conveyor.outbox_dead").fetchall() == [(bad, "InvalidMessageContents: Invalid characters")]
    assert conn.execute("SELECT id FROM conveyor.runs").fetchall() == [(good,)]


def test_a_queue_that_never_appears_gives_up_after_the_attempt_limit_and_can_be_requeued(conn, db_url, sqs, stage):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)  # no queues exist for this stage
    relay = make_relay(db_url, sqs, stage, max_publish_attempts=3)
    try:
        for attempt in (1, 2, 3):
            stats = relay.run_once()
            assert stats.failed == 1 and stats.dead == (1 if attempt == 3 else 0)
            conn.execute("UPDATE conveyor.outbox SET next_attempt_at = now()")  # skip the backoff wait
        assert relay.run_once().failed == 0  # out of the claim path
        attempts, error = conn.execute("SELECT publish_attempts, last_error FROM conveyor.outbox_dead WHERE id = %s", (job_id,)).fetchone()
        assert attempts == 3 and "does not exist" in error
        # Fixed (the stack is deployed): requeue and it goes out with a fresh attempt count.
        queues = ensure_queues(sqs, product, stage=stage)
        assert conn.execute("SELECT conveyor.requeue_dead_outbox(ARRAY[%s]::uuid[])", (job_id,)).fetchone()[0] == 1
        assert conn.execute("SELECT publish_attempts FROM conveyor.outbox WHERE id = %s", (job_id,)).fetchone()[0] == 0
        assert relay.run_once().published == 1
    finally:
        relay.close()
    assert conn.execute("SELECT count(*) FROM conveyor.outbox_dead").fetchone()[0] == 0
    [message] = receive_all(sqs, queues["email-default"][0], expected=1)
    assert message["MessageAttributes"][ATTR_JOB_ID]["StringValue"] == str(job_id)


def test_send_now_publishes_straight_to_the_routed_queue(sqs, stage, queues):
    from datetime import timedelta

    from shared.outbox import EnqueueError, InvalidPayload
    from shared.outbox.direct import send_now

    directory = QueueDirectory(sqs, Settings(stage=stage))
    job_id = send_now(EMAIL_SEND, {**WELCOME, "template": "password_reset"}, sqs=sqs, directory=directory)
    [message] = receive_all(sqs, queues["email-high"][0], expected=1)
    attrs = message["MessageAttributes"]
    assert attrs[ATTR_JOB_ID]["StringValue"] == str(job_id) and attrs[ATTR_JOB_NAME]["StringValue"] == "email.send"
    assert json.loads(message["Body"])["template"] == "password_reset"
    with pytest.raises(EnqueueError, match="0 to 15 minutes"):
        send_now(EMAIL_SEND, WELCOME, delay=timedelta(minutes=16), sqs=sqs, directory=directory)
    with pytest.raises(InvalidPayload, match="to:"):
        send_now(EMAIL_SEND, {**WELCOME, "to": "nobody"}, sqs=sqs, directory=directory)
    assert receive_all(sqs, queues["email-default"][0]) == []


def test_a_retry_waiting_in_the_outbox_is_published_as_the_same_job_at_its_next_attempt(conn, db_url, sqs, stage, queues):
    from datetime import UTC, datetime, timedelta

    from shared.outbox import enqueue_retry

    job_id = "0196f0c5-0000-7000-8000-000000000042"
    enqueued = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = json.dumps(WELCOME)
    enqueue_retry(conn, EMAIL_SEND, body, job_id=job_id, attempt=3, queue="email-default", delay=timedelta(0), enqueued_at=enqueued)
    relay = make_relay(db_url, sqs, stage)
    try:
        assert relay.run_once().published == 1
    finally:
        relay.close()
    [message] = receive_all(sqs, queues["email-default"][0], expected=1)
    attrs = message["MessageAttributes"]
    assert attrs[ATTR_JOB_ID]["StringValue"] == job_id
    assert attrs[ATTR_ATTEMPT]["StringValue"] == "3"
    assert attrs[ATTR_ENQUEUED_AT]["StringValue"] == enqueued.isoformat()
    assert message["Body"] == body


def test_a_retry_written_while_its_job_is_being_published_survives_the_mark(conn, db_url, sqs, stage, queues):
    """The handler can run a job, and park its next attempt in the outbox, before the relay that published it has
    marked it. Marking the published row must not take the parked retry with it: that lost the job."""
    from datetime import timedelta

    from shared.outbox import enqueue_retry

    job_id = enqueue(conn, EMAIL_SEND, WELCOME)

    def handler_runs_and_parks_a_retry(_kwargs):
        with psycopg.connect(db_url, autocommit=True) as other, other.transaction():
            enqueue_retry(other, EMAIL_SEND, json.dumps(WELCOME), job_id=str(job_id), attempt=2,
                          queue="email-default", delay=timedelta(hours=13))  # fmt: skip

    relay = make_relay(db_url, sqs, stage, client=InterceptedSQS(sqs, after=handler_runs_and_parks_a_retry))
    try:
        assert relay.run_once().published == 1
    finally:
        relay.close()
    assert conn.execute("SELECT job_id, attempt FROM conveyor.outbox").fetchall() == [(job_id, 2)]


def test_transport_errors_are_not_publish_attempts(conn, db_url, sqs, stage, queues):
    """An hour of SQS being unreachable (or throttling, or 5xx) must not move the whole outbox to outbox_dead: only
    refusals of the messages or of their queue count towards the attempt limit."""
    from botocore.exceptions import EndpointConnectionError

    job_id = enqueue(conn, EMAIL_SEND, WELCOME)

    def unreachable(_kwargs):
        raise EndpointConnectionError(endpoint_url="https://sqs.example")

    relay = make_relay(db_url, sqs, stage, client=InterceptedSQS(sqs, before=unreachable), max_publish_attempts=2)
    try:
        for _ in range(3):
            stats = relay.run_once()
            assert (stats.published, stats.failed, stats.dead, stats.unsent) == (0, 0, 0, 1)
        assert relay.drain(0.5).cycle_errors >= 1  # the loops back off as for any failed cycle
    finally:
        relay.close()
    assert conn.execute("SELECT id, publish_attempts, claim_token FROM conveyor.outbox").fetchall() == [(job_id, 0, None)]
    assert conn.execute("SELECT count(*) FROM conveyor.outbox_dead").fetchone()[0] == 0


def test_requeue_takes_one_dead_row_per_dedup_key(conn):
    for age in (3, 2, 1):
        conn.execute(
            "INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, dedup_key, publish_attempts, "
            "last_error, failed_at) VALUES (gen_random_uuid(), 'email.send', 'email-default', %s, now(), now(), 'store-sync:42', "
            "20, 'QueueDoesNotExist', now() - %s * interval '1 minute')",
            (json.dumps({**WELCOME, "subject": f"{age} min ago"}), age),
        )
    assert conn.execute("SELECT conveyor.requeue_dead_outbox()").fetchone()[0] == 1
    assert conn.execute("SELECT payload->>'subject' FROM conveyor.outbox").fetchall() == [("1 min ago",)]
    assert conn.execute("SELECT count(*) FROM conveyor.outbox_dead").fetchone()[0] == 2
    assert conn.execute("SELECT conveyor.requeue_dead_outbox()").fetchone()[0] == 0  # the key is pending now


def test_no_send_starts_after_the_drain_deadline(conn, db_url, sqs, stage, queues):
    """A cycle claimed at the very end of an invocation releases its rows rather than publishing past the
    function's budget (where Lambda would kill it mid-publish)."""
    enqueue(conn, EMAIL_SEND, WELCOME)
    relay = make_relay(db_url, sqs, stage)
    try:
        stats = relay.run_once(send_until=time.monotonic())
        assert (stats.published, stats.unsent) == (0, 1)
        assert conn.execute("SELECT claim_token FROM conveyor.outbox").fetchone()[0] is None
        assert relay.run_once().published == 1
    finally:
        relay.close()


def test_drain_goes_on_after_a_cycle_whose_lease_ran_short(conn, db_url, sqs, stage, queues):
    """A slow SQS (moto under load, a throttled account) can outlast a cycle's lease; the rows left unsent are more
    work, not a sign the outbox is empty, so drain() must not stop there."""
    from datetime import timedelta

    enqueue_many(conn, EMAIL_SEND, [WELCOME] * 30)
    slow = InterceptedSQS(sqs, before=lambda _kwargs: time.sleep(0.15))
    relay = make_relay(db_url, sqs, stage, client=slow, batch_size=40, publishers=1,
                       lease=timedelta(seconds=1.25), send_budget=timedelta(seconds=1))  # fmt: skip
    try:
        stats = relay.drain(30)
    finally:
        relay.close()
    assert stats.unsent > 0 and stats.published == 30


def test_a_drain_goes_on_after_a_claim_its_byte_budget_cut_short(conn, db_url, sqs, stage, queues):
    """Big payloads make claims of fewer rows than the batch size; the drain must not take that for "nothing more
    is due" and stop with jobs left behind."""
    big = {**WELCOME, "variables": {"name": "Ada", "essay": "x" * 60_000}}
    with conn.transaction():
        ids = enqueue_many(conn, EMAIL_SEND, [big] * 6)
    relay = make_relay(db_url, sqs, stage, max_claim_bytes=150_000, overlap=False)
    try:
        stats = relay.drain(30)
    finally:
        relay.close()
    assert stats.published == 6
    assert stats.cycles >= 3  # two rows a claim
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0
    assert len(receive_all(sqs, queues["email-default"][0], expected=6)) == 6
    assert len(ids) == 6


def test_a_claim_cut_short_by_bytes_of_non_ascii_payloads_counts_as_full(conn, db_url, sqs, stage, queues):
    """The claim's budget is in bytes; "é" is two of them. Counting characters instead took a cut claim for the last
    one and ended the drain with jobs due."""
    big = {**WELCOME, "variables": {"name": "Ada", "essay": "é" * 50_000}}
    with conn.transaction():
        enqueue_many(conn, EMAIL_SEND, [big] * 10)
    relay = make_relay(db_url, sqs, stage, max_claim_bytes=600_000, overlap=False)
    try:
        stats = relay.drain(30)
    finally:
        relay.close()
    assert stats.published == 10
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_a_relay_stats_total_keeps_only_the_latest_errors():
    """A resident relay adds every cycle to its totals; steady refusals must not grow them without end."""
    from shared.outbox.relay import RelayStats

    total = RelayStats()
    for n in range(1_000):
        total.add(RelayStats(failed=1, errors=[f"refused {n}"]))
    assert total.failed == 1_000
    assert len(total.errors) <= 100 and total.errors[-1] == "refused 999"


def test_a_batch_leased_ahead_is_given_back_when_a_callback_ends_the_loop(conn, db_url, sqs, stage, queues):
    with conn.transaction():
        enqueue_many(conn, EMAIL_SEND, [WELCOME] * 30)
    relay = make_relay(db_url, sqs, stage, batch_size=10)

    def fail(_stats):
        raise RuntimeError("the caller's callback broke")

    try:
        with pytest.raises(RuntimeError):
            relay.run(threading.Event(), on_cycle=fail)
        # The first batch was published; the one leased ahead during it is claimable again at once (before close).
        assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 20
        assert conn.execute("SELECT count(*) FROM conveyor.outbox WHERE claim_token IS NOT NULL").fetchone()[0] == 0
    finally:
        relay.close()
