"""The example jobs' handlers, run the way Lambda runs them, and the sample events in events/."""

import json
from pathlib import Path

import boto3
import pytest

from functions.email_send.handler import handler as email_handler
from functions.relay.handler import handler as relay_handler
from functions.reservations_cleanup.handler import handler as cleanup_handler
from shared.database import Database
from shared.envelope import Delivery
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.outbox import enqueue
from shared.queues import QueueDirectory
from shared.runtime import Outcome
from shared.settings import Settings
from shared.testing import invoke

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_every_sample_event_validates_against_its_jobs_model(path):
    event = json.loads(path.read_text())
    job_name = path.name.removesuffix(".json")
    if job_name == "relay":
        assert event["source"] == "aws.scheduler"
        return
    if job_name == "schedule":
        from functions.schedule.handler import parse_event

        job, fire_time = parse_event(event, product)
        assert job.schedule is not None and fire_time.tzinfo is not None
        return
    if job_name == "ops":
        # An HTTP API request as API Gateway's JWT authorizer passes it: the API reads a caller with jobs:read.
        from shared.operations.auth import caller_from_event
        from shared.operations.scopes import Scope

        caller = caller_from_event(event)
        assert event["version"] == "2.0" and caller is not None and caller.may(Scope.READ)
        return
    job = product[job_name]
    for record in event["Records"]:
        delivery = Delivery.from_record(record)
        assert delivery.job_name == job.name
        job.payload.model_validate_json(delivery.body)


def test_every_job_has_a_handler_and_a_sample_event():
    from shared.runtime.dispatch import load_handler

    for job in product:
        assert load_handler(job).job is job
        assert (EVENTS / f"{job.name}.json").exists()


@pytest.fixture
def bound(sqs, stage, db_url):
    ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    for handler in (email_handler, cleanup_handler):
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    yield
    database.close()


def test_email_send_sends_through_ses(bound, aws_endpoint, stage):
    ses = boto3.client("ses", endpoint_url=aws_endpoint)
    ses.verify_email_identity(EmailAddress="no-reply@conveyor.example")
    before = ses.get_send_quota()["SentLast24Hours"]
    result = invoke(email_handler, {"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}}, stage=stage)
    assert result.succeeded
    assert ses.get_send_quota()["SentLast24Hours"] == before + 1


def test_email_send_missing_template_variable_is_permanent(bound, stage):
    result = invoke(email_handler, {"to": "ada@example.com", "template": "receipt", "subject": "Receipt"}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "needs variables ['order_id', 'total']" in result.reports[0].error


def test_reservations_cleanup_cancels_stale_orders_and_releases_their_stock(bound, conn, stage):
    user = conn.execute("INSERT INTO demo.users (email, name) VALUES ('ada@example.com', 'Ada') RETURNING id").fetchone()[0]
    store = conn.execute("INSERT INTO demo.stores (name, owner_user_id) VALUES ('Corner', %s) RETURNING id", (user,)).fetchone()[0]
    conn.execute("INSERT INTO demo.inventory (store_id, sku, name, price, on_hand, reserved) VALUES (%s, 'tea', 'Tea', 5, 10, 3)", (store,))
    for age, quantity in (("1 hour", 2), ("1 minute", 1)):
        order = conn.execute(
            "INSERT INTO demo.orders (store_id, user_id, created_at) VALUES (%s, %s, now() - %s::interval) RETURNING id",
            (store, user, age),
        ).fetchone()[0]
        conn.execute("INSERT INTO demo.order_items (order_id, store_id, sku, quantity, price) VALUES (%s, %s, 'tea', %s, 5)", (order, store, quantity))
    result = invoke(cleanup_handler, {"older_than_minutes": 30}, stage=stage)
    assert result.succeeded
    assert conn.execute("SELECT status FROM demo.orders ORDER BY created_at").fetchall() == [("cancelled",), ("pending",)]
    assert conn.execute("SELECT reserved FROM demo.inventory").fetchone() == (1,)


def test_relay_function_drains_the_outbox(conn, db_url, sqs, stage, monkeypatch):
    ensure_queues(sqs, product, stage=stage)
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    monkeypatch.setattr("functions.relay.handler._relay", None)
    monkeypatch.setenv("CONVEYOR_RELAY_MODE", "on-demand")
    enqueue(conn, "email.send", {"to": "a@b.co", "template": "welcome", "subject": "Hi", "variables": {"name": "A"}})
    assert relay_handler(json.loads((EVENTS / "relay.json").read_text()), None)["published"] == 1
