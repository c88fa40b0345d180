"""Cancel (shared.ledger.cancel and conveyor.cancel_job) against a real PostgreSQL and moto's SQS."""

import json
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest

from shared.jobs import EMAIL_SEND
from shared.jobs import registry as product
from shared.ledger.cancel import CancelError, JobNotFoundError, cancel
from shared.local.aws import ensure_queues
from shared.outbox import QUERIES as OUTBOX_QUERIES
from shared.outbox import enqueue, enqueue_retry
from tests.integration.test_relay import InterceptedSQS, make_relay, receive_all

WELCOME = {"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}}


@pytest.fixture
def queues(sqs, stage):
    return ensure_queues(sqs, product, stage=stage)


def run_row(conn, job_id):
    row = conn.execute(
        "SELECT status, reason, finished_at IS NOT NULL, published_at IS NOT NULL FROM conveyor.runs WHERE id = %s",
        (job_id,),
    ).fetchone()
    return None if row is None else dict(zip(("status", "reason", "finished", "published"), row))


def outbox_ids(conn):
    return [r[0] for r in conn.execute("SELECT coalesce(job_id, id) FROM conveyor.outbox")]


def publish(db_url, sqs, stage, client=None):
    relay = make_relay(db_url, sqs, stage, client=client)
    try:
        return relay.drain(5)
    finally:
        relay.close()


def set_status(conn, job_id, status):
    conn.execute("UPDATE conveyor.runs SET status = %s WHERE id = %s", (status, job_id))


# -- before publish --------------------------------------------------------------------------------------------------


def test_a_pending_job_leaves_the_outbox_as_cancelled_and_is_never_published(conn, db_url, sqs, stage, queues):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)

    assert cancel(conn, job_id, reason="the customer closed the account") == "pending"

    assert outbox_ids(conn) == []
    assert run_row(conn, job_id) == {
        "status": "cancelled", "reason": "the customer closed the account", "finished": True, "published": False,
    }  # fmt: skip
    job_name, payload = conn.execute("SELECT job_name, payload::text FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone()
    assert (job_name, json.loads(payload)["to"]) == ("email.send", "ada@example.com")
    assert conn.execute("SELECT status FROM conveyor.jobs WHERE id = %s", (job_id,)).fetchone() == ("cancelled",)
    assert publish(db_url, sqs, stage).published == 0
    assert receive_all(sqs, queues["email-default"][0]) == []


def test_cancel_never_commits(conn):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    with pytest.raises(RuntimeError), conn.transaction():
        cancel(conn, job_id)
        raise RuntimeError("the caller's transaction rolls back")
    assert outbox_ids(conn) == [job_id]
    assert run_row(conn, job_id) is None


def test_sql_cancel_job_cancels_a_pending_job(conn):
    job_id = conn.execute("SELECT conveyor.add_job('email.send', %s::jsonb, queue => 'email-default')",
                          (json.dumps(WELCOME),)).fetchone()[0]  # fmt: skip
    assert conn.execute("SELECT conveyor.cancel_job(%s, 'duplicate order')", (job_id,)).fetchone() == ("pending",)
    assert outbox_ids(conn) == []
    assert run_row(conn, job_id)["status"] == "cancelled"


# -- after publish ---------------------------------------------------------------------------------------------------


def test_a_published_job_is_marked_cancelled(conn, db_url, sqs, stage, queues):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    assert publish(db_url, sqs, stage).published == 1
    assert run_row(conn, job_id)["status"] == "queued"

    assert cancel(conn, str(job_id)) == "queued"

    assert run_row(conn, job_id) == {"status": "cancelled", "reason": None, "finished": True, "published": True}


def test_sql_cancel_job_cancels_a_published_job(conn, db_url, sqs, stage, queues):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    publish(db_url, sqs, stage)
    assert conn.execute("SELECT conveyor.cancel_job(%s)", (job_id,)).fetchone() == ("queued",)
    assert run_row(conn, job_id)["status"] == "cancelled"


def test_a_retrying_job_loses_the_retry_waiting_in_the_outbox(conn, db_url, sqs, stage, queues):
    """A RetryAfter longer than SQS can hold parks the next attempt in the outbox under the job's id: cancel takes
    it out, or the relay would publish the job again."""
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    publish(db_url, sqs, stage)
    set_status(conn, job_id, "retrying")
    enqueue_retry(conn, EMAIL_SEND, json.dumps(WELCOME), job_id=str(job_id), attempt=2, queue="email-default",
                  delay=timedelta(hours=13))  # fmt: skip
    assert outbox_ids(conn) == [job_id]

    assert cancel(conn, job_id) == "retrying"

    assert outbox_ids(conn) == []
    assert run_row(conn, job_id)["status"] == "cancelled"


# -- too late, or no such job ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["running", "succeeded", "dead", "failed", "cancelled", "skipped"])
def test_a_started_or_finished_job_is_refused_naming_its_status(conn, db_url, sqs, stage, queues, status):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    publish(db_url, sqs, stage)
    set_status(conn, job_id, status)

    with conn.transaction():
        with pytest.raises(CancelError) as refused:
            cancel(conn, job_id)
        # Nothing written, and the caller's transaction is still usable.
        assert conn.execute("SELECT status FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone() == (status,)
    assert refused.value.status == status
    assert str(refused.value) == (
        f"job {job_id} is {status}; only pending, queued, retrying or waiting jobs can be cancelled"
    )
    assert isinstance(refused.value, ValueError)

    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as sql_refused:
        conn.execute("SELECT conveyor.cancel_job(%s)", (job_id,))
    assert sql_refused.value.diag.message_primary == (
        f"conveyor.cancel_job: job {job_id} is {status}; only pending, queued, retrying or waiting jobs can be cancelled"
    )
    assert run_row(conn, job_id)["status"] == status


def test_a_running_job_keeps_its_retry_row_when_cancel_is_refused(conn, db_url, sqs, stage, queues):
    """A handler parks its next attempt before it reports the run's outcome: while the ledger still says running,
    a refused cancel must not have deleted the parked attempt on its way."""
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    publish(db_url, sqs, stage)
    set_status(conn, job_id, "running")
    enqueue_retry(conn, EMAIL_SEND, json.dumps(WELCOME), job_id=str(job_id), attempt=2, queue="email-default",
                  delay=timedelta(hours=13))  # fmt: skip
    with pytest.raises(CancelError):
        cancel(conn, job_id)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT conveyor.cancel_job(%s)", (job_id,))
    assert outbox_ids(conn) == [job_id]


def test_a_job_the_relay_gave_up_publishing_is_refused_as_failed(conn):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    conn.execute(
        """WITH gone AS (DELETE FROM conveyor.outbox RETURNING *)
           INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts, last_error)
           SELECT id, job_name, queue, payload, run_at, created_at, 20, 'queue does not exist' FROM gone"""
    )
    with pytest.raises(CancelError) as refused:
        cancel(conn, job_id)
    assert refused.value.status == "failed"


def test_an_unknown_id_is_not_found(conn):
    missing = uuid.uuid4()
    with pytest.raises(JobNotFoundError, match=f"^no job has id {missing}$") as lost:
        cancel(conn, missing)
    assert lost.value.job_id == missing
    assert not isinstance(lost.value, CancelError)
    with pytest.raises(psycopg.errors.NoDataFound, match=f"conveyor.cancel_job: no job has id {missing}"):
        conn.execute("SELECT conveyor.cancel_job(%s)", (missing,))


def test_bad_arguments_are_one_line_errors(conn):
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    with pytest.raises(ValueError, match="^not a job id: 'order-42' \\(job ids are UUIDs\\)$"):
        cancel(conn, "order-42")
    with pytest.raises(ValueError, match="^reason must be at most 4000 characters, got 4001$"):
        cancel(conn, job_id, reason="x" * 4001)
    with pytest.raises(ValueError, match="^reason must be a string, got int$"):
        cancel(conn, job_id, reason=42)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="reason must be at most 4000 characters, got 4001"):
        conn.execute("SELECT conveyor.cancel_job(%s, %s)", (job_id, "x" * 4001))
    assert outbox_ids(conn) == [job_id]


# -- racing the relay ------------------------------------------------------------------------------------------------


def test_cancel_wins_over_a_relay_that_is_publishing_the_job(conn, db_url, sqs, stage, queues):
    """The relay has leased the row and is sending it when cancel commits. A lease is not a lock: cancel takes the
    row out; the relay's mark then finds nothing to move and the ledger keeps 'cancelled'. The message SQS got is
    acknowledged unrun by the handler runtime (it reads the ledger)."""
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    answers = []

    def cancel_while_sending(_kwargs):
        with psycopg.connect(db_url, autocommit=True) as other:
            answers.append(cancel(other, job_id, reason="changed my mind"))

    intercepted = InterceptedSQS(sqs, before=cancel_while_sending)
    publish(db_url, sqs, stage, client=intercepted)

    assert answers == ["pending"]
    assert intercepted.sent == 1
    assert outbox_ids(conn) == []
    assert run_row(conn, job_id) == {"status": "cancelled", "reason": "changed my mind", "finished": True, "published": False}


def test_cancel_waits_for_a_relay_marking_the_job_and_cancels_it_queued(conn, db_url):
    """The relay's mark (delete the outbox row, write the ledger row) is under way in an open transaction: cancel
    waits for it (same lock order, no deadlock) and then cancels the job the mark made 'queued'."""
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    answers = []
    with psycopg.connect(db_url) as relay_conn:
        relay_conn.execute(OUTBOX_QUERIES["outbox_mark_published"], {"ids": [job_id], "message_ids": ["m-1"]})

        def cancel_now():
            with psycopg.connect(db_url, autocommit=True) as other:
                answers.append(cancel(other, job_id))

        thread = threading.Thread(target=cancel_now)
        thread.start()
        time.sleep(0.5)
        assert answers == [] and thread.is_alive(), "cancel should wait for the relay's mark"
        relay_conn.commit()
        thread.join(10)
    assert answers == ["queued"]
    assert run_row(conn, job_id)["status"] == "cancelled"


def test_a_late_publish_of_a_cancelled_job_leaves_it_cancelled(conn, db_url, sqs, stage, queues):
    """The rule the relay's mark must keep: a row of a job that is already cancelled (a released flow parent or a
    parked retry that cancel skipped because the relay was marking it at that instant) is published late; the mark
    moves it but must not bring the job back to 'queued'."""
    job_id = enqueue(conn, EMAIL_SEND, WELCOME)
    publish(db_url, sqs, stage)
    cancel(conn, job_id, reason="stop")
    row_id = uuid.uuid4()
    conn.execute(
        """INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, attempt)
           VALUES (%s, %s, 'email.send', 'email-default', %s::json, 2)""",
        (row_id, job_id, json.dumps(WELCOME)),
    )
    conn.execute(OUTBOX_QUERIES["outbox_mark_published"], {"ids": [row_id], "message_ids": ["late"]})
    assert outbox_ids(conn) == []
    assert run_row(conn, job_id) == {"status": "cancelled", "reason": "stop", "finished": True, "published": True}
