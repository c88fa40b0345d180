"""receipt.push: a sale and its receipt job commit together; the job posts the receipt once and keeps the first id."""

from decimal import Decimal

import psycopg
import pytest

from functions.receipt_push.handler import handler
from shared.demo.sales import record_sale
from shared.jobs import RECEIPT_PUSH
from shared.names import queue_resource_name
from shared.runtime import Outcome
from shared.testing import invoke


@pytest.fixture
def bound(bind_product):
    bind_product(handler)


@pytest.fixture
def store_id(conn):
    user = conn.execute("INSERT INTO demo.users (email, name) VALUES ('o@example.com', 'Owner') RETURNING id").fetchone()[0]
    return conn.execute("INSERT INTO demo.stores (name, owner_user_id) VALUES ('Books', %s) RETURNING id", (user,)).fetchone()[0]


@pytest.fixture
def receipts(fake_service):
    fake_service.use("receipts")
    return fake_service


def receipt_jobs(conn):
    return [row[0] for row in conn.execute("SELECT payload FROM conveyor.outbox WHERE job_name = 'receipt.push'")]


def sale(conn, sale_id):
    return conn.execute("SELECT receipt_id, receipt_sent_at FROM demo.sales WHERE id = %s", (sale_id,)).fetchone()


# -- the sale's transaction -----------------------------------------------------------------------------------------


def test_a_committed_sale_has_exactly_one_receipt_job(conn, store_id):
    with conn.transaction():
        sale_id = record_sale(conn, store_id, None, Decimal("11.50"), Decimal("1.05"))
    assert receipt_jobs(conn) == [{"sale_id": sale_id}]


def test_recording_the_same_sale_twice_in_one_transaction_enqueues_one_receipt_job(conn, store_id):
    # The application code calling record_sale can not insert the same sale twice, but the job's dedup key is the sale:
    # a second enqueue for it (here written directly, as a re-enqueue would) joins the pending job.
    from shared.outbox import enqueue

    with conn.transaction():
        sale_id = record_sale(conn, store_id, None, Decimal("11.50"), Decimal("1.05"))
        enqueue(conn, RECEIPT_PUSH, {"sale_id": sale_id}, dedup_key=f"receipt:{sale_id}")
    assert receipt_jobs(conn) == [{"sale_id": sale_id}]
    assert conn.execute("SELECT dedup_key FROM conveyor.outbox WHERE job_name = 'receipt.push'").fetchone()[0] == f"receipt:{sale_id}"


def test_a_rolled_back_sale_has_no_receipt_job(conn, store_id):
    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), conn.transaction():
        record_sale(conn, store_id, None, Decimal("11.50"), Decimal("1.05"))
        raise Abandoned
    assert conn.execute("SELECT count(*) FROM demo.sales").fetchone()[0] == 0
    assert receipt_jobs(conn) == []


def test_a_sale_that_fails_writes_no_job(conn):
    with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
        record_sale(conn, 999, None, Decimal("1.00"), Decimal("0.10"))  # no such store
    assert receipt_jobs(conn) == []


# -- the job --------------------------------------------------------------------------------------------------------


def test_posts_the_receipt_and_stores_its_id(bound, conn, store_id, receipts, stage):
    sale_id = record_sale(conn, store_id, None, Decimal("11.50"), Decimal("1.05"))
    receipts.reply(201, {"receipt_id": "R-1001"}, path="/receipts")

    result = invoke(handler, {"sale_id": sale_id}, job_id="0190b5a4-4a3c-7cc2-8c1e-2b5f0a6a9d01", stage=stage)

    assert result.succeeded
    [request] = receipts.requests
    assert (request.method, request.path) == ("POST", "/receipts")
    assert request.header("Idempotency-Key") == f"sale-{sale_id}"
    body = request.json
    assert (body["sale_id"], body["store_id"], body["total"], body["vat"]) == (sale_id, store_id, "11.50", "1.05")
    assert body["created_at"]
    receipt_id, sent_at = sale(conn, sale_id)
    assert receipt_id == "R-1001" and sent_at is not None


def test_running_twice_posts_at_most_once_more_and_keeps_the_first_id(bound, conn, store_id, receipts, stage):
    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    receipts.reply(201, {"receipt_id": "R-1"}, path="/receipts")
    receipts.reply(201, {"receipt_id": "R-2"}, path="/receipts")
    job_id = "0190b5a4-4a3c-7cc2-8c1e-2b5f0a6a9d02"

    assert invoke(handler, {"sale_id": sale_id}, job_id=job_id, stage=stage).succeeded
    stored = sale(conn, sale_id)
    # A second delivery of the same job is acknowledged without running (the ledger says it succeeded); another job
    # for the same sale sees the stored id and posts nothing.
    assert invoke(handler, {"sale_id": sale_id}, job_id=job_id, stage=stage).outcomes == [Outcome.NOT_RUN]
    assert invoke(handler, {"sale_id": sale_id}, stage=stage).succeeded

    assert len(receipts.requests) == 1
    assert sale(conn, sale_id) == stored


def test_a_post_repeated_after_a_failed_attempt_carries_the_same_idempotency_key(bound, conn, store_id, receipts, stage):
    # The first attempt posts and then fails before its transaction commits (the answer lacks the id); the retry
    # posts again with the same key, so the service can answer the receipt it already made.
    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    job_id = "0190b5a4-4a3c-7cc2-8c1e-2b5f0a6a9d03"
    receipts.reply(202, {"status": "accepted"}, path="/receipts")
    receipts.reply(200, {"receipt_id": "R-1"}, path="/receipts")

    assert invoke(handler, {"sale_id": sale_id}, job_id=job_id, stage=stage).outcomes == [Outcome.RETRYING]
    assert invoke(handler, {"sale_id": sale_id}, job_id=job_id, receive_count=2, stage=stage).succeeded

    assert [r.header("Idempotency-Key") for r in receipts.requests] == [f"sale-{sale_id}"] * 2
    assert sale(conn, sale_id)[0] == "R-1"


def test_two_jobs_for_one_sale_post_with_the_same_idempotency_key(bound, conn, store_id, receipts, stage):
    # Two jobs for one sale (a manual re-enqueue after a dead job, or two in flight) both post before either stores:
    # here the first's answer fails after the service made the receipt. The key is the sale's, not the job's, so the
    # service answers the second post with the receipt it already made instead of registering a second one.
    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    receipts.reply(503, "timed out after creating it", path="/receipts")
    receipts.reply(200, {"receipt_id": "R-1"}, path="/receipts")

    first = invoke(handler, {"sale_id": sale_id}, job_id="0190b5a4-4a3c-7cc2-8c1e-2b5f0a6a9d04", stage=stage)
    second = invoke(handler, {"sale_id": sale_id}, job_id="0190b5a4-4a3c-7cc2-8c1e-2b5f0a6a9d05", stage=stage)

    assert first.outcomes == [Outcome.RETRYING] and second.succeeded
    assert [r.header("Idempotency-Key") for r in receipts.requests] == [f"sale-{sale_id}"] * 2


def test_storing_a_receipt_id_never_replaces_one(bound, conn, store_id, receipts, stage):
    # What a run that posted while another stored an id meanwhile writes: nothing.
    from functions.receipt_push.handler import QUERIES

    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    receipts.reply(201, {"receipt_id": "R-1"}, path="/receipts")
    assert invoke(handler, {"sale_id": sale_id}, stage=stage).succeeded

    assert conn.execute(QUERIES["sale_receipt_store"], {"sale_id": sale_id, "receipt_id": "R-2"}).rowcount == 0
    assert sale(conn, sale_id)[0] == "R-1"


def test_a_server_error_is_retried(bound, conn, store_id, receipts, stage):
    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    receipts.reply(503, "maintenance", path="/receipts")

    result = invoke(handler, {"sale_id": sale_id}, stage=stage)

    assert result.outcomes == [Outcome.RETRYING]
    assert sale(conn, sale_id) == (None, None)


def test_a_rejected_receipt_goes_to_the_dlq_with_the_services_answer(bound, conn, store_id, receipts, stage):
    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    receipts.reply(400, {"error": "vat does not match total"}, path="/receipts")

    result = invoke(handler, {"sale_id": sale_id}, stage=stage)

    assert result.outcomes == [Outcome.DEAD]
    assert "vat does not match total" in result.reports[0].error
    assert sale(conn, sale_id) == (None, None)


def test_a_rate_limit_retries_after_what_the_service_asked(bound, conn, sqs, store_id, receipts, stage):
    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    receipts.reply(429, "slow down", headers={"Retry-After": "17"}, path="/receipts")
    # A message really received from the job's queue, so SQS can hide it for the delay asked.
    url = sqs.get_queue_url(QueueName=queue_resource_name(RECEIPT_PUSH.queue, stage=stage))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]

    result = invoke(handler, {"sale_id": sale_id}, stage=stage, receipt_handle=message["ReceiptHandle"])

    assert result.outcomes == [Outcome.RETRYING]
    assert result.reports[0].retry_in == 17


def test_an_answer_without_a_receipt_id_is_retried(bound, conn, store_id, receipts, stage):
    sale_id = record_sale(conn, store_id, None, Decimal("5.00"), Decimal("0.45"))
    receipts.reply(200, {"status": "ok"}, path="/receipts")

    result = invoke(handler, {"sale_id": sale_id}, stage=stage)

    assert result.outcomes == [Outcome.RETRYING]
    assert "without a receipt_id" in result.reports[0].error
    assert sale(conn, sale_id) == (None, None)


def test_an_unknown_sale_is_permanent(bound, receipts, stage):
    result = invoke(handler, {"sale_id": 424242}, stage=stage)

    assert result.outcomes == [Outcome.DEAD]
    assert "sale 424242 does not exist" in result.reports[0].error
    assert receipts.requests == []
